"""bench/gpu.py keeps working: its tiny mode runs the same harness on the CPU and writes the result file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_harness_runs_in_tiny_mode(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= {"gpu", "baseline_s", "vidqueue_s", "speedup", "settings"}
    assert result["baseline_s"] > 0 and result["vidqueue_s"] > 0
    assert abs(result["speedup"] - result["baseline_s"] / result["vidqueue_s"]) < 0.01
    assert result["settings"]["frames"] == 21 and result["settings"]["device"] == "cpu"
