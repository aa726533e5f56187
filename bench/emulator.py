"""CPU time of the emulator for one 5 s 720p text clip on one core, against the goal of 0.15 s (issue 20).

Run: ``python bench/emulator.py [--repeat N] [--baseline REF [--rounds R]]``. Prints JSON and writes it to
``bench/results/emulator.json``. Each clip (1280x720, 24 fps, 120 frames, a different prompt each time) is timed
with ``time.process_time`` in a process pinned to one core: the machine is shared, so CPU time is the measure and
wall time is reported for information. ``--baseline REF`` also measures the emulator of git revision REF
(exported with ``git archive``), in alternating rounds of fresh processes so that both see the same load.
``x264_floor_s`` is what x264 (``ultrafast``, one thread) spends on 120 blank 720p frames: the least any clip
encoded with x264 could cost, and why text clips are coded by the exact writer in ``media.h264`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vidqueue.engines.base import Job
from vidqueue.engines.emulator import EmulatorEngine

GOAL_S = 0.15
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "emulator.json"
PROMPT = "A corgi surfing a huge wave at sunset, cinematic lighting, slow motion, golden spray"


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


def clips(repeat: int) -> dict[str, Any]:
    """Time ``repeat`` clips after one warm-up, in this process: CPU and wall seconds of each, and the video."""
    engine = EmulatorEngine({"kling-v2-5-turbo"}, threads=1)
    engine.setup()
    cpus: list[float] = []
    walls: list[float] = []
    video: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-") as tmp:
        for i in range(repeat + 1):
            workdir = Path(tmp) / f"run-{i}"
            workdir.mkdir()
            # A different prompt each run, so nothing that depends on the prompt is cached between runs.
            payload = {"prompt": f"{PROMPT} #{i}", "duration": "5", "aspect_ratio": "16:9"}
            job = Job(request_id=f"bench-{i}", org_id="bench", model="kling-v2-5-turbo", payload=payload)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            media = engine.generate(job, BenchContext(workdir))
            wall, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
            if i == 0:
                continue  # warm-up: imports, font cache, first-touch of memory
            cpus.append(cpu_s)
            walls.append(wall)
            video = media.info.as_dict()
    return {"cpu_s": cpus, "wall_s": walls, "video": video}


def x264_floor(repeat: int = 3) -> float:
    """CPU seconds x264 (ultrafast, one thread) takes for 120 blank 1280x720 frames: the best of ``repeat``."""
    width, height, fps = 1280, 720, 24
    best = float("inf")
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-") as tmp:
        frame = av.VideoFrame.from_ndarray(np.full((height * 3 // 2, width), 128, np.uint8), format="yuv420p")
        for _ in range(repeat):
            cpu0 = time.process_time()
            with av.open(str(Path(tmp) / "blank.mp4"), "w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.codec_context.thread_count = 1
                stream.codec_context.time_base = Fraction(1, fps)
                for index in range(5 * fps):
                    frame.pts = index
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
            best = min(best, time.process_time() - cpu0)
    return best


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "max": round(max(values), 4),
    }


def against(ref: str, repeat: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """This tree's and ``ref``'s clips, timed in alternating fresh processes; the commit ``ref`` names."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    runs: dict[str, dict[str, Any]] = {"current": {"cpu_s": [], "wall_s": []}, "baseline": {"cpu_s": [], "wall_s": []}}
    with tempfile.TemporaryDirectory(prefix="vidqueue-bench-ref-") as tmp:
        archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        sources = {"current": str((ROOT / "src").resolve()), "baseline": str((Path(tmp) / "src").resolve())}
        for _ in range(rounds):
            for name, src in sources.items():
                env = {**os.environ, "PYTHONPATH": src}
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", "--repeat", str(repeat)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = json.loads(out)
                if not result["source"].startswith(src):
                    raise RuntimeError(f"the {name} run imported vidqueue from {result['source']}, not {src}")
                runs[name]["cpu_s"] += result["cpu_s"]
                runs[name]["wall_s"] += result["wall_s"]
                runs[name]["video"] = result["video"]
    return runs["current"], runs["baseline"], commit


def report(
    current: dict[str, Any], baseline: dict[str, Any] | None, ref: str | None, commit: str | None
) -> dict[str, Any]:
    """The JSON report."""
    median_cpu = statistics.median(current["cpu_s"])
    result: dict[str, Any] = {
        "benchmark": "emulator: render + encode one 5 s 720p text clip (1280x720, 24 fps, 120 frames) on one core",
        "clips": len(current["cpu_s"]),
        "cpu_s": summary(current["cpu_s"]),
        "wall_s": summary(current["wall_s"]),
        "goal_s": GOAL_S,
        "goal_met": median_cpu <= GOAL_S,
        "video": current["video"],
    }
    if baseline is not None:
        result["baseline"] = {
            "ref": ref,
            "commit": commit,
            "clips": len(baseline["cpu_s"]),
            "cpu_s": summary(baseline["cpu_s"]),
            "wall_s": summary(baseline["wall_s"]),
            "video": baseline["video"],
        }
        result["cpu_ratio"] = round(statistics.median(baseline["cpu_s"]) / median_cpu, 2)
    result["x264_floor_s"] = round(x264_floor(), 4)
    result["setup"] = {
        "pinned_cpu": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    result["measured_at"] = int(time.time())
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="timed clips after one warm-up, per round (default 5)")
    parser.add_argument("--baseline", metavar="REF", help="also measure git revision REF, in alternating processes")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each with --baseline (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be at least 1")
    pin_to_one_core()
    if args.worker:
        import vidqueue

        print(json.dumps({**clips(args.repeat), "source": str(Path(vidqueue.__file__).resolve().parent.parent)}))
        return 0
    if args.baseline:
        current, baseline, commit = against(args.baseline, args.repeat, args.rounds)
        result = report(current, baseline, args.baseline, commit)
    else:
        result = report(clips(args.repeat), None, None, None)
    text = json.dumps(result, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    print(text)
    return 0  # a report, not a gate: CI machines vary


if __name__ == "__main__":
    sys.exit(main())
