"""What an operator sees: Prometheus metrics at ``/metrics`` and the figures behind ``/ui``.

Database figures come from an :class:`OpsMonitor` that samples at most every few seconds:
``pgmq.metrics_all()`` counts rows, so it never runs per request or per scrape. Workers write
their counters into their ``workers`` row with each heartbeat, so one scrape of any API
instance sees the whole system, however many replicas run. Request counts and latency are
per API process, labelled by route template (``/v1/jobs/{job_id}``), never the raw path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mnemo_api.middleware import ASGIApp, Message, Receive, Scope, Send
from mnemo_api.state import QueueStatsCache
from mnemo_core import db, workers
from mnemo_core import logging as mlog
from mnemo_core.errors import DatabaseUnavailable
from mnemo_core.queries import Q
from mnemo_core.settings import Settings

log = mlog.get(__name__)

HISTORY_S = 15 * 60  # what the operator page charts
HISTORY_STEP_S = 3.0  # at most one history point per step (at most 300 points)
THROUGHPUT_WINDOW_S = 60.0
KNOWN_KINDS = ("embedder", "indexer")  # always reported, so "no live embedder" is a 0
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STALE_AFTER_S = 2.0  # a request older than this refreshes the figures (under a lock)


@dataclass
class Sample:
    t: float  # unix time
    queues: dict[str, dict[str, Any]]
    processed: dict[str, int]  # worker id -> processed so far


@dataclass
class Snapshot:
    at: float  # unix time
    queues: list[dict[str, Any]]
    jobs: list[tuple[str, str, int]]
    kinds: list[dict[str, Any]]
    workers: list[dict[str, Any]]


class OpsMonitor:
    """Samples queue, job and worker figures in the background (every ``sample_s``) and on
    demand when they are older than ``STALE_AFTER_S``; keeps 15 minutes of history."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queue_stats: QueueStatsCache,
        settings: Settings,
        outage: db.OutageLog | None = None,
    ):
        self.pool = pool
        self.queue_stats = queue_stats
        self.settings = settings
        # The requests' outage log: a sample that gets through ends it (a line, once).
        self.outage = outage or db.OutageLog()
        self.latest: Snapshot | None = None
        self.db_up = False
        self.history: deque[Sample] = deque(maxlen=int(HISTORY_S / HISTORY_STEP_S) + 10)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample_loop(), name="ops-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample_loop(self) -> None:
        while True:
            try:
                await self.current(max_age_s=self.settings.ops_sample_s / 2)
            except Exception as exc:  # keep sampling; requests still answer from the last one
                log.exception("ops_sampler_error", error=str(exc))
            await asyncio.sleep(self.settings.ops_sample_s)

    async def current(self, max_age_s: float = STALE_AFTER_S) -> Snapshot | None:
        """The latest figures, refreshed first if older than ``max_age_s``; None while the
        database has never answered."""
        if self._fresh(max_age_s):
            return self.latest
        async with self._lock:
            if not self._fresh(max_age_s):
                await self._refresh()
        return self.latest

    def _fresh(self, max_age_s: float) -> bool:
        return self.latest is not None and self.db_up and time.time() - self.latest.at < max_age_s

    async def _refresh(self) -> None:
        dead_after = self.settings.worker_dead_after_s
        try:
            queues = await self.queue_stats.get(self.pool, acquire_timeout_s=5)
            async with self.pool.acquire(timeout=5) as conn:
                jobs = [(r["kind"], r["status"], r["n"]) for r in await conn.fetch(Q["job_counts"])]
                kinds = [dict(r) for r in await workers.totals(conn, dead_after)]
                recent = await workers.list_recent(
                    conn, seen_within_s=3600, dead_after_s=dead_after
                )
        except (DatabaseUnavailable, asyncpg.PostgresError, *db.UNAVAILABLE_ERRORS) as exc:
            if self.db_up:
                log.warning("ops_sample_failed", error=str(exc))
            self.db_up = False
            return
        now = time.time()
        self.db_up = True
        self.outage.recovered()
        self.latest = Snapshot(now, queues, jobs, kinds, recent)
        if self.history and now - self.history[-1].t < HISTORY_STEP_S:
            return
        self.history.append(
            Sample(
                now,
                {q["queue"]: q for q in queues},
                {w["id"]: w["processed"] for w in recent},
            )
        )
        while self.history and self.history[0].t < now - HISTORY_S:
            self.history.popleft()

    # -- for the operator page -----------------------------------------------------------

    def history_json(self) -> dict[str, Any]:
        names = sorted({n for s in self.history for n in s.queues})
        fields = ("depth", "visible", "in_flight")
        return {
            "t": [round(s.t, 1) for s in self.history],
            "queues": {
                n: {
                    f: [s.queues[n][f] if n in s.queues else None for s in self.history]
                    for f in fields
                }
                for n in names
            },
        }

    def throughput(self, worker_id: str, processed: int, now: float) -> float | None:
        """Items per second over the last minute, from the sampled counters."""
        for s in self.history:
            if s.t >= now - THROUGHPUT_WINDOW_S and worker_id in s.processed:
                span = now - s.t
                return round((processed - s.processed[worker_id]) / span, 2) if span > 1 else None
        return None


