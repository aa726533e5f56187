"""Speed settings applied once when a pipeline loads: LoRA fusing, scheduler, attention backend, cache, compile.

Each uses diffusers' own helper (``load_lora_weights``/``fuse_lora``, ``from_config``, ``set_attention_backend``,
``enable_cache``, ``compile_repeated_blocks``); this module only checks the names a config gives and applies them
in an order that works: adapters are fused into the weights before anything compiles them.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_dispatch import AttentionBackendName
from diffusers.models.attention_processor import Attention

from vidqueue.engines.diffusers.hunyuan import unpad_attention
from vidqueue.engines.diffusers.options import Cache, LocalRun, Lora
from vidqueue.errors import ConfigError

log = logging.getLogger("vidqueue.diffusers")

CACHE_CONFIGS: dict[str, type] = {
    "first_block": FirstBlockCacheConfig,
    "taylorseer": TaylorSeerCacheConfig,
    "mag": MagCacheConfig,
}
TAYLORSEER_ATTENTION = r"^[a-z_]*blocks\.\d+\.attn\d*$"
BACKENDS = tuple(sorted(b.value for b in AttentionBackendName))


def transformers_of(pipe: Any) -> list[Any]:
    """The pipeline's denoising transformers: one, or two for Wan 2.2 A14B's experts."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def check_speed(run: LocalRun) -> None:
    """Refuse, with a ConfigError naming the model and the key, a setting that names nothing diffusers has."""
    where = f'[models."{run.model_id}"]'
    if run.attention_backend and run.attention_backend not in BACKENDS:
        raise ConfigError(
            f"{where} attention_backend {run.attention_backend!r} is not one of diffusers' attention backends "
            f"({', '.join(BACKENDS)})."
        )
    if run.scheduler:
        cls = getattr(diffusers, run.scheduler, None)
        if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
            raise ConfigError(f"{where} scheduler {run.scheduler!r} is not a diffusers scheduler class.")
        check_scheduler_options(cls, run)
    if run.cache is not None:
        cache_config(run.cache, run)
    for lora in run.lora:
        path = Path(lora.path).expanduser()
        if lora.path.startswith((".", "/", "~")) and not path.exists():
            raise ConfigError(f"{where} lora path {lora.path} does not exist.")


def check_scheduler_options(cls: type, run: LocalRun) -> None:
    """Refuse scheduler_options the scheduler class does not take (diffusers would only log and ignore them)."""
    taken = set(inspect.signature(cls).parameters)
    unknown = sorted(set(run.scheduler_options) - taken)
    if unknown:
        raise ConfigError(
            f'[models."{run.model_id}"] scheduler_options {", ".join(unknown)}: not options of {cls.__name__} '
            f"(it takes: {', '.join(sorted(taken))})."
        )


def cache_config(cache: Cache, run: LocalRun) -> Any:
    """The diffusers config object of a cache setting; a ConfigError names an option its class does not take."""
    options = dict(cache.options)
    if cache.kind == "mag":
        options.setdefault("num_inference_steps", run.steps)  # MagCache's ratios are laid out over the steps
    if cache.kind == "taylorseer" and not options.get("use_lite_mode"):
        # diffusers' default patterns ("^blocks.*attn", full-matched) miss attention modules named attn1, attn2
        # (Wan, LTX-Video): name every attention module of the blocks instead.
        options.setdefault("cache_identifiers", [TAYLORSEER_ATTENTION])
    try:
        return CACHE_CONFIGS[cache.kind](**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f'[models."{run.model_id}"] cache {cache.kind}: {exc}') from exc


def apply_speed(pipe: Any, run: LocalRun, device: torch.device) -> None:
    """Fuse adapters, swap the scheduler, set the attention backend and cache, then compile (in that order)."""
    if run.lora:
        fuse_loras(pipe, run)
    if run.scheduler:
        cls = getattr(diffusers, run.scheduler)
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **run.scheduler_options)
    elif run.scheduler_options:
        check_scheduler_options(type(pipe.scheduler), run)
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **run.scheduler_options)
    for transformer in transformers_of(pipe):
        if run.family.startswith("hunyuanvideo-1.5"):
            unpad_attention(transformer)  # lossless: the same attention without the padding mask
        if run.attention_backend:
            transformer.set_attention_backend(run.attention_backend)
        if run.cache is not None:
            count_block_runs(transformer)  # under the cache hooks: counts only the passes that really ran
            transformer.enable_cache(cache_config(run.cache, run))
        if run.compiles_on(device.type):
            allow_static_graphs(len(set(run.sizes.values())) * 2 * 2)  # sizes x durations x text/image paths
            # One static graph per frame shape (all warmed up at load): the fastest kernels for each, where an
            # automatically dynamic graph would serve every shape after the second. Cache hooks branch on data,
            # which a full graph cannot hold.
            transformer.compile_repeated_blocks(fullgraph=run.cache is None, dynamic=False)


def count_block_runs(transformer: Any) -> None:
    """Count, in ``transformer._vidqueue_block_runs``, the passes in which the last block computed its attention.

    Installed before a cache hook wraps that block (first-block cache, MagCache) or its attention (TaylorSeer), the
    counter sits under the hook: a pass the cache skips or predicts does not reach it. The outcome records these.
    """
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    if not blocks:
        return
    last = blocks[-1]
    target: Any = next((m for m in last.modules() if isinstance(m, AttentionModuleMixin | Attention)), last)
    counter = [0]
    original = target.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    target.forward = counted
    transformer._vidqueue_block_runs = counter


def allow_static_graphs(shapes: int) -> None:
    """Let torch keep a compiled graph per shape (its default limit, 8, would fall back to eager past it)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), shapes + 8))


def fuse_loras(pipe: Any, run: LocalRun) -> None:
    """Load every adapter, weigh each by its scale, fuse them into the weights and drop the adapter layers."""
    if not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f'[models."{run.model_id}"] lora: the {run.family} pipeline does not take LoRA adapters.')
    names: list[str] = []
    scales: list[float] = []
    components: set[str] = set()
    for i, lora in enumerate(run.lora):
        for target in ("transformer", "transformer_2") if lora.target == "both" else (lora.target,):
            name = f"vidqueue_{i}_{target}"
            _load_lora(pipe, run, lora, name, target)
            names.append(name)
            scales.append(lora.scale)
            components.add(target)
    pipe.set_adapters(names, adapter_weights=scales)
    pipe.fuse_lora(components=sorted(components), lora_scale=1.0, adapter_names=names)
    pipe.unload_lora_weights()  # the fused weights stay; the adapter layers (and their per-call cost) go
    log.info("%s: fused %d LoRA adapter(s) at scales %s", run.model_id, len(run.lora), scales)


def _load_lora(pipe: Any, run: LocalRun, lora: Lora, name: str, target: str) -> None:
    path = Path(lora.path).expanduser()
    source, weight_name = str(path), lora.weight_name
    if path.is_file():
        source, weight_name = str(path.parent), path.name
    extra: dict[str, Any] = {}
    if target == "transformer_2":
        if getattr(pipe, "transformer_2", None) is None:
            raise ConfigError(f'[models."{run.model_id}"] lora target transformer_2: the model has one transformer.')
        extra["load_into_transformer_2"] = True
    try:
        pipe.load_lora_weights(source, weight_name=weight_name, adapter_name=name, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f'[models."{run.model_id}"] lora {lora.path} could not be loaded: {exc}') from exc
