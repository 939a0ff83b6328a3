"""The runner loop: takes queued jobs in fair order, hands each to the driver of its kind
(bot.core.generation for one video or image, a story's for its scenes) until it is ready to
post, delivers it (bot.core.delivery) and records how it ended. Every transition is written to
the store before the next step acts, so a new runner continues any job from where it stopped.

Jobs are leased in the store, so two processes on one database never run the
same job. A lease names its holder (host, pid, process start time): a holder on this
host whose process is gone is taken over at once, one on another host when its lease
runs out. Every write the runner makes is fenced on its lease: a runner that lost a
job stops driving it without writing anything more, and a terminal state (set by
anyone, e.g. `videobot cancel`) is never overwritten.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from bot.core.context import DriverFactory
from bot.core.delivery import DELIVERY_BACKOFF_MAX, Deliverer, post_once, posted_alone
from bot.core.errors import DeliveryFailed, Flagged, error_code, user_message
from bot.core.eta import EtaBook
from bot.core.events import EventBus
from bot.core.generation import RATE_LIMIT_NOTE, AmbiguousSubmit, Generation, HopGate, cancel_remote
from bot.core.models import EventKind, Job, JobKind, JobStatus, ProgressEvent
from bot.core.scheduler import FairQueue
from providers.errors import GenerationFailed, ProviderTimeout, VideobotError
from providers.moderation import Moderator
from providers.polling import PollPolicy
from providers.registry import PipelineRegistry
from storage.contract import Store
from storage.jobs import AlreadyFinished, LeaseLost
from storage.leases import Holder, HolderState, holder_state
from storage.media import MediaStore
from storage.spend import SpendLimit

__all__ = ["RATE_LIMIT_NOTE", "Deliverer", "Runner"]

log = logging.getLogger(__name__)


class Runner:
    def __init__(
        self,
        store: Store,
        media: MediaStore,
        registry: PipelineRegistry,
        bus: EventBus,
        *,
        max_running: int = 4,
        max_running_per_user: int = 2,
        lease_seconds: float = 60.0,
        poll_policy: PollPolicy = PollPolicy(),
        adopt_interval: float = 2.0,
        drivers: Mapping[JobKind, DriverFactory] | None = None,
        moderator: Moderator | None = None,
        moderation_on_outage: str = "auto",
        hops: HopGate | None = None,
    ) -> None:
        """`drivers`: the kinds of jobs made of other jobs (stories) and their drivers; every other
        kind is one generation (bot.core.generation), moderated by `moderator` before paid steps,
        its fallback hops and retries passing `hops` (admission)."""
        self.store = store
        self.media = media
        self.registry = registry
        self.bus = bus
        self.poll_policy = poll_policy
        self.lease_seconds = lease_seconds
        #: How often to look for jobs whose holder died (same host: at once; else when the lease ran out).
        self.adopt_interval = min(adopt_interval, max(lease_seconds / 3, 0.05))
        self.drivers: dict[JobKind, DriverFactory] = dict(drivers or {})
        self.moderator = moderator  # the app closes it
        self._generation: DriverFactory = lambda ctx: Generation(ctx, registry, moderator, moderation_on_outage, hops)
        self.holder = Holder.current()
        self.owner = str(self.holder)
        self.delivery_policy = PollPolicy(backoff_base=2.0, backoff_max=DELIVERY_BACKOFF_MAX)
        self.deliverers: dict[str, Deliverer] = {}
        self._queue = FairQueue(max_running, max_running_per_user)
        self._max_running = max_running
        self.eta = EtaBook()
        self._queued_jobs: dict[str, Job] = {}
        self._positions: dict[str, int] = {}
        self._positions_dirty = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        #: Jobs whose lease another runner took: stop driving them, write nothing more.
        self._lost: set[str] = set()
        self._done: dict[str, asyncio.Future[Job]] = {}
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._started = False
        self._stopping = False
        #: A worker (`videobot run --role worker`): queued jobs come only from the store's
        #: `claim_queued` (fair order and caps across every worker, see bot/core/claims.py),
        #: never from the adopt loop, which then takes over only jobs already past the queue.
        self.claiming = False
        #: Set whenever a job of this runner ends: a slot may be free for a claim.
        self.freed = asyncio.Event()

    # --- life cycle -------------------------------------------------------------------------

    @property
    def platforms(self) -> set[str]:
        return set(self.deliverers)

    async def start(self, *, resume: bool = True) -> int:
        """Start dispatching; with `resume`, take over every unfinished job of our platforms
        that nobody alive holds. Returns how many jobs were resumed."""
        self._started = True
        for done in await self.store.list(statuses=[JobStatus.COMPLETED], include_deleted=True, limit=500):
            self.eta.observe(done)
        resumed = await self._adopt_unfinished() if resume else 0
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="runner-dispatch"),
            asyncio.create_task(self._lease_loop(), name="runner-lease"),
        ]
        if resume:
            self._loops.append(asyncio.create_task(self._adopt_loop(), name="runner-adopt"))
        self._ready.set()
        return resumed

    def set_capacity(self, slots: int) -> None:
        """How many jobs this runner drives at once (a worker's share of the global cap)."""
        self._max_running = slots
        self._queue.max_running = slots

    def free_slots(self) -> int:
        """How many more jobs this runner could start now (its own cap; the store keeps the global one)."""
        return max(0, self._max_running - self._queue.running - len(self._queue))

    def held(self) -> list[str]:
        """The jobs this runner holds now: queued here or being driven."""
        return [*self._tasks, *self._queued_jobs]

    def _held(self, job_id: str) -> bool:
        return job_id in self._tasks or self._queue.is_queued(job_id)

    async def idle(self) -> None:
        """Wait until this runner has started (and resumed what it may) and holds no job
        (what `videobot run` with closed stdin waits for)."""
        await self._ready.wait()
        while True:
            pending = [self.wait(job_id) for job_id in self.held()]
            if not pending:
                return
            await asyncio.wait(pending)

    async def stop(self) -> None:
        """Stop without touching job states: what was running is resumed by the next runner."""
        if self._stopping:
            return
        self._stopping = True
        tasks = [*self._loops, *self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.release(self.owner)
        for future in self._done.values():
            if not future.done():
                future.cancel()

    # --- entry points -----------------------------------------------------------------------

    async def enqueue(self, job: Job) -> bool:
        """Claim the job and queue it; False if another runner owns it."""
        # Claimed unless created leased to us (`lease_for_new`); checked again after the claim: another
        # caller (the adopt loop, a redeliver) may hand us the same job meanwhile, the lease ours for both.
        if not self._held(job.id) and job.lease_owner != self.owner and not await self.store.claim(job.id, self.owner, self.lease_seconds):
            return False
        if self._held(job.id):
            return True
        if (ended := self._done.get(job.id)) is None or ended.done():  # back again (Use N, redeliver): a new wait
            self._done[job.id] = asyncio.get_running_loop().create_future()
        if job.status is JobStatus.QUEUED:
            self._queued_jobs[job.id] = job
            self._queue.push(_user_key(job), job.id)
            self._publish_positions()
        else:
            # Past the queue before a restart: it keeps its place ahead of queued work.
            self._queue.mark_running(_user_key(job), job.id)
            self._spawn(job)
        self._wake.set()
        return True

    def lease_for_new(self) -> tuple[str, float]:
        """The lease a new job is created with, in the same write as its row (no claim round trip)."""
        return self.owner, self.lease_seconds

    def wait(self, job_id: str) -> asyncio.Future[Job]:
        return self._done.setdefault(job_id, asyncio.get_running_loop().create_future())

    def position(self, job_id: str) -> int | None:
        if self._positions_dirty:
            self._flush_positions()
        return self._positions.get(job_id)

    def owns(self, job_id: str) -> bool:
        return job_id in self._tasks or self._queue.is_queued(job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job this runner holds; False when it does not hold it."""
        if self._queue.remove(job_id):
            job = self._queued_jobs.pop(job_id)
            await self._finish_cancelled(job)
            self._publish_positions()
            return True
        task = self._tasks.get(job_id)
        if task is None:
            return False
        self._cancelling.add(job_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    # --- the JobContext drivers see (bot/core/context.py) ------------------------------------

    async def write(self, job: Job, *, detail: str | None = None, **fields: Any) -> Job:
        """A fenced write of a job this runner drives (see `_write`)."""
        return await self._write(job, detail=detail, **fields)

    def emit(self, kind: EventKind, job: Job, *, progress: int | None = None, message: str | None = None) -> None:
        self._emit(kind, job, progress=progress, message=message)

    def release_slot(self, job_id: str) -> None:
        """A job that only waits on its children gives its running slot back to them."""
        self._queue.finish(job_id)

    def cancelling(self, job_id: str) -> bool:
        """Whether the job's task is being cancelled on purpose (not a shutdown)."""
        return job_id in self._cancelling

    @property
    def adopts_orphans(self) -> bool | None:
        """True when the adopt loop takes over jobs nobody drives, None while start-up adoption
        is still going on, False on a runner without that loop (a one-shot command)."""
        if not self._ready.is_set():
            return None
        return any(t.get_name() == "runner-adopt" and not t.done() for t in self._loops)

    # --- dispatch ---------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = False
            while (ready := self._queue.pop_ready()) is not None:
                _, job_id = ready
                self._spawn(self._queued_jobs.pop(job_id))
                started = True
            if started:
                self._publish_positions()

    def _spawn(self, job: Job) -> None:
        self._positions.pop(job.id, None)
        self._tasks[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")

    def _publish_positions(self) -> None:
        """Positions change with every enqueue and start; recomputing them each time made a burst
        of N submissions cost O(N^2). They are recomputed once per loop turn instead."""
        if not self._positions_dirty:
            self._positions_dirty = True
            asyncio.get_running_loop().call_soon(self._flush_positions)

    def _flush_positions(self) -> None:
        if not self._positions_dirty:
            return
        self._positions_dirty = False
        positions = self._queue.positions()
        for job_id, position in positions.items():
            if self._positions.get(job_id) != position:
                self._emit(EventKind.QUEUED, self._queued_jobs[job_id], position=position)
        self._positions = positions

    async def _lease_loop(self) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                held = self.held()
                still = await self.store.renew(self.owner, held, self.lease_seconds)
                await self._notice_outside_cancels(held)
                self._drop_lost([job_id for job_id in held if job_id not in still])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease upkeep failed")

    async def _adopt_loop(self) -> None:
        while True:
            await asyncio.sleep(self.adopt_interval)
            try:
                await self._adopt_unfinished()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("adopting unfinished jobs failed")

    def _drop_lost(self, job_ids: list[str]) -> None:
        """Leases that renewal found gone (taken over, or the job finished elsewhere)."""
        for job_id in job_ids:
            if self._queue.remove(job_id):
                self._queued_jobs.pop(job_id, None)
                self._publish_positions()
                log.warning("job %s: lost its lease while queued; another runner has it", job_id)
            elif (task := self._tasks.get(job_id)) is not None and job_id not in self._cancelling:
                log.warning("job %s: lost its lease; stopping without further writes", job_id)
                self._lost.add(job_id)
                task.cancel()

    async def notice_cancels(self, job_ids: list[str]) -> None:
        """Another process says it cancelled these jobs (a gateway's cancel signal): stop those we
        hold now rather than at the next lease renewal."""
        mine = [job_id for job_id in job_ids if self.owns(job_id) and job_id not in self._cancelling]
        if mine:
            await self._notice_outside_cancels(mine)

    async def _notice_outside_cancels(self, held: list[str]) -> None:
        """Another process (the CLI's `cancel`) may mark a job cancelled in the store."""
        for job in await self.store.with_status(held, JobStatus.CANCELLED):
            if self._queue.remove(job.id):
                self._queued_jobs.pop(job.id, None)
                self._publish_positions()
                self._emit(EventKind.CANCELLED, job)
                self._resolve(job)
            elif (task := self._tasks.get(job.id)) is not None and job.id not in self._cancelling:
                # Once: a second cancel would cut short the first one's clean-up (the remote cancel).
                self._cancelling.add(job.id)
                task.cancel()

    async def _adopt_unfinished(self) -> int:
        adopted = 0
        now = time.time()
        for job in await self.store.unfinished(self.platforms):
            if self.owns(job.id) or job.lease_owner == self.owner:
                continue
            if self.claiming and job.status is JobStatus.QUEUED:
                continue  # the claim loop's, in fair order under the global caps
            # Checked here first so that jobs a live runner holds cost no write at all.
            if holder_state(job.lease_owner, job.lease_until, now=now) is HolderState.ALIVE:
                continue
            if await self.enqueue(job):
                adopted += 1
        return adopted

    # --- one job ----------------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        lost = False
        try:
            job = await self._drive(job)
        except asyncio.CancelledError:
            if job.id in self._lost:
                lost = True
            elif job.id in self._cancelling:
                current = await self.store.get(job.id) or job
                note = await self._cancel_remote(current, "cancelled")
                await self._finish_cancelled(current, note)
            else:
                return  # shutting down: the job stays resumable where it is
        except LeaseLost as exc:
            lost = True
            log.warning("job %s: %s; stopping without further writes", job.id, exc)
        except AlreadyFinished:
            # Someone else ended it (`videobot cancel` from another process): stop its remote work too.
            current = await self.store.get(job.id) or job
            if current.status is JobStatus.CANCELLED:
                await self._cancel_remote(current, "cancelled")
            self._emit_final(current)
        except Exception as exc:  # every failure becomes a stored, explained job state
            current = await self.store.get(job.id) or job
            try:
                await self._fail(current, exc)
            except (LeaseLost, AlreadyFinished) as stale:
                log.warning("job %s: failure not recorded (%s)", job.id, stale)
        finally:
            self._cancelling.discard(job.id)
            self._lost.discard(job.id)
            self._tasks.pop(job.id, None)
            self._queue.finish(job.id)
            if lost:
                # Another runner has it now: whoever waits here learns the outcome from the store later.
                future = self._done.pop(job.id, None)
                if future is not None and not future.done():
                    future.cancel()
            if not self._stopping:
                if not lost:
                    await self.store.release(self.owner, [job.id])
                self._wake.set()
                self.freed.set()

    async def _write(self, job: Job, *, detail: str | None = None, spend_limits: list[SpendLimit] | None = None, **fields: Any) -> Job:
        """Every runner write: only while this runner still holds the job's lease."""
        return await self.store.update(job.id, fence=self.owner, detail=detail, spend_limits=spend_limits, **fields)

    async def _drive(self, job: Job) -> Job:
        """The job's driver (by kind; else one generation) takes it to DELIVERING; the runner delivers it."""
        while not job.status.terminal:
            if job.status is JobStatus.DELIVERING:
                job = await self._deliver(job)
            else:
                job = await self.drivers.get(job.kind, self._generation)(self).drive(job)
        return job

    async def _deliver(self, job: Job) -> Job:
        """Posted exactly once (bot.core.delivery), then completed."""
        self._emit(EventKind.DELIVERING, job, progress=100)
        deliverer = self.deliverers.get(job.origin.platform) if posted_alone(job) else None
        if deliverer is not None:
            job, failure = await post_once(self, job, deliverer, self.delivery_policy)
            if failure is not None:
                return await self._complete_undelivered(job, failure)
        job = await self._write(job, status=JobStatus.COMPLETED, progress=100, finished_at=time.time())
        self.eta.observe(job)
        self._emit(EventKind.COMPLETED, job, progress=100)
        self._resolve(job)
        return job

    async def _complete_undelivered(self, job: Job, failure: DeliveryFailed) -> Job:
        """Made and paid for, but it cannot be posted: keep everything, tell the owner how to get it."""
        message = user_message(failure)
        log.warning("job %s: result not delivered: %s (%s)", job.id, message, failure.detail)
        job = await self._write(
            job, status=JobStatus.COMPLETED, progress=100, finished_at=time.time(),
            error_code=failure.code, error_message=message, detail=f"undelivered: {failure.detail or message}",
        )  # fmt: skip
        self._emit(EventKind.COMPLETED, job, progress=100, message=message)
        self._resolve(job)
        return job

    # --- endings ----------------------------------------------------------------------------

    async def _fail(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, AmbiguousSubmit):
            exc = VideobotError(
                "The bot restarted while sending this job, and the provider cannot tell whether it arrived. "
                "To avoid paying twice it was not sent again: re-roll to try again."
            )
        message = user_message(exc)
        detail = getattr(exc, "detail", None)
        log_fn = log.warning if isinstance(exc, VideobotError) else log.exception
        log_fn("job %s failed: %s%s", job.id, exc, f" ({detail})" if detail else "", exc_info=not isinstance(exc, VideobotError))
        # Its remote job may still run (and bill): stop it, unless the provider already ended it.
        if isinstance(exc, ProviderTimeout):
            note = f"timed out; remote {job.remote_id} cancelled" if job.remote_id else None  # by the polling engine
        elif isinstance(exc, GenerationFailed):
            note = None  # the provider ended it
        elif isinstance(exc, Flagged):
            note = f"rejected by moderation before any paid step: {exc.detail}"
        else:
            note = await self._cancel_remote(job, "failed")
        job = await self._write(
            job,
            status=JobStatus.FAILED,
            error_code=getattr(exc, "code", None) if isinstance(exc, VideobotError) else error_code(exc),
            error_message=message,
            finished_at=time.time(),
            detail=note,
        )
        self._emit(EventKind.FAILED, job, message=message)
        self._resolve(job)

    async def _finish_cancelled(self, job: Job, note: str | None = None) -> None:
        if not job.status.terminal:
            job = await self._write(job, status=JobStatus.CANCELLED, finished_at=time.time(), detail=note)
        self._emit(EventKind.CANCELLED, job)
        self._resolve(job)

    def _emit_final(self, job: Job) -> None:
        kind = {JobStatus.COMPLETED: EventKind.COMPLETED, JobStatus.FAILED: EventKind.FAILED}.get(job.status, EventKind.CANCELLED)
        self._emit(kind, job, message=job.error_message)
        self._resolve(job)

    async def _cancel_remote(self, job: Job, why: str) -> str | None:
        return await cancel_remote(self.registry, self.store, job, why)

    def _resolve(self, job: Job) -> None:
        future = self._done.get(job.id)
        if future is not None and not future.done():
            future.set_result(job)

    # --- helpers ----------------------------------------------------------------------------

    def _emit(self, kind: EventKind, job: Job, *, position: int | None = None, progress: int | None = None, message: str | None = None) -> None:
        eta = None
        if kind in (EventKind.QUEUED, EventKind.STARTED, EventKind.PROGRESS):
            eta = self.eta.remaining(job, now=time.time(), position=position, parallel=self._max_running)
        self.bus.publish(
            ProgressEvent(
                kind=kind, job=job, position=position, message=message, eta=eta,
                progress=progress if progress is not None else job.progress,
            )  # fmt: skip
        )


def _user_key(job: Job) -> str:
    return f"{job.origin.platform}:{job.origin.user_id}"
