"""Property-based fuzzing of the real server from its own OpenAPI document (schemathesis).

Every operation in /openapi.json gets generated calls, valid and invalid by its schema, under a fixed seed and
a bounded number of cases, so a run is repeatable and quick. Whatever is sent, the server must never answer
5xx, and every answer must be one the document declares for that operation: its status code, its content type,
its headers and its body's schema. A failure here means the server (or its document) is wrong, not the test.

The cases are driven through schemathesis's strategies with Hypothesis directly, not its pytest plugin: the
plugin needs the schema at collection time (the server starts in a fixture), and its lazy ``from_fixture``
form does not run on pytest 9.2 (it writes ``Node._nodeid``, which pytest no longer has).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import Server, running_server

pytestmark = pytest.mark.slow

# Cases per operation and generation mode; derandomized (a fixed seed), so every run sends the same calls. Fifty:
# with the /v1 routes the operations doubled, and a hundred each took a minute of the suite on one worker.
MAX_EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Generated cases only: no replay database, no examples fetched from the document's references.
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without workers: fuzzed submits are queued and stay queued, nothing burns CPU on encoding."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with running_server(tmp, workers=0) as srv:
        yield srv


def test_every_answer_is_documented_and_none_is_a_server_error(fuzzed_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json", timeout=30)
    headers = {"Authorization": f"Bearer {fuzzed_server.key}"}
    sent: Counter[str] = Counter()
    failures: dict[str, str] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the document describes an operation schemathesis cannot read
            failures[str(result.err())] = "unreadable in the OpenAPI document"
            continue
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if any(True for _ in operation.iter_parameters()) or len(operation.body) > 0:
            modes.append(GenerationMode.NEGATIVE)  # an operation that takes nothing has nothing to get wrong
        for mode in modes:
            label = f"{operation.label} ({mode.value})"

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case[Any]) -> None:
                sent[label] += 1  # noqa: B023 (run at once, inside this iteration)
                case.call_and_validate(base_url=fuzzed_server.url, headers=headers, checks=CHECKS, timeout=30)

            try:
                call()
            except (Exception, FailureGroup) as exc:  # every operation is fuzzed; failures are reported together
                failures[label] = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    print(f"\nfuzzed {len(sent)} operation modes with {sum(sent.values())} calls in {elapsed:.1f} s")
    assert len(sent) >= 10, f"too few operations fuzzed: {sorted(sent)}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    # The server survived all of it.
    assert fuzzed_server.proc is not None and fuzzed_server.proc.poll() is None