# -- Prometheus --------------------------------------------------------------------------


def _histogram(
    name: str,
    doc: str,
    bounds: tuple[float, ...],
    kinds: list[dict[str, Any]],
    *keys: str,
) -> HistogramMetricFamily:
    """From the summed per-bucket counts of each kind; ``keys`` name the count, the sum and
    the bucket-counts columns."""
    count_key, sum_key, counts_key = keys
    fam = HistogramMetricFamily(name, doc, labels=["kind"])
    for k in kinds:
        counts = list(k[counts_key] or [])
        counts += [0] * (len(bounds) + 1 - len(counts))
        buckets, running = [], 0
        for bound, c in zip([*map(floatToGoString, bounds), "+Inf"], counts, strict=False):
            running += int(c)
            buckets.append((bound, float(running)))
        # The +Inf bucket is the count; keep it consistent even for rows older than the arrays.
        buckets[-1] = ("+Inf", float(max(running, int(k[count_key] or 0))))
        fam.add_metric([k["kind"]], buckets, sum_value=float(k[sum_key] or 0))
    return fam


class DbCollector(Collector):
    """Renders the monitor's latest snapshot; never touches the database itself."""

    def __init__(self) -> None:
        self.monitor: OpsMonitor | None = None

    def collect(self) -> Iterator[Metric]:
        m = self.monitor
        up = m is not None and m.db_up and m.latest is not None
        yield GaugeMetricFamily(
            "mnemo_database_up", "1 if the last sample of the database succeeded", value=int(up)
        )
        if not up:
            return
        assert m is not None and m.latest is not None
        snap = m.latest
        yield GaugeMetricFamily(
            "mnemo_ops_sample_age_seconds",
            "Age of the sampled database figures",
            value=max(0.0, time.time() - snap.at),
        )
        yield from _queue_metrics(snap.queues)
        jobs = GaugeMetricFamily("mnemo_jobs", "Jobs by kind and status", labels=["kind", "status"])
        for kind, status, n in snap.jobs:
            jobs.add_metric([kind, status], n)
        yield jobs
        yield from _worker_metrics(snap.kinds)


def _queue_metrics(queues: list[dict[str, Any]]) -> Iterator[Metric]:
    g = {
        "depth": ("mnemo_queue_depth", "Messages in the queue (visible + in flight)"),
        "visible": ("mnemo_queue_visible", "Messages ready to be read"),
        "in_flight": ("mnemo_queue_in_flight", "Messages read and not yet acknowledged"),
        "oldest_age_s": (
            "mnemo_queue_oldest_message_age_seconds",
            "Age of the oldest message (0 when empty)",
        ),
        "dead_letters": ("mnemo_queue_dead_letters", "Messages in the queue's dead-letter queue"),
    }
    fams = {k: GaugeMetricFamily(n, d, labels=["queue"]) for k, (n, d) in g.items()}
    sent = CounterMetricFamily(
        "mnemo_queue_messages_sent", "Messages ever sent to the queue", labels=["queue"]
    )
    completed = CounterMetricFamily(
        "mnemo_queue_messages_completed",
        "Messages that left the queue: acknowledged or dead-lettered (sent - depth)",
        labels=["queue"],
    )
    for q in queues:
        for key, fam in fams.items():
            if q.get(key) is not None or key == "oldest_age_s":
                fam.add_metric([q["queue"]], q.get(key) or 0)
        sent.add_metric([q["queue"]], q["total_messages"])
        completed.add_metric([q["queue"]], max(q["total_messages"] - q["depth"], 0))
    yield from fams.values()
    yield sent
    yield completed


