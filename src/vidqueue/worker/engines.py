"""Which engine instance serves which model, built from the settings."""

from __future__ import annotations

from vidqueue.catalog import Catalog
from vidqueue.config import Settings
from vidqueue.engines.base import Engine
from vidqueue.engines.emulator import EmulatorEngine
from vidqueue.errors import ConfigError


def build_engines(settings: Settings, catalog: Catalog) -> dict[str, Engine]:
    """One engine per configured engine kind, keyed by the model ids it serves."""
    by_kind: dict[str, set[str]] = {}
    for model_id in catalog.ids():
        by_kind.setdefault(settings.engine_for(model_id), set()).add(model_id)
    routes: dict[str, Engine] = {}
    for kind, models in sorted(by_kind.items()):
        engine: Engine
        if kind == "emulator":
            emu = settings.engines.emulator
            engine = EmulatorEngine(models, latency_s=emu.latency_s, failure_rate=emu.failure_rate)
        else:
            raise ConfigError(
                f"Models {sorted(models)} are routed to the '{kind}' engine, which this version of vidqueue "
                "does not include yet; route them to 'emulator'."
            )
        for model_id in engine.models():
            routes[model_id] = engine
    return routes
