"""The runner step of a set of takes: every take at once as child jobs, then the contact sheet.

`TakesDriver.drive` creates the takes that do not exist yet (take k is looked up among the set's
children first, so a restart never makes one twice), hands them all to the runner, which runs
them concurrently within the user's and the global caps, and shows the set's progress on one
line. A take that fails does not fail the set: once every take has ended, the finished ones are
put side by side in a contact sheet and the set goes to DELIVERING (the runner posts it once);
only when no take finished does the set fail. The driver sees the runner only as a `JobContext`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from bot.core.context import JobContext
from bot.core.ids import new_job_id
from bot.core.models import EventKind, GenerateParams, Job, JobStatus
from bot.core.take_set import (
    TAKE, TakeResult, billed, failure_lines, set_progress, take_kind, takes_count, takes_line, write_contact_sheet,
)  # fmt: skip
from providers.errors import VideobotError
from storage.jobs import AlreadyFinished
from storage.leases import HolderState, holder_state

log = logging.getLogger(__name__)

#: How often the set looks at its takes (progress, an outside cancel, a restart).
WATCH_INTERVAL = 0.25
CONTACT_SHEET = "contact-sheet.png"


class TakesFailed(VideobotError):
    code = "takes_failed"


class TakesDriver:
    def __init__(self, runner: JobContext) -> None:
        self.runner = runner

    async def drive(self, job: Job) -> Job:
        r = self.runner
        # The set only waits on its takes: its running slot is theirs.
        r.release_slot(job.id)
        if job.status is JobStatus.QUEUED:
            job = await r.write(job, status=JobStatus.RUNNING, started_at=time.time())
            r.emit(EventKind.STARTED, job)
        elif job.status is not JobStatus.RUNNING:
            job = await r.write(job, status=JobStatus.RUNNING)
        try:
            takes = await self._create_missing(job)
            takes = await self._watch(job, takes)
            return await self._finish(job, takes)
        except asyncio.CancelledError:
            if r.cancelling(job.id):
                await self._stop_takes(job)
            raise

    async def _create_missing(self, job: Job) -> dict[int, Job]:
        r = self.runner
        n = takes_count(job)
        found = {int(c.state[TAKE]): c for c in await r.store.children(job.id) if c.state.get(TAKE)}
        for k in range(1, n + 1):
            if k not in found:
                found[k] = await self._create(job, k)
            elif not found[k].terminal and not r.owns(found[k].id) and found[k].lease_owner == r.owner:
                await r.enqueue(found[k])
        return found

    async def _create(self, job: Job, k: int) -> Job:
        r = self.runner
        seeds: list[int] = job.state.get("seeds") or []
        seed = seeds[k - 1] if k <= len(seeds) else job.params.seed + k - 1
        origin = job.origin.model_copy(update={"status_message_id": None, "result_message_id": None})
        state: dict[str, object] = {TAKE: k}
        for key in ("moderation_mode", "blocklist", "ab"):
            if key in job.state:
                state[key] = job.state[key]
        p = job.params
        take = Job(
            id=new_job_id(), parent_id=job.id, kind=take_kind(job), origin=origin, prompt=job.prompt,
            params=GenerateParams(seconds=p.seconds, size=p.size, seed=seed, model=p.model, image_path=p.image_path, options=dict(p.options)),
            pipeline=job.pipeline, status=JobStatus.QUEUED, created_at=time.time(),
            # Reserved by the set already: the take's row adds nothing to the budgets.
            cost_estimate=0.0, state=state,
        )  # fmt: skip
        owner, seconds = r.lease_for_new()
        take = await r.store.create(take, lease_owner=owner, lease_seconds=seconds)
        await r.store.add_event(job.id, f"take {k} of {takes_count(job)}: job {take.id} (seed {seed})")
        await r.enqueue(take)
        return take

    async def _watch(self, job: Job, takes: dict[int, Job]) -> dict[int, Job]:
        """Until every take has ended; the set's line meanwhile. A take nobody drives (after a
        restart) is taken over here unless the runner's adopt loop does it."""
        r = self.runner
        n = takes_count(job)
        shown = ""
        while True:
            for k, take in list(takes.items()):
                if not take.terminal:
                    takes[k] = await r.store.get(take.id) or take
            line = takes_line(takes, n)
            if line != shown:
                shown = line
                percent = set_progress(takes, n)
                await r.store.set_progress(job.id, percent, fence=r.owner)
                r.emit(EventKind.PROGRESS, job.model_copy(update={"progress": percent}), progress=percent, message=line)
            running = [t for t in takes.values() if not t.terminal]
            if not running:
                return takes
            for take in running:
                if not r.owns(take.id) and self.runner.adopts_orphans is False:
                    held = holder_state(take.lease_owner, take.lease_until)
                    if take.lease_owner == r.owner or held is not HolderState.ALIVE:
                        if take.lease_owner == r.owner or await r.store.claim(take.id, r.owner, r.lease_seconds):
                            await r.enqueue(take.model_copy(update={"lease_owner": r.owner}))
            await asyncio.wait([r.wait(t.id) for t in running], timeout=WATCH_INTERVAL, return_when=asyncio.FIRST_COMPLETED)

    async def _finish(self, job: Job, takes: dict[int, Job]) -> Job:
        r = self.runner
        seeds = {k: t.params.seed for k, t in takes.items()}
        results = [
            TakeResult(take=k, job_id=t.id, seed=t.params.seed, status=t.status, output_path=t.output_path, error=t.error_message)
            for k, t in sorted(takes.items())
        ]  # fmt: skip
        cost = billed(list(takes.values()))
        state = {**job.state, "take_jobs": [t.id for _, t in sorted(takes.items())], "take_results": [x.model_dump(mode="json") for x in results]}
        if not any(x.ok for x in results):
            await r.write(job, cost_actual=cost, state=state)
            raise TakesFailed("No take finished. " + " · ".join(failure_lines(results)), detail=f"take jobs {', '.join(state['take_jobs'])}")
        r.emit(EventKind.PROGRESS, job.model_copy(update={"progress": 99}), progress=99, message="making the contact sheet")
        sheet = r.media.image_path(job.id, CONTACT_SHEET)
        if not await asyncio.to_thread(sheet.exists):
            temp = r.media.temp_for(sheet)
            entries = [(x.take, seeds[x.take], Path(x.output_path) if x.ok and x.output_path else None) for x in results]
            await asyncio.to_thread(write_contact_sheet, entries, temp)
            await asyncio.to_thread(r.media.commit, temp, sheet)
        done = sum(1 for x in results if x.ok)
        return await r.write(
            job, status=JobStatus.DELIVERING, progress=100, output_path=str(sheet), thumbnail_path=str(sheet),
            cost_actual=cost, state=state, detail=f"{done} of {len(results)} takes finished",
        )  # fmt: skip

    async def _stop_takes(self, job: Job) -> None:
        """The set was cancelled: every take still going stops too."""
        r = self.runner
        for take in await r.store.children(job.id):
            if not take.state.get(TAKE) or take.terminal:
                continue
            if not await r.cancel(take.id):
                try:
                    await r.store.update(take.id, status=JobStatus.CANCELLED, finished_at=time.time(), detail=f"set {job.id} cancelled")
                except AlreadyFinished:
                    pass
        takes = [t for t in await r.store.children(job.id) if t.state.get(TAKE)]
        try:
            await r.store.update(job.id, cost_actual=billed(takes))
        except Exception:
            log.warning("set %s: could not settle its cost after cancel", job.id, exc_info=True)