def _worker_metrics(kinds: list[dict[str, Any]]) -> Iterator[Metric]:
    seen = {k["kind"] for k in kinds}
    live = GaugeMetricFamily(
        "mnemo_workers_live", "Workers with a fresh heartbeat", labels=["kind"]
    )
    for k in kinds:
        live.add_metric([k["kind"]], k["live"])
    for kind in KNOWN_KINDS:
        if kind not in seen:
            live.add_metric([kind], 0)
    yield live
    for key, name, doc in (
        ("processed", "mnemo_worker_items_processed", "Items processed, per worker kind"),
        ("failed", "mnemo_worker_items_failed", "Items that failed, per worker kind"),
        ("busy_seconds", "mnemo_worker_busy_seconds", "Seconds of model/parse work"),
    ):
        fam = CounterMetricFamily(name, doc, labels=["kind"])
        for k in kinds:
            fam.add_metric([k["kind"]], float(k[key] or 0))
        yield fam
    yield _histogram(
        "mnemo_worker_batch_size",
        "Items per batch a worker processed",
        workers.BATCH_BUCKETS,
        kinds,
        "batches",
        "batch_items",
        "batch_hist",
    )
    yield _histogram(
        "mnemo_worker_seconds_per_item",
        "Work seconds per item (embedder: model encode time per text)",
        workers.ITEM_SECONDS_BUCKETS,
        kinds,
        "batch_items",
        "busy_seconds",
        "item_seconds_hist",
    )


@dataclass
class Ops:
    """Per application: the metrics registry, the HTTP metrics and, once the lifespan has a
    pool, the monitor. Created by create_app; nothing here is process-wide."""

    settings: Settings
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    collector: DbCollector = field(default_factory=DbCollector)
    monitor: OpsMonitor | None = None

    def __post_init__(self) -> None:
        self.requests = Counter(
            "mnemo_http_requests",
            "API requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnemo_http_request_duration_seconds",
            "API request latency by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(self.collector)

    def start(
        self, pool: asyncpg.Pool, queue_stats: QueueStatsCache, outage: db.OutageLog | None = None
    ) -> OpsMonitor:
        self.monitor = OpsMonitor(pool, queue_stats, self.settings, outage)
        self.collector.monitor = self.monitor
        self.monitor.start()
        return self.monitor

    async def stop(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        self.collector.monitor = None


def protected_paths(settings: Settings) -> tuple[str, ...]:
    """What needs X-API-Key when keys are set: /v1, the operator page's data (the page shell
    at /ui carries none), and /metrics unless MNEMO_METRICS_PUBLIC."""
    return ("/v1", "/ui/", *(() if settings.metrics_public else ("/metrics",)))


def ops_of(request: Request) -> Ops:
    return request.app.state.ops


router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    ops = ops_of(request)
    if ops.monitor is not None:
        await ops.monitor.current()
    return Response(generate_latest(ops.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI middleware: count and time every request by its route template."""

    def __init__(self, app: ASGIApp, ops: Ops) -> None:
        self.app = app
        self.ops = ops

    @staticmethod
    def _template(scope: Scope) -> str:
        # FastAPI's routes leave themselves in the scope. Starlette's (/docs, /openapi.json)
        # leave only their endpoint: with no path parameters their path is their template.
        # A request refused before routing (401, 413) or matching nothing (404) gets a
        # fixed label: a raw path with parameters in it never is one.
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        if scope.get("endpoint") is not None and not scope.get("path_params"):
            return str(scope.get("path", "unrouted"))
        return "unrouted"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            route = self._template(scope)
            self.ops.requests.labels(method, route, str(status)).inc()
            self.ops.latency.labels(method, route).observe(time.perf_counter() - started)
