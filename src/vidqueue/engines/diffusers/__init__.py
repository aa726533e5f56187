"""The diffusers engine: open-weight video models (Wan, LTX-Video, HunyuanVideo) run on this machine's GPUs (or CPU).

Importing this package loads nothing heavy: torch and diffusers are imported by ``engine`` and ``pipelines``
only, so the server, SDK and CLI start without them. ``missing_packages`` says what an install lacks.
"""

from __future__ import annotations

import importlib.util

from vidqueue.engines.diffusers.options import Cache, LocalRun, Lora, check_weights

REQUIRED = ("torch", "diffusers", "transformers", "accelerate", "ftfy", "peft")

__all__ = ["REQUIRED", "Cache", "LocalRun", "Lora", "check_weights", "missing_packages"]


def missing_packages() -> list[str]:
    """The packages the engine needs that are not installed (``pip install '.[diffusers]'`` adds them)."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]
