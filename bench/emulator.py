"""How long the emulator takes to render and encode a 5 s 720p clip on one core.

Run: ``python bench/emulator.py [--repeat N]``. Prints JSON and writes it to ``bench/results/emulator.json``.
The goal is at most 1.0 s (wall and CPU) per clip, pinned to one core with one x264 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vidqueue.engines.base import Job
from vidqueue.engines.emulator import EmulatorEngine

GOAL_S = 1.0
RESULTS = Path(__file__).resolve().parent / "results" / "emulator.json"


class BenchContext:
    """A JobContext that only keeps a folder; progress and cancel cost nothing."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def resume_state(self) -> dict[str, Any] | None:
        return None

    def progress(self, fraction: float) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def stage_done(self) -> None:
        pass


def pin_to_one_core() -> int | None:
    """Pin this process to its first allowed CPU; the CPU number, or None where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def run(repeat: int) -> dict[str, Any]:
    """Time ``repeat`` clips after one warm-up and summarise."""
    cpu = pin_to_one_core()
    engine = EmulatorEngine({"kling-v2-5-turbo"}, threads=1)
    engine.setup()
    payload = {
        "prompt": "A corgi surfing a huge wave at sunset, cinematic lighting, slow motion, golden spray",
        "duration": "5",
        "aspect_ratio": "16:9",
    }
    walls: list[float] = []
    cpus: list[float] = []
    info = None
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-") as tmp:
        for i in range(repeat + 1):
            workdir = Path(tmp) / f"run-{i}"
            workdir.mkdir()
            # A different prompt each run, so nothing can be cached between runs.
            job = Job(
                request_id=f"bench-{i}",
                org_id="bench",
                model="kling-v2-5-turbo",
                payload={**payload, "prompt": f"{payload['prompt']} #{i}"},
            )
            wall0, cpu0 = time.perf_counter(), time.process_time()
            media = engine.generate(job, BenchContext(workdir))
            wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
            if i == 0:
                continue  # warm-up: imports, font cache, first-touch of memory
            walls.append(wall)
            cpus.append(cpu_s)
            info = media.info
    assert info is not None
    median = statistics.median(walls)
    return {
        "benchmark": "emulator: render + encode a 5 s 720p clip (1280x720, 24 fps, 120 frames)",
        "repeat": repeat,
        "wall_s": {"min": round(min(walls), 4), "median": round(median, 4), "max": round(max(walls), 4)},
        "cpu_s": {"min": round(min(cpus), 4), "median": round(statistics.median(cpus), 4)},
        "goal_s": GOAL_S,
        "goal_met": median <= GOAL_S and statistics.median(cpus) <= GOAL_S,
        "video": info.as_dict(),
        "setup": {
            "pinned_cpu": cpu,
            "x264_threads": engine.threads,
            "x264_preset": engine.preset,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(),
        },
        "measured_at": int(time.time()),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run(args.repeat)
    text = json.dumps(result, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text)
    return 0  # a report, not a gate: CI machines vary


if __name__ == "__main__":
    sys.exit(main())
