"""bench/gpu.py keeps working: its tiny mode runs the same harness on the CPU and writes the result file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUEUED = ("--requests", "3", "--compare-overlap", "2")


def run_tiny(script: str, out: Path, *args: str) -> dict[str, Any]:
    """Run a benchmark script in its tiny mode (on the CPU, hub offline) and read the result it wrote."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--tiny", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def test_the_gpu_benchmark_harness_runs_both_modes_in_tiny_mode(tmp_path: Path) -> None:
    result = run_tiny("gpu.py", tmp_path / "gpu.json", "--mode", "all", *QUEUED)
    assert result["settings"]["frames"] == 21 and result["settings"]["device"] == "cpu"
    assert result["matmul_tflops"] > 0 and set(result["modes"]) == {"fast", "lossless"}
    for mode, measured in result["modes"].items():
        assert measured["baseline_s"] > 0 and measured["vidqueue_s"] > 0
        # Rounded to milliseconds in the file: tiny runs last tens of them, so compare relatively.
        assert measured["speedup"] == pytest.approx(measured["baseline_s"] / measured["vidqueue_s"], rel=0.05)
        stages = measured["stages_s"]
        assert set(stages) == {"text_encode_s", "denoise_s", "decode_s", "encode_s"}
        assert all(v >= 0 for v in stages.values())
        # 4 steps in both tiny modes: one pass a step at guidance 1, two with CFG
        assert measured["transformer_passes"] == (4 if mode == "fast" else 8)
        assert measured["frames_vs_baseline"]["mean_abs_diff"] < 0.5  # the same video as plain diffusers
    # In "all", the fast mode alone runs the queued requests.
    assert "throughput" not in result["modes"]["lossless"]
    overlapped, serial = result["modes"]["fast"]["throughput"]
    assert overlapped["requests"] == 3 and overlapped["overlap"] is True and overlapped["videos_per_hour"] > 0
    assert overlapped["started_before_previous_finished"] == 2  # each next request began before the last ended
    assert serial["overlap"] is False and serial["started_before_previous_finished"] == 0


def test_the_hunyuan_attention_benchmark_runs_in_tiny_mode(tmp_path: Path) -> None:
    result = run_tiny("hunyuan_attention.py", tmp_path / "h.json")
    assert result["blocks_changed"] == 2 and result["valid_encoder_tokens"] == 7
    assert result["masked_s"] > 0 and result["unpadded_s"] > 0 and result["pass_tflop_unpadded"] > 0
    assert result["max_abs_diff"] < 1e-4  # float32 on the CPU: the same output without the mask
