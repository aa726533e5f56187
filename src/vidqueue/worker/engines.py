"""Which engine instance serves which model, built from the settings and the upstream credentials."""

from __future__ import annotations

from vidqueue.catalog import Catalog
from vidqueue.config import Credentials, Settings
from vidqueue.engines.base import AnyEngine
from vidqueue.engines.emulator import EmulatorEngine
from vidqueue.engines.gmi import MODELS as GMI_MODELS
from vidqueue.engines.gmi import GmiEngine
from vidqueue.engines.kling import MODEL_NAMES as KLING_MODELS
from vidqueue.engines.kling import KlingEngine
from vidqueue.errors import ConfigError


def build_engines(settings: Settings, catalog: Catalog, credentials: Credentials | None = None) -> dict[str, AnyEngine]:
    """One engine per configured engine kind, keyed by the model ids it serves."""
    creds = credentials or Credentials.from_env()
    by_kind: dict[str, set[str]] = {}
    for model_id in catalog.ids():
        by_kind.setdefault(settings.engine_for(model_id), set()).add(model_id)
    routes: dict[str, AnyEngine] = {}
    for kind, models in sorted(by_kind.items()):
        engine: AnyEngine
        if kind == "emulator":
            emu = settings.engines.emulator
            engine = EmulatorEngine(models, latency_s=emu.latency_s, failure_rate=emu.failure_rate)
        elif kind == "kling":
            _check_models(kind, models, set(KLING_MODELS))
            if not (creds.kling_access_key and creds.kling_secret_key):
                raise ConfigError(
                    f"Models {sorted(models)} are routed to the kling engine, but KLING_ACCESS_KEY and "
                    "KLING_SECRET_KEY are not both set in the environment."
                )
            engine = KlingEngine(
                models,
                settings.engines.kling,
                creds.kling_access_key,
                creds.kling_secret_key,
                allow_private_urls=settings.allow_private_urls,
            )
        elif kind == "gmi":
            _check_models(kind, models, GMI_MODELS)
            if not creds.gmi_api_key:
                raise ConfigError(
                    f"Models {sorted(models)} are routed to the gmi engine, but GMI_API_KEY is not set in the "
                    "environment."
                )
            engine = GmiEngine(
                models, settings.engines.gmi, creds.gmi_api_key, allow_private_urls=settings.allow_private_urls
            )
        else:
            raise ConfigError(
                f"Models {sorted(models)} are routed to the '{kind}' engine, which this version of vidqueue "
                "does not include yet; route them to 'emulator', 'kling' or 'gmi'."
            )
        for model_id in engine.models():
            routes[model_id] = engine
    return routes


def describe_routes(settings: Settings, catalog: Catalog) -> list[str]:
    """One line per model: the engine that serves it and, for an upstream, where and how many at once."""
    lines = []
    for model_id in catalog.ids():
        kind = settings.engine_for(model_id)
        line = f"{model_id} → {kind}"
        if kind in ("kling", "gmi"):
            upstream = settings.engines.kling if kind == "kling" else settings.engines.gmi
            line += f" ({upstream.base_url}, at most {upstream.concurrency} in flight)"
        lines.append(line)
    return lines


def _check_models(kind: str, models: set[str], served: set[str]) -> None:
    unknown = models - served
    if unknown:
        raise ConfigError(f"The {kind} engine cannot serve {sorted(unknown)}; it serves {sorted(served)}.")
