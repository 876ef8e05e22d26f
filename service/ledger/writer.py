"""Rows leave the request path through a bounded queue and are written in batches.

``record(row)`` never waits: it puts the row on the queue, or, when the queue
is full (the database is slow or down), drops it and counts it in
``divconq_ledger_rows_total{outcome="dropped"}``. One background task writes
a batch when ``batch_size`` rows are waiting or ``flush_interval_s`` after
the first of them arrived, whichever comes first. ``aclose()`` (the
lifespan's shutdown, after the server has finished its requests) writes
everything queued, then closes the store.

What a crash loses: the rows queued and not yet committed. While the writer
keeps up, that is at most one batch (the rows of the last flush interval,
never more than ``batch_size``); the queue's bound is the worst case.

A failed batch is counted (``outcome="failed"``) and logged, and the writer
goes on: the ledger never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from service.core.settings import LedgerSettings
from service.ledger.base import LedgerStore
from service.ledger.rows import LedgerRow
from service.observability.metrics import Metrics

log = logging.getLogger(__name__)
_STOP: Final = object()
RETENTION_EVERY_S = 3600.0


class LedgerWriter:
    def __init__(self, store: LedgerStore, settings: LedgerSettings, metrics: Metrics) -> None:
        self.store = store
        self._settings = settings
        self._metrics = metrics
        self._queue: asyncio.Queue[LedgerRow | object] = asyncio.Queue(settings.queue_size)
        self._batch_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self.closed = False
        # Whether the last batch was written (for /readyz): False after a failure.
        self.writing = True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")
        if self._settings.retention_days > 0:
            self._retention = asyncio.create_task(self._retain(), name="ledger-retention")

    def record(self, row: LedgerRow) -> bool:
        """Queue one row; False (and counted) when the queue is full or the writer closed."""
        if self.closed:
            self._metrics.ledger_rows.labels("dropped").inc()
            return False
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self._metrics.ledger_rows.labels("dropped").inc()
            return False
        if self._queue.qsize() >= self._settings.batch_size:
            self._batch_ready.set()
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, object]:
        """For /readyz: where rows go and how the writer is doing (no database call)."""
        return {
            "enabled": True,
            "store": self.store.kind,
            "content": self._settings.content,
            "queued": self.queued,
            "queue_size": self._settings.queue_size,
            "last_batch_written": self.writing,
        }

    async def _run(self) -> None:
        size = self._settings.batch_size
        while True:
            first = await self._queue.get()
            stop = first is _STOP
            batch = [] if stop else [first]
            if not stop and self._queue.qsize() < size - 1:
                # Wait for the batch to fill, at most one flush interval. (An
                # event, not a timed queue.get(): a timeout then loses no row.)
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._batch_ready.wait(), self._settings.flush_interval_s
                    )
            while len(batch) < size and not stop:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
            rows = [r for r in batch if isinstance(r, LedgerRow)]
            if rows:
                await self._write(rows)
            if stop:
                # Whatever was queued behind the stop mark (none, normally).
                await self._drain()
                return

    async def _drain(self) -> None:
        rows: list[LedgerRow] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, LedgerRow):
                rows.append(item)
        for i in range(0, len(rows), self._settings.batch_size):
            await self._write(rows[i : i + self._settings.batch_size])

    async def _write(self, rows: list[LedgerRow]) -> None:
        try:
            await self.store.write(rows)
        except Exception as exc:  # the database's many error types: count, log, go on
            self._metrics.ledger_rows.labels("failed").inc(len(rows))
            log.error("ledger batch not written", extra={"rows": len(rows), "error": str(exc)})
            self.writing = False
            return
        self.writing = True
        self._metrics.ledger_rows.labels("written").inc(len(rows))

    async def _retain(self) -> None:
        horizon = self._settings.retention_days * 86400.0
        while True:
            try:
                deleted = await self.store.delete_before(time.time() - horizon)
            except Exception as exc:
                log.warning("ledger retention failed", extra={"error": str(exc)})
            else:
                if deleted:
                    log.info("ledger retention", extra={"rows_deleted": deleted})
            await asyncio.sleep(RETENTION_EVERY_S)

    async def aclose(self) -> None:
        """Write everything queued, then close the store."""
        self.closed = True
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self._task is not None:
            await self._queue.put(_STOP)
            self._batch_ready.set()
            await self._task
        await self.store.aclose()
