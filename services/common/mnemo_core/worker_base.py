"""What every queue worker shares: a visible lifecycle (``run`` / ``stop`` / ``_shutdown``),
registration and a supervised heartbeat, and a batch loop that backs off while the database
is away. Subclasses implement ``_read_and_process`` and may add side loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg
import structlog
import tenacity

from mnemo_core import db, queue, workers
from mnemo_core import logging as mlog
from mnemo_core.settings import Settings

log = mlog.get(__name__)

#: The longest wait between two attempts of a loop while the database is away.
BACKOFF_MAX_S = 2.0
#: A message cut off by an outage is handed back only while its visibility timeout has this
#: long left at least (counted from before its read): until then no other worker can have it.
HAND_BACK_MARGIN_S = 1.0


async def wait(event: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``event`` is set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


class QueueWorker:
    kind = "worker"
    #: The queue whose messages the batch loop reads (what an outage hands back).
    queue_name = ""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, *, worker_id: str, once: bool = False
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.worker_id = worker_id
        self.once = once
        self._stop = asyncio.Event()
        self._processed = 0  # since the last heartbeat
        self._failed = 0
        self._last_batch = 0  # the size of the last batch, reported while it is recent
        self._batches = 0  # batches ended, and how many of them the last heartbeat had seen
        self._batches_beaten = 0
        self.total_processed = 0
        # Batch sizes and work seconds per item, reported with each heartbeat (/metrics).
        self.stats = workers.BatchStats()
        # Every loop of the worker (batches, heartbeat, side loops) meets an outage: one log
        # for all of them, a line now and then rather than one per failed attempt.
        self.outage = db.OutageLog()
        # Messages read but not written when the database went away (msg id -> when their
        # visibility timeout ends, time.monotonic()): handed back once it answers again.
        self._cut_off: dict[int, float] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        if not self._stop.is_set():
            log.info("worker_stopping", worker_id=self.worker_id)
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def side_loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Named side tasks besides the heartbeat; if one dies, the worker stops loudly."""
        return {}

    async def run(self) -> None:
        # Every log line of this worker, its tasks' and its shutdown's, carries its id (the
        # tasks copy the context).
        with structlog.contextvars.bound_contextvars(worker_id=self.worker_id):
            # The database may go away between the pool's first connection and this.
            await self._until_available(self._register)
            log.info("worker_started", kind=self.kind, once=self.once)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._heartbeat_loop(), name="heartbeat")
                    for name, coro in self.side_loops().items():
                        tg.create_task(coro, name=name)
                    tg.create_task(self._batch_loop(), name="batches")
            finally:
                await self._shutdown()

    async def _shutdown(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                await self._beat(conn)
                await workers.stopped(conn, self.worker_id)
        except Exception as exc:  # the database may be gone; the heartbeat will age out
            log.warning("final_heartbeat_failed", worker_id=self.worker_id, error=str(exc))
        log.info("worker_stopped", worker_id=self.worker_id, processed=self.total_processed)

    # -- heartbeat -----------------------------------------------------------------------

    def count(self, processed: int = 0, failed: int = 0) -> None:
        self._processed += processed
        self._failed += failed
        self.total_processed += processed

    def batch_done(self, items: int) -> None:
        self._last_batch = items
        self._batches += 1

    async def _beat(self, conn: asyncpg.Connection) -> None:
        processed, failed, batches = self._processed, self._failed, self._batches
        # A worker with no batch since the last heartbeat shows 0, not the last one it did.
        batch = self._last_batch if batches != self._batches_beaten else 0
        await workers.beat(conn, self.worker_id, processed, failed, batch, self.stats)
        self._processed -= processed
        self._failed -= failed
        self._batches_beaten = batches

    async def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            every_s = self.settings.heartbeat_s
            try:
                async with self.pool.acquire() as conn:
                    await self._beat(conn)
            except db.UNAVAILABLE_ERRORS as exc:
                self.outage.failed(loop="heartbeat", worker_id=self.worker_id, error=str(exc))
                # Beat again as soon as the database is back, as the batches resume: after
                # an outage longer than MNEMO_WORKER_DEAD_AFTER_S the worker counts as dead
                # (and text search answers 503) until its next heartbeat gets through.
                every_s = min(every_s, BACKOFF_MAX_S)
            else:
                self.outage.recovered(worker_id=self.worker_id)
            await wait(self._stop, every_s)

    # -- batches -------------------------------------------------------------------------

    def _cut(self, until: float, msg_ids: list[int]) -> None:
        """Note messages the database went away from before they were written (``until``:
        when their visibility timeout ends, time.monotonic())."""
        for i in msg_ids:
            self._cut_off[i] = until

    async def _hand_back(self) -> None:
        """Make the messages an outage cut off visible again, now that the database answers:
        they would wait out their visibility timeout (a minute by default) while the
        workers sit idle, and a read takes the whole backlog when its messages are small.
        Only the ones still ours: past its timeout, a message may be in another's hands. (A
        message whose write did commit is gone from the queue: nothing to hand back.)"""
        now = time.monotonic()
        ours = [i for i, until in self._cut_off.items() if until - HAND_BACK_MARGIN_S > now]
        if ours:
            await self._release(ours)
            log.info("messages_handed_back", queue=self.queue_name, msg_ids=ours)
        self._cut_off.clear()

    async def _release(self, msg_ids: list[int], delay_s: int = 0) -> None:
        """Make messages of this worker's queue visible again (after ``delay_s``), outside
        any transaction of the caller's."""
        async with self.pool.acquire() as conn:
            await queue.release(conn, self.queue_name, msg_ids, delay_s)

    async def _register(self) -> None:
        async with self.pool.acquire() as conn:
            await workers.register(conn, self.worker_id, self.kind, self.settings.batch_size)

    async def _batch_loop(self) -> None:
        while not self._stop.is_set():
            await self._until_available(self._read_and_process)

    async def _until_available(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` once, again and again with backoff while the database is away
        (until it gets through or the worker stops)."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(db.UNAVAILABLE_ERRORS),
            # 0.25, 0.5, 1, then every 2 s: the worker resumes within 2 s of the database's
            # return (capped at 10 s, it waited up to 10 s after a long outage), and one
            # refused connection every 2 s per loop costs a database that is away nothing.
            wait=tenacity.wait_exponential(multiplier=0.25, max=BACKOFF_MAX_S),
            sleep=lambda seconds: wait(self._stop, seconds),  # a stop cuts the wait short
            before_sleep=self._log_unavailable,
        )
        async for attempt in retrying:
            if self._stop.is_set():
                return
            with attempt:
                await step()
        if attempt.retry_state.attempt_number > 1:
            # It failed first, then got through. (A step that got through at once says
            # nothing: the embedder's write, which meets the database, is deferred.)
            self.outage.recovered(worker_id=self.worker_id)

    def _log_unavailable(self, state: tenacity.RetryCallState) -> None:
        # A batch in hand was not acknowledged: it comes back after its visibility timeout
        # (the embedder hands its own back as soon as the database answers).
        exc = state.outcome.exception() if state.outcome else None
        self.outage.failed(
            loop="batches",
            worker_id=self.worker_id,
            error=str(exc),
            retry_in_s=state.next_action.sleep if state.next_action else None,
        )

    async def _read_and_process(self) -> None:
        raise NotImplementedError
