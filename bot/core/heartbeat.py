"""Each `videobot run` process says it is alive: a row in the store's `workers` table.

Every `interval` seconds the process upserts its row (host, pid, role, jobs it holds);
`videobot status` lists the processes seen recently. A clean stop removes the row; a
killed process's row just stops being refreshed (shown as silent, then dropped from the
"alive" list). The heartbeat also prunes old cross-process signals now and then: any
process may, and pruning twice is harmless.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from storage.contract import Store

log = logging.getLogger(__name__)

#: Signals older than this are removed (a gateway down longer catches up through its
#: start-up reconcile instead of the signals).
SIGNAL_KEEP_SECONDS = 3600.0
#: How often (at most) a process prunes signals.
PRUNE_EVERY_SECONDS = 60.0
#: A process is listed as alive while its last heartbeat is younger than this many intervals.
ALIVE_INTERVALS = 3


class Heartbeat:
    def __init__(
        self, store: Store, *, worker_id: str, role: str, held: Callable[[], int], interval: float = 5.0,
        prune_every: float = PRUNE_EVERY_SECONDS, keep_signals: float = SIGNAL_KEEP_SECONDS,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.role = role
        self.held = held
        self.interval = interval
        self.prune_every = prune_every
        self.keep_signals = keep_signals
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self._last_prune = 0.0
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        await self.store.heartbeat(
            self.worker_id, host=self.host, pid=self.pid, role=self.role, started_at=self.started_at, held=self.held()
        )
        now = time.monotonic()
        if now - self._last_prune >= self.prune_every:
            self._last_prune = now
            pruned = await self.store.prune_signals(time.time() - self.keep_signals)
            if pruned:
                log.debug("pruned %d old signals", pruned)

    async def start(self) -> None:
        try:
            await self.beat()  # listed at once, before any job is claimed
        except Exception:
            log.warning("heartbeat failed", exc_info=True)  # the process runs on; status shows it silent
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("heartbeat failed", exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.store.drop_worker(self.worker_id)
        except Exception:
            log.warning("could not remove this process from the workers table", exc_info=True)
