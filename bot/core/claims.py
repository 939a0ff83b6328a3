"""A worker takes queued jobs from the store, in fair order, under caps that hold across workers.

Gateways (and `--detach`) store jobs queued and unleased. Each worker asks the store's
`claim_queued` for as many as it has room for: the store counts what every worker holds
(the global cap and the per-user cap are the store's, not this process's), picks in
round-robin order across users, and leases the picked jobs to this worker in the same
transaction, so two workers never get the same job. The runner then drives them as usual.

A worker asks when a slot of its own frees up, when a signal says a job was queued or
ended somewhere (PostgreSQL: at once, by NOTIFY; SQLite: polled), and at least every
`interval` seconds (leases of dead workers run out, signals are best effort).
"""
from __future__ import annotations

import asyncio
import logging

from bot.core.runner import Runner
from storage.contract import Store

log = logging.getLogger(__name__)

#: Signal kinds after which a claim may succeed: new work, or room made by a job ending elsewhere.
WAKE_KINDS = frozenset({"queued", "completed", "failed", "cancelled"})
#: After a failed claim (the database unreachable), wait this long before the next try.
ERROR_PAUSE = 1.0
#: Jobs taken per claim (the claim loops while there is room and work): a worker woken with
#: many jobs waiting does not take them all in one go, so the workers woken with it share them.
CLAIM_BATCH = 8


class Claimer:
    def __init__(
        self, runner: Runner, store: Store, *, max_running: int, max_running_per_user: int, interval: float = 1.0, batch: int = CLAIM_BATCH
    ) -> None:
        self.runner = runner
        self.batch = batch
        self.store = store
        self.max_running = max_running
        self.max_running_per_user = max_running_per_user
        self.interval = interval
        #: Jobs this worker claimed since it started (status, benchmarks).
        self.claimed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="worker-claims")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def claim_once(self) -> int:
        """Claim what there is room for and hand it to the runner; returns how many."""
        room = min(self.runner.free_slots(), self.batch)
        if room <= 0:
            return 0
        jobs = await self.store.claim_queued(
            self.runner.owner, self.runner.lease_seconds, platforms=sorted(self.runner.platforms),
            max_running=self.max_running, max_running_per_user=self.max_running_per_user, limit=room,
        )  # fmt: skip
        for job in jobs:
            # Leased to us by the claim: the runner queues it without a claim of its own.
            await self.runner.enqueue(job)
        self.claimed += len(jobs)
        return len(jobs)

    async def _loop(self) -> None:
        cursor = await self.store.last_signal_id()
        while True:
            try:
                # A full batch may mean more waits: ask again at once while there is room.
                while await self.claim_once() == self.batch:
                    await asyncio.sleep(0)  # the runner starts what it got; other workers get their turn
                cursor = await self._wait(cursor)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming queued jobs failed")
                await asyncio.sleep(ERROR_PAUSE)

    async def _wait(self, cursor: int) -> int:
        """Until a reason to claim again (see the module doc); returns the signal cursor."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interval
        self.runner.freed.clear()
        while (left := deadline - loop.time()) > 0:
            freed = asyncio.ensure_future(self.runner.freed.wait())
            signal = asyncio.ensure_future(self.store.wait_for_signal(left))
            try:
                await asyncio.wait([freed, signal], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (freed, signal):
                    waiter.cancel()
                await asyncio.gather(freed, signal, return_exceptions=True)
            if self.runner.freed.is_set():
                return cursor
            wake = False
            while signals := await self.store.signals_after(cursor):
                cursor = signals[-1].id
                wake = wake or any(s.kind in WAKE_KINDS for s in signals)
                # A cancel from a gateway: stop the provider's work now, not at the next renewal.
                await self.runner.notice_cancels([s.job_id for s in signals if s.kind == "cancelled"])
            if wake:
                return cursor
        return cursor
