"""The store as observability sees it: every job write is one log line's context and, with
metrics on, a count (see bot/observability/metrics.py for why counts come from here).

`ObservedStore` wraps the app's store (either backend) and passes everything through; its
`create` and `update` run in the task that drives the job, so binding the job's fields there
(`logs.bind_job`) tags every later line of that task.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from bot.core.models import Job, JobStatus
from bot.observability.logs import bind_job
from bot.observability.metrics import Metrics

#: One line per state change of a job.
jobs_log = logging.getLogger("bot.jobs")
#: Jobs whose last known state the observer remembers (to see transitions, not repeats).
REMEMBERED_JOBS = 20_000


class JobObserver:
    """Turns the store's writes into counts: each job transition once (see the module doc)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        #: job id -> (status, moderated, delivery attempt) as last seen in a stored row.
        self._known: OrderedDict[str, tuple[str, Any, int]] = OrderedDict()
        #: Writes observed so far, and the number of each job's last one (ended jobs too).
        self._writes = 0
        self._last_write: OrderedDict[str, int] = OrderedDict()

    def mark(self) -> int:
        """Taken before a read: `seen(job, read_from=mark)` then knows which rows may be older
        than a write observed while the read was under way."""
        return self._writes

    def seen(self, job: Job, *, read_from: int | None = None) -> None:
        """A row as read (`read_from`: the `mark()` taken before the read) or written: remember
        where it stands (unfinished jobs only).

        Reads and writes travel apart (SQLite: a read connection and the writer's thread;
        PostgreSQL: pooled connections), so a read can answer after a write it predates. Such a
        row is older than what the write showed: taking it would make the next write of that
        job look like a transition again (a moderation pass counted twice, seen in CI)."""
        if self.metrics is None:
            return
        if read_from is None:
            self._writes += 1
            self._last_write[job.id] = self._writes
            self._last_write.move_to_end(job.id)
            while len(self._last_write) > REMEMBERED_JOBS:
                self._last_write.popitem(last=False)
        elif self._last_write.get(job.id, 0) > read_from:
            return
        if job.status.terminal:
            self._known.pop(job.id, None)
            return
        self._known[job.id] = (job.status.value, job.state.get("moderated"), job.delivery_attempt)
        self._known.move_to_end(job.id)
        while len(self._known) > REMEMBERED_JOBS:
            self._known.popitem(last=False)

    def created(self, job: Job) -> None:
        bind_job(job)
        jobs_log.info("job %s: %s (%s, %s)", job.id, job.status.value, job.kind.value, job.pipeline)
        if self.metrics is not None and not job.state.get("story_scene"):
            self.metrics.jobs_submitted.labels(kind=job.kind.value, pipeline=job.pipeline).inc()
        self.seen(job)

    def written(self, job: Job, fields: dict[str, Any]) -> None:
        bind_job(job)
        if fields.get("status") is not None:
            # Every state change of a job: one line, with the job's fields bound.
            jobs_log.info("job %s: %s", job.id, job.status.value)
        if self.metrics is None:
            return
        before = self._known.get(job.id)
        m = self.metrics
        scene = bool(job.state.get("story_scene"))
        if before is not None:
            _, moderated_before, attempt_before = before
            moderated = job.state.get("moderated")
            if moderated and not moderated_before:
                if moderated == "skipped":
                    m.moderation.labels(outcome="unavailable").inc()
                elif moderated != "off":
                    m.moderation.labels(outcome="passed").inc()
            if job.delivery_attempt > max(attempt_before, 1) and not scene:
                m.deliveries.labels(platform=job.origin.platform, outcome="retried").inc()
        status = fields.get("status")
        if status is not None:
            status = JobStatus(status)
            if status is JobStatus.DOWNLOADING and job.provider and "remote_since" in job.state:
                m.provider_seconds.labels(provider=job.provider).observe(max(0.0, time.time() - job.state["remote_since"]))
            if status.terminal:
                self._finished(job, scene)
        self.seen(job)

    def _finished(self, job: Job, scene: bool) -> None:
        m = self.metrics
        assert m is not None
        if job.error_code == "moderated":
            m.moderation.labels(outcome="flagged").inc()
        elif job.error_code == "moderation_unavailable":
            m.moderation.labels(outcome="unavailable").inc()
        if scene:
            return  # the story counts for its scenes (as spend does)
        undelivered = job.status is JobStatus.COMPLETED and job.error_code is not None
        outcome = "undelivered" if undelivered else job.status.value
        m.jobs_finished.labels(kind=job.kind.value, pipeline=job.pipeline, outcome=outcome).inc()
        if job.status is JobStatus.COMPLETED:
            m.deliveries.labels(platform=job.origin.platform, outcome="undelivered" if undelivered else "posted").inc()
            if job.finished_at is not None and not undelivered:
                m.job_duration.labels(pipeline=job.pipeline).observe(max(0.0, job.finished_at - job.created_at))
        cost = job.cost_actual
        if cost is None and job.status is JobStatus.COMPLETED:
            cost = job.cost_estimate
        if cost is None and job.status is not JobStatus.COMPLETED:
            cost = job.state.get("image_step_cost")
        if cost:
            m.spend.labels(pipeline=job.pipeline).inc(float(cost))


class ObservedStore:
    """The app's store with its job writes counted (`JobObserver`); everything passes through."""

    def __init__(self, inner: Any, observer: JobObserver) -> None:
        self.inner = inner
        self.observer = observer

    async def create(self, job: Job, **kwargs: Any) -> Job:
        stored = await self.inner.create(job, **kwargs)
        self.observer.created(stored)
        return stored

    async def update(self, job_id: str, **fields: Any) -> Job:
        job = await self.inner.update(job_id, **fields)
        self.observer.written(job, fields)
        return job

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        if self.observer.metrics is None:
            return bool(await self.inner.claim(job_id, owner, lease_seconds))
        before = await self.inner.get(job_id)
        taken = await self.inner.claim(job_id, owner, lease_seconds)
        metrics = self.observer.metrics
        if metrics is not None and taken and before is not None and before.lease_owner and before.lease_owner != owner \
                and not before.status.terminal:
            metrics.lease_takeovers.inc()
        return taken

    async def get(self, job_id: str) -> Job | None:
        mark = self.observer.mark()
        job = await self.inner.get(job_id)
        if job is not None:
            self.observer.seen(job, read_from=mark)
        return job

    async def unfinished(self, *args: Any, **kwargs: Any) -> list[Job]:
        mark = self.observer.mark()
        jobs: list[Job] = await self.inner.unfinished(*args, **kwargs)
        for job in jobs:
            self.observer.seen(job, read_from=mark)
        return jobs

    async def claim_queued(self, *args: Any, **kwargs: Any) -> list[Job]:
        mark = self.observer.mark()
        jobs: list[Job] = await self.inner.claim_queued(*args, **kwargs)
        for job in jobs:
            self.observer.seen(job, read_from=mark)
        return jobs

    async def reopen_delivery(self, job_id: str, detail: str, **kwargs: Any) -> Job:
        job: Job = await self.inner.reopen_delivery(job_id, detail, **kwargs)
        self.observer.seen(job)
        return job

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
