"""Progress between processes: a worker's events reach the gateway that shows them.

In one process (`videobot run`, role all) the runner's events go straight to the adapters
on the `EventBus`. With separate processes the runner is in a worker and the chat
connection in a gateway, so:

- `SignalPublisher` (worker): a bus subscriber that writes every event the runner emits
  into the store as a signal (`store.publish(job_id, kind, payload)`): the kind and what
  the row does not hold (progress of this tick, the note, queue place, ETA). When the
  store is slower than the events, a job's pending progress tick is replaced by its newer
  one (never a state change), so a backlog cannot grow without bound.
- `Relay` (gateway): follows the signals by id (`signals_after(cursor)`, woken by
  `wait_for_signal`: NOTIFY on PostgreSQL, polling on SQLite), reads each job's row and
  publishes the equivalent `ProgressEvent` on the local bus, where the adapters render it
  as if the runner were local. After an error it resumes from its cursor, so nothing is
  skipped. A worker killed between a job's last write and its signal leaves the job's end
  unsignalled: the relay also looks, every `sweep_seconds`, at the rows of the jobs it has
  seen unfinished and relays the end of any that ended meanwhile.
  A job waiting in the store for a claim has no runner to tell its place in line, so the relay
  reads the workers' fair order (`store.queue_order`) when signals say it may have changed (a
  job queued, started or ended), at most every `positions_seconds`, and publishes a QUEUED
  event with the position of each waiting job whose place changed, as the runner does in one
  process.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from bot.core.events import EventBus, Subscription
from bot.core.models import EventKind, Job, JobStatus, ProgressEvent
from storage.contract import Store

log = logging.getLogger(__name__)

_FINAL_KIND = {JobStatus.COMPLETED: EventKind.COMPLETED, JobStatus.FAILED: EventKind.FAILED, JobStatus.CANCELLED: EventKind.CANCELLED}
#: A job that ended this recently is left to its own signal by the sweep.
SWEEP_GRACE_SECONDS = 2.0
#: Signals written at once by the publisher (distinct jobs; one job's signals stay in order).
PUBLISH_BATCH = 64
#: Signal kinds after which the waiting jobs' order may differ: one more waits, one was claimed
#: (its worker's queued signal) or started, or one ended (what its user holds changed).
ORDER_KINDS = frozenset({EventKind.QUEUED, EventKind.STARTED, EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED})
#: The waiting jobs' order is read at most this often, however many signals arrive.
POSITIONS_SECONDS = 0.5


def payload_of(event: ProgressEvent) -> dict[str, Any]:
    payload: dict[str, Any] = {"progress": event.progress}
    for name in ("message", "position", "eta"):
        value = getattr(event, name)
        if value is not None:
            payload[name] = value
    return payload


class SignalPublisher:
    """Worker side: the runner's events, into the store as signals (see the module doc)."""

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        #: Events waiting to be written, in order; key (job id, seq).
        self._pending: OrderedDict[tuple[str, int], ProgressEvent] = OrderedDict()
        #: A job's pending progress tick (key), replaced in place by a newer tick.
        self._tick: dict[str, tuple[str, int]] = {}
        self._seq = 0
        self._more = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self._sub = self.bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._pump(), name="signal-publisher")

    async def _on_event(self, event: ProgressEvent) -> None:
        job_id = event.job.id
        if event.kind is EventKind.PROGRESS and (key := self._tick.get(job_id)) is not None and key in self._pending:
            self._pending[key] = event  # the newer tick takes the older one's place
            return
        self._seq += 1
        key = (job_id, self._seq)
        self._pending[key] = event
        if event.kind is EventKind.PROGRESS:
            self._tick[job_id] = key
        else:
            self._tick.pop(job_id, None)  # a later tick must not jump ahead of this state change
        self._idle.clear()
        self._more.set()

    async def _pump(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            while self._pending:
                batch: list[tuple[tuple[str, int], ProgressEvent]] = []
                jobs: set[str] = set()
                for key, event in self._pending.items():
                    if key[0] in jobs:
                        continue  # the job's next signal waits for this one
                    jobs.add(key[0])
                    batch.append((key, event))
                    if len(batch) >= PUBLISH_BATCH:
                        break
                for key, _ in batch:
                    del self._pending[key]
                    if self._tick.get(key[0]) == key:
                        del self._tick[key[0]]
                results = await asyncio.gather(
                    *(self.store.publish(e.job.id, e.kind.value, payload_of(e)) for _, e in batch), return_exceptions=True
                )
                for (_, event), result in zip(batch, results):
                    if isinstance(result, BaseException):
                        # The row holds the state; a gateway's sweep shows a missed ending.
                        log.warning("job %s: signal %s not published: %r", event.job.id, event.kind.value, result)
                    else:
                        self.published += 1
            self._idle.set()

    async def drain(self) -> None:
        """Until every event handed over so far is written (a clean stop)."""
        await self.bus.drain()
        await self._idle.wait()

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await asyncio.wait_for(self.drain(), 3.0)
            except TimeoutError:
                log.warning("stopping with %d signals unpublished", len(self._pending))
            self.bus.unsubscribe(self._sub)
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class Relay:
    """Gateway side: signals from the store, as events on the local bus (see the module doc)."""

    def __init__(
        self, store: Store, bus: EventBus, *, platforms: set[str] | None = None, wait_seconds: float = 1.0,
        sweep_seconds: float = 5.0, error_pause: float = 1.0, positions_seconds: float = POSITIONS_SECONDS,
    ) -> None:
        self.store = store
        self.bus = bus
        self.platforms = platforms
        self.wait_seconds = wait_seconds
        self.sweep_seconds = sweep_seconds
        self.error_pause = error_pause
        self.positions_seconds = positions_seconds
        self.cursor = 0
        #: The place in line last shown for each waiting job, and whether to read the order again.
        self._positions: dict[str, int] = {}
        self._order_due = True
        #: Jobs seen unfinished and not yet seen ending: the sweep checks their rows.
        self._open: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0

    async def start(self) -> None:
        # From now on: what happened before is on the cards already, or the adapters'
        # own start-up reconcile shows it; the sweep covers jobs unfinished now.
        self.cursor = await self.store.last_signal_id()
        self._open = {j.id for j in await self.store.unfinished(self.platforms)}
        self._task = asyncio.create_task(self._loop(), name="signal-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_seconds
        next_order = loop.time()
        while True:
            try:
                signals = await self.store.signals_after(self.cursor)
                if signals:
                    await self._relay(signals)
                    # Only after they were handed on: an error above retries from the same place.
                    self.cursor = signals[-1].id
                if self._order_due and loop.time() >= next_order:
                    await self._show_positions()
                    next_order = loop.time() + self.positions_seconds
                if loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + self.sweep_seconds
                if not signals:
                    wait = self.wait_seconds
                    if self._order_due:
                        wait = min(wait, max(next_order - loop.time(), 0.0))
                    await self.store.wait_for_signal(wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("relaying signals failed; resuming after signal %d", self.cursor, exc_info=True)
                await asyncio.sleep(self.error_pause)

    async def _relay(self, signals: list[Any]) -> None:
        rows: dict[str, Job | None] = {}
        for signal in signals:
            if signal.job_id not in rows:
                rows[signal.job_id] = await self.store.get(signal.job_id)
        for signal in signals:
            job = rows[signal.job_id]
            if job is None or (self.platforms is not None and job.origin.platform not in self.platforms):
                continue
            try:
                kind = EventKind(signal.kind)
            except ValueError:
                continue  # a signal for other readers
            payload = signal.payload
            if kind in ORDER_KINDS:
                self._order_due = True
                if kind is EventKind.QUEUED and payload.get("position") is None and job.id in self._positions:
                    payload = {**payload, "position": self._positions[job.id]}  # read already (before its signal came)
            if not kind.final and job.terminal:
                continue  # stale: its ending is signalled after it (or found by the sweep)
            self._publish(kind, job, payload, at=signal.at)

    async def _show_positions(self) -> None:
        """Each waiting job's place in the workers' fair order, as a QUEUED event where it changed."""
        order = await self.store.queue_order(self.platforms)
        positions = {job_id: place for place, job_id in enumerate(order, 1)}
        changed = [job_id for job_id, place in positions.items() if self._positions.get(job_id) != place]
        # Still waiting when read back (a claim may have taken one since): one read for all of them.
        for job in await self.store.with_status(changed, JobStatus.QUEUED):
            self._publish(EventKind.QUEUED, job, {"position": positions[job.id]})
        self._positions = positions
        self._order_due = False

    def _publish(self, kind: EventKind, job: Job, payload: dict[str, Any], *, at: float | None = None) -> None:
        progress = payload.get("progress")
        if progress is not None and progress != job.progress:
            job = job.model_copy(update={"progress": progress})  # this tick's, newer than the row's
        if kind.final:
            self._open.discard(job.id)
        else:
            self._open.add(job.id)
        self.bus.publish(
            ProgressEvent(
                kind=kind, job=job, progress=job.progress if progress is None else int(progress),
                message=payload.get("message"), position=payload.get("position"), eta=payload.get("eta"),
                at=at or time.time(),
            )  # fmt: skip
        )
        self.relayed += 1

    async def _sweep(self) -> None:
        """Endings nobody signalled (a worker killed right after its last write)."""
        if not self._open:
            return
        ids = list(self._open)
        settled = time.time() - SWEEP_GRACE_SECONDS
        for status, kind in _FINAL_KIND.items():
            for job in await self.store.with_status(ids, status):
                if job.finished_at is not None and job.finished_at > settled:
                    continue  # its own signal is likely on the way
                if self.platforms is None or job.origin.platform in self.platforms:
                    log.info("job %s ended (%s) without a signal; showing it", job.id, status.value)
                    self._publish(kind, job, {"message": job.error_message} if job.error_message else {})
                else:
                    self._open.discard(job.id)
