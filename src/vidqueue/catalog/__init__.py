"""Model definitions: parameters, defaults, limits, validation and schemas, all from one definition per model.

Param       one payload parameter (params.py)
ModelSpec   one model: its details and its tuple of Params (models.py)
SEED_MODELS the two models of the source documents (seeds.py)
BUILT_IN_MODELS the open-weight models the diffusers engine runs (families.py)
Catalog     the models a server offers, by exact id (registry.py)
"""

from vidqueue.catalog.families import BUILT_IN_MODELS, local_model, local_spec
from vidqueue.catalog.models import FAMILIES, LocalModel, ModelSpec
from vidqueue.catalog.params import Param
from vidqueue.catalog.registry import DEFAULT_MODELS, Catalog
from vidqueue.catalog.seeds import SEED_MODELS

__all__ = [
    "BUILT_IN_MODELS",
    "DEFAULT_MODELS",
    "FAMILIES",
    "SEED_MODELS",
    "Catalog",
    "LocalModel",
    "ModelSpec",
    "Param",
    "local_model",
    "local_spec",
]
