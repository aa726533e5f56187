"""The set of models a server offers, looked up by exact id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from vidqueue.catalog.families import BUILT_IN_MODELS
from vidqueue.catalog.models import ModelSpec
from vidqueue.catalog.seeds import SEED_MODELS
from vidqueue.errors import FieldError, NotFound

DEFAULT_MODELS: tuple[ModelSpec, ...] = (*SEED_MODELS, *BUILT_IN_MODELS)


class Catalog:
    """Models by id, in the order given."""

    def __init__(self, models: Iterable[ModelSpec] = DEFAULT_MODELS) -> None:
        self._models: dict[str, ModelSpec] = {}
        for model in models:
            if model.id in self._models:
                raise ValueError(f"model {model.id} is defined twice")
            self._models[model.id] = model

    def get(self, model_id: str) -> ModelSpec:
        """The model with exactly this id; raises NotFound naming the ids there are (its detail names ``model``)."""
        try:
            return self._models[model_id]
        except KeyError:
            pass
        rule = f"does not exist; available models: {', '.join(self._models) or 'none'}"
        # Ids are case-sensitive (as in the public docs), and a near miss in case is the usual mistake.
        near = [known for known in self._models if known.lower() == model_id.lower()]
        if near:
            rule += f" (model ids are case-sensitive; did you mean '{near[0]}'?)"
        raise NotFound(f"Model '{model_id}' {rule}", [FieldError("model", rule)])

    def ids(self) -> list[str]:
        """Every model id, in catalog order."""
        return list(self._models)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def __len__(self) -> int:
        return len(self._models)
