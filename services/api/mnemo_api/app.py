"""The FastAPI application: a thin layer over PostgreSQL. No model, no torch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from mnemo_api import errors, metrics
from mnemo_api.middleware import ApiKeys, BodyLimit, CrossSiteGuard, HostGuard, RequestId
from mnemo_api.params import known_query
from mnemo_api.query_embedding import QueryEmbedder
from mnemo_api.routes import code, dlq, events, jobs, ops, search, ui
from mnemo_api.schemas import ERROR_RESPONSES
from mnemo_api.state import AppState, QueueStatsCache
from mnemo_core import __version__, service
from mnemo_core import logging as mlog
from mnemo_core.settings import Settings

log = mlog.get(__name__)

DESCRIPTION = """Memory and code intelligence for AI agents, built only on PostgreSQL.

Writes answer `202` with a job id: the work is queued on PGMQ and done by worker services.
Poll `GET /v1/jobs/{id}`. With API keys configured, send `X-API-Key`."""


async def migrate_when_ready(settings: Settings) -> None:
    """Wait for the database (with backoff, two minutes in all), then migrate."""
    await service.migrate_when_ready(
        settings.dsn(),
        embedding_dim=settings.embedding_dim,
        application_name="mnemo-api:migrate",
    )


def create_app(settings: Settings, *, run_migrations: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            await migrate_when_ready(settings)
        # The database can go away again between the migrations and the pool: wait again.
        pool = await service.open_pool(
            settings.dsn(),
            application_name="mnemo-api",
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            command_timeout_s=settings.db_command_timeout_s,
        )
        qe = QueryEmbedder(
            pool,
            settings.dsn(),
            timeout_s=settings.query_timeout_s,
            dead_after_s=settings.worker_dead_after_s,
            acquire_timeout_s=settings.db_acquire_timeout_s,
        )
        app.state.mnemo = st = AppState(settings, pool, qe, QueueStatsCache())
        ops_metrics.start(pool, st.queue_stats, app.state.db_outage)
        log.info("api_ready", model=settings.embedding_model, dim=settings.embedding_dim)
        try:
            yield
        finally:
            st.archive_thread.shutdown(wait=False, cancel_futures=True)
            await ops_metrics.stop()
            await qe.close()
            await pool.close()

    app = FastAPI(
        title="MnemoLite",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        # FastAPI's native OpenTelemetry is off: MnemoLite exports Prometheus metrics at
        # /metrics and JSON logs, and configures no OTel provider. Left on, every request
        # looks the global providers up again (environment reads, isinstance checks).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # A path with a slash too many (or too few) is a 404 that names the right one
        # (errors.no_route), not a 307 to it: the redirect had no body (curl printed
        # nothing), clients that do not follow it saw an empty answer, and those that do
        # sent the body and the key again, to a URL built from the Host header and the
        # scheme the API saw (http behind a proxy that ends TLS).
        redirect_slashes=False,
    )
    errors.install(app)
    ops_metrics = app.state.ops = metrics.Ops(settings)
    refuse_unknown = [Depends(known_query)]
    for router in (ops.router, events.router, jobs.router, search.router, code.router):
        app.include_router(router, dependencies=refuse_unknown)
    app.include_router(dlq.router, dependencies=refuse_unknown)
    for router in (metrics.router, ui.router):
        app.include_router(router)
    # First, so it is matched before FastAPI's own routes (see CreateEventFastPath).
    app.router.routes.insert(0, events.CreateEventFastPath(app.router))
    app.add_middleware(
        ApiKeys, keys=settings.api_key_list, protected=metrics.protected_paths(settings)
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        # Archive uploads (multipart only) are bigger than anything else; a JSON body on the
        # same route keeps the body limit.
        multipart={"/v1/code/index": max(settings.max_body_bytes, settings.max_archive_bytes)},
    )
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(HostGuard, names=settings.allowed_host_names)
    # Counts and times every answer, the 401s, 403s and 413s too.
    app.add_middleware(metrics.RequestMetrics, ops=ops_metrics)
    # Outermost: every answer carries its X-Request-ID, every log line of it request_id.
    app.add_middleware(RequestId)
    return app
