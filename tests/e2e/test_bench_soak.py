"""bench/soak.py keeps working: a short soak with worker kills loses nothing and answers no 5xx.

A smoke test of the harness on a short run; the recorded soak (minutes) is in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_bench


@pytest.mark.slow
def test_a_short_soak_with_worker_kills_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--duration", "8", "--rate", "2", "--kill-every", "3", "--workers", "2", "--settle-s", "90"]
    run = run_bench("soak.py", *args, out=out)
    report = json.loads(out.read_text())
    assert run.returncode == 0, (run.stderr[-3000:], report)
    assert report["submitted"] >= 10
    assert report["kills"] >= 1  # the kill schedule is seeded: the first comes after 1.2 s
    assert report["lost"] == 0 and report["server_errors_5xx"] == 0 and report["webhooks_missing"] == 0
    assert report["finished"] + report["failed"] + report["cancelled"] == report["submitted"]
    assert report["api_latency_ms"]["p99"] >= report["api_latency_ms"]["p50"] > 0


@pytest.mark.slow
def test_a_short_soak_with_storage_faults_generates_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = ["--duration", "10", "--rate", "2", "--kill-every", "0", "--workers", "2", "--settle-s", "90"]
    args += ["--storage-fault-every", "2", "--storage-fault-s", "3"]
    run = run_bench("soak.py", *args, out=out)
    report = json.loads(out.read_text())
    assert run.returncode == 0, (run.stderr[-3000:], report)
    assert report["storage_faults"] >= 1 and report["kills"] == 0
    assert report["lost"] == 0 and report["server_errors_5xx"] == 0 and report["double_generations"] == 0
    assert report["finished"] == report["submitted"] >= 15, report
