"""Model definitions: parameters, defaults, limits, validation and schemas, all from one definition per model.

Param       one payload parameter (params.py)
ModelSpec   one model: its details and its tuple of Params (models.py)
SEED_MODELS the two models of the source documents (seeds.py)
Catalog     the models a server offers, by exact id (registry.py)
"""

from vidqueue.catalog.models import ModelSpec
from vidqueue.catalog.params import Param
from vidqueue.catalog.registry import Catalog
from vidqueue.catalog.seeds import SEED_MODELS

__all__ = ["SEED_MODELS", "Catalog", "ModelSpec", "Param"]
