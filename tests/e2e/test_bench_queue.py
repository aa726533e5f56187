"""bench/queue_bench.py keeps working: its quick mode runs every system on the real PostgreSQL and on SQLite.

A smoke test of the harness, not a timed test: the goals are reported, never asserted here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("vidqueue_pg", "pgqueuer", "pgqueuer_batch1", "vidqueue_sqlite")
LATENCY_SYSTEMS = ("vidqueue_pg", "pgqueuer", "vidqueue_sqlite")


@pytest.mark.slow
def test_the_queue_benchmark_harness_runs_in_quick_mode(tmp_path: Path) -> None:
    out = tmp_path / "queue.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "queue_bench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= {"machine", "settings", "throughput", "latency_ms", "goals"}
    assert result["machine"]["cpu_count"] >= 1 and result["machine"]["postgres"]

    tp = result["throughput"]
    for name in SYSTEMS:
        assert tp[name] > 0, name
    assert tp["ratio_vs_pgqueuer"] == pytest.approx(tp["vidqueue_pg"] / tp["pgqueuer"], abs=0.01)
    assert tp["ratio_vs_pgqueuer_batch1"] > 0
    assert len(tp["rounds"]) == result["settings"]["rounds"] == 1
    assert result["settings"]["jobs"] == 300

    samples = result["settings"]["latency_samples"]
    assert samples == 30
    for name in LATENCY_SYSTEMS:
        lat = result["latency_ms"][name]
        assert lat["samples"] == samples, name
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], name
        assert all(math.isfinite(lat[k]) for k in ("p50", "p90", "p99", "max")), name

    assert set(result["goals"]) >= {"throughput_ratio_ge_0_5", "p50_le_20ms"}
    assert all(isinstance(result["goals"][k], bool) for k in ("throughput_ratio_ge_0_5", "p50_le_20ms"))
    assert "vidqueue_pg / pgqueuer" in run.stdout  # the readable table
