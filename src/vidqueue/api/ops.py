"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidqueue.api.schemas import ErrorOut
from vidqueue.api.state import AppState, get_state
from vidqueue.errors import StorageUnavailable, StoreUnavailable
from vidqueue.store import Status, Store

router = APIRouter(tags=["operations"])
State = Annotated[AppState, Depends(get_state)]


# What workers publish about themselves (Store.worker_seen's facts), each shown as a gauge vidqueue_worker_<name>
# by worker and model. A name not listed here is shown too (with a plain help text) if it is [a-z_]+.
WORKER_FACTS = {
    "compile_seconds": "Seconds the worker spent compiling the model's pipeline (torch.compile warm-up at load).",
    "load_seconds": "Seconds the worker spent loading the model's pipeline.",
}
_FACT_NAME = re.compile(r"[a-z_]+")


def worker_fact_metrics(facts: dict[str, dict[str, dict[str, float]]]) -> list[GaugeMetricFamily]:
    """One gauge per fact name (the known ones always), labelled by worker and model, from worker_facts()."""
    names = set(WORKER_FACTS) | {n for per in facts.values() for n in per if _FACT_NAME.fullmatch(n)}
    gauges = {
        n: GaugeMetricFamily(
            f"vidqueue_worker_{n}",
            WORKER_FACTS.get(n, f"Worker fact {n}, by worker and model."),
            labels=["worker", "model"],
        )
        for n in sorted(names)
    }
    for worker, per in sorted(facts.items()):
        for name, by_model in sorted(per.items()):
            if name in gauges:
                for model, value in sorted(by_model.items()):
                    gauges[name].add_metric([worker, model], value)
    return list(gauges.values())


class QueueCollector(Collector):
    """Queue metrics read from the store at scrape time, so they cover every worker process and machine."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        """Yield the queue's metrics."""
        stats = self._store.stats()
        requests = GaugeMetricFamily("vidqueue_requests", "Requests by model and status.", labels=["model", "status"])
        depth = GaugeMetricFamily("vidqueue_queue_depth", "Queued requests by model.", labels=["model"])
        queued: dict[str, int] = {}
        for (model, status), n in sorted(stats.by_model_status.items()):
            requests.add_metric([model, status], n)
            if status == Status.QUEUED.value:
                queued[model] = n
        for model, n in sorted(queued.items()):
            depth.add_metric([model], n)
        failures = CounterMetricFamily(
            "vidqueue_request_failures", "Failed requests by model and error code.", labels=["model", "code"]
        )
        for (model, code), n in sorted(stats.failures_by_code.items()):
            failures.add_metric([model, code], n)
        durations = SummaryMetricFamily(
            "vidqueue_processing_seconds", "Processing time of successful requests.", labels=["model"]
        )
        for model, total in sorted(stats.duration_sum.items()):
            durations.add_metric([model], count_value=stats.duration_count[model], sum_value=total)
        facts = self._store.worker_facts(30.0)  # every live worker, so it counts them too: one read
        workers = GaugeMetricFamily("vidqueue_workers", "Workers seen in the last 30 s.")
        workers.add_metric([], len(facts))
        yield from (requests, depth, failures, durations, workers)
        yield from worker_fact_metrics(facts)


class HttpMetrics:
    """ASGI middleware timing every HTTP request by method, route and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram
        # labels() validates and locks on every call; the set of (method, route, status) is small, so keep them.
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            key = (scope["method"], getattr(route, "path", "unmatched"), status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.histogram.labels(key[0], key[1], str(status))
            child.observe(time.perf_counter() - start)


class WebhookMetrics:
    """Webhook delivery attempts of this process's dispatcher, by how they went."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._attempts = Counter(
            "vidqueue_webhook_attempts",
            "Webhook delivery attempts: delivered (a 2xx), retrying (to be tried again), failed (given up).",
            ["result"],
            registry=registry,
        )
        for result in ("delivered", "retrying", "failed"):
            self._attempts.labels(result)  # shown at 0 from the start, so rates work before the first failure

    def attempted(self, result: str) -> None:
        """Count one attempt."""
        self._attempts.labels(result).inc()


class RetentionMetrics:
    """What the retention job of this process deleted (it runs in `vidqueue serve`, beside this registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "vidqueue_retention_pruned_requests", "Finished requests deleted by retention.", registry=registry
        )
        self._media = Counter(
            "vidqueue_retention_pruned_media", "Media objects deleted by retention.", registry=registry
        )
        self._errors = Counter(
            "vidqueue_retention_media_errors",
            "Pruned requests whose media could not be deleted (left in storage).",
            registry=registry,
        )
        self._last = Gauge(
            "vidqueue_retention_last_run_timestamp_seconds",
            "When the last whole retention pass ended.",
            registry=registry,
        )

    def pruned(self, requests: int, media: int, media_errors: int) -> None:
        """Count one batch."""
        self._requests.inc(requests)
        self._media.inc(media)
        self._errors.inc(media_errors)

    def pass_done(self, at: float) -> None:
        """Note that a whole pass ended at ``at``."""
        self._last.set(at)


def new_registry(store: Store) -> tuple[CollectorRegistry, Histogram]:
    """A registry per app (no global state) with the queue collector and the HTTP histogram."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(store))
    histogram = Histogram(
        "vidqueue_http_request_duration_seconds",
        "HTTP request duration.",
        ["method", "route", "status"],
        registry=registry,
    )
    return registry, histogram


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    """Always ok while the process serves."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The store is reachable and migrated, and media storage can be written",
    response_model=None,
    responses={
        503: {
            "model": ErrorOut,
            "description": "Not ready (store unreachable, media storage unwritable, or draining); see Retry-After",
        }
    },
)
def readyz(state: State) -> Any:
    """200 when the store answers with the current schema and media storage takes a write, else 503 (also while
    draining before a stop)."""
    if state.draining:
        # A load balancer stops sending new work here while in-flight calls and status reads still succeed.
        return JSONResponse(
            {"status": "draining", "error": "The server is shutting down.", "code": "shutting_down", "details": []},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    try:
        state.store.ping()
        # A server that cannot store an input image or a finished video is not ready either: a full disk, a
        # read-only media folder, S3 down. The probe writes one small file (or object) and removes it.
        state.storage.probe()
    except (StoreUnavailable, StorageUnavailable) as exc:
        return JSONResponse(
            {"status": "unavailable", "error": exc.message, "code": exc.code, "details": []},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return {"status": "ready"}


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def metrics(state: State) -> Response:
    """Queue depth by model and status, durations, failures, workers and their load/compile seconds, HTTP timings."""
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)
