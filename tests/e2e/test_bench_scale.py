"""bench/scale.py keeps working: a short run on both stores reports every call at every size.

The recorded run (1k, 100k and 1M rows) is in docs/benchmarks.md; this is a smoke test of the harness.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import pg
from tests.support import run_bench

CALLS = {"post", "get", "list_first", "list_deep", "claim_finish"}


@pytest.mark.slow
def test_a_short_scale_run_measures_every_call_on_both_stores(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    args = ["--sizes", "200,2000", "--samples", "10", "--stores", "sqlite,postgresql", "--pg-admin-url", pg.ADMIN_URL]
    run = run_bench("scale.py", *args, out=out)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"sqlite", "postgresql"}
    for per_size in report["results"].values():
        assert set(per_size) == {"200", "2000"}
        for measured in per_size.values():
            assert set(measured) >= CALLS
            for call in CALLS:
                timing = measured[call]
                assert 0 < timing["p50"] <= timing["p99"] <= timing["max"], (call, timing)
