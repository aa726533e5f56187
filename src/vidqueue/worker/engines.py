"""Which engine instance serves which model, built from the settings and the upstream credentials."""

from __future__ import annotations

from vidqueue.catalog import Catalog, ModelSpec
from vidqueue.catalog.families import FRAME_STEP, GUIDANCE_2_SHARE, GUIDANCE_PER_CFG, IMAGE_USE
from vidqueue.config import Credentials, ModelRoute, Settings
from vidqueue.engines.base import AnyEngine
from vidqueue.engines.diffusers import Cache, LocalRun, Lora, check_weights, missing_packages
from vidqueue.engines.emulator import EmulatorEngine
from vidqueue.engines.gmi import GmiEngine
from vidqueue.engines.kling import KlingEngine
from vidqueue.errors import ConfigError


def build_engines(
    settings: Settings, catalog: Catalog, credentials: Credentials | None = None, *, check_only: bool = False
) -> dict[str, AnyEngine]:
    """One engine per configured engine kind, keyed by the model ids it serves.

    ``check_only`` checks every route (keys, packages, weight folders) without loading torch: what `serve` does
    before starting workers, so a routing they could not serve stops it with a clear message.
    """
    creds = credentials or Credentials.from_env()
    by_kind: dict[str, set[str]] = {}
    only = settings.worker.engines
    for spec in catalog:
        routed = settings.engine_for(spec.id, spec.engines)
        if routed not in spec.engines:
            raise ConfigError(
                f"Model {spec.id} is routed to the {routed} engine, which cannot serve it "
                f"(it can use: {', '.join(spec.engines)})."
            )
        if only is None or routed in only:
            by_kind.setdefault(routed, set()).add(spec.id)
    routes: dict[str, AnyEngine] = {}
    for kind, models in sorted(by_kind.items()):
        engine: AnyEngine
        if kind == "emulator":
            emu = settings.engines.emulator
            engine = EmulatorEngine(models, latency_s=emu.latency_s, failure_rate=emu.failure_rate, journal=emu.journal)
        elif kind == "kling":
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
            if not creds.gmi_api_key:
                raise ConfigError(
                    f"Models {sorted(models)} are routed to the gmi engine, but GMI_API_KEY is not set in the "
                    "environment."
                )
            engine = GmiEngine(
                models, settings.engines.gmi, creds.gmi_api_key, allow_private_urls=settings.allow_private_urls
            )
        elif kind == "diffusers":
            runs = _local_runs(settings, [catalog.get(m) for m in sorted(models)])
            if check_only:
                continue
            from vidqueue.engines.diffusers.engine import DiffusersEngine

            defaults = settings.engines.diffusers
            engine = DiffusersEngine(
                runs, device=defaults.device, max_resident=defaults.max_resident, overlap=defaults.overlap
            )
        else:
            raise ConfigError(f"Models {sorted(models)} are routed to an unknown engine '{kind}'.")
        for model_id in engine.models():
            routes[model_id] = engine
    return routes


def describe_routes(settings: Settings, catalog: Catalog) -> list[str]:
    """One line per model: the engine that serves it and, for an upstream, where and how many at once."""
    lines = []
    for spec in catalog:
        kind = settings.engine_for(spec.id, spec.engines)
        line = f"{spec.id} → {kind}"
        if kind in ("kling", "gmi"):
            upstream = settings.engines.kling if kind == "kling" else settings.engines.gmi
            line += f" ({upstream.base_url}, at most {upstream.concurrency} in flight)"
        elif kind == "diffusers" and spec.local is not None:
            line += f" ({spec.local.family}, weights {spec.local.weights})"
        lines.append(line)
    return lines


def _local_runs(settings: Settings, specs: list[ModelSpec]) -> dict[str, LocalRun]:
    """What the diffusers engine needs per model; a clear error when its packages or weights are missing."""
    missing = missing_packages()
    if missing:
        raise ConfigError(
            f"Models {[s.id for s in specs]} are routed to the diffusers engine, but {', '.join(missing)} "
            "is not installed: run `pip install '.[diffusers]'` (install torch for your platform first)."
        )
    defaults = settings.engines.diffusers
    runs: dict[str, LocalRun] = {}
    for spec in specs:
        local = spec.local
        assert local is not None  # build_engines routes only local models to diffusers
        route = settings.models.get(spec.id) or ModelRoute()
        runs[spec.id] = LocalRun(
            model_id=spec.id,
            family=local.family,
            weights=local.weights,
            steps=local.steps,
            fps=local.fps,
            sizes=dict(local.sizes),
            frame_step=FRAME_STEP[local.family],
            guidance_per_cfg=GUIDANCE_PER_CFG[local.family],
            image_use=IMAGE_USE[local.family],
            device=route.device or defaults.device,
            dtype=route.dtype or defaults.dtype,
            cpu_offload=defaults.cpu_offload if route.cpu_offload is None else route.cpu_offload,
            vae_tiling=defaults.vae_tiling if route.vae_tiling is None else route.vae_tiling,
            compile=defaults.compile if route.compile is None else route.compile,
            attention_backend=route.attention_backend or defaults.attention_backend,
            lora=tuple(Lora(x.path, x.scale, x.weight_name, x.target) for x in route.lora),
            scheduler=route.scheduler,
            scheduler_options=dict(route.scheduler_options),
            guidance=local.guidance,
            guidance_2_share=GUIDANCE_2_SHARE.get(local.family),
            max_steps=local.max_steps,
            cache=Cache(route.cache.kind, route.cache.options()) if route.cache is not None else None,
        )
        try:
            check_weights(runs[spec.id])
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    return runs
