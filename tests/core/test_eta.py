"""An ETA appears on queued and running jobs once enough similar jobs have finished."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from bot.core.eta import EtaBook
from bot.core.models import EventKind, GenerateParams, Job, JobKind, JobStatus, Origin, ProgressEvent
from bot.core.render import status_line
from tests.fakes.scripted_provider import ScriptedServer
from tests.core.test_core_runner import _record, make_app, req, user


def _job(started: float | None, finished: float | None = None, *, seconds: int = 4, status: JobStatus = JobStatus.RUNNING) -> Job:
    return Job(
        id="j", kind=JobKind.GENERATE, origin=Origin(), prompt="p", params=GenerateParams(seconds=seconds, size="128x72", seed=1),
        pipeline="local", status=status, created_at=(started or time.time()) - 1, started_at=started, finished_at=finished,
    )  # fmt: skip


def test_the_median_of_similar_jobs_once_there_are_enough() -> None:
    book = EtaBook(min_samples=3)
    now = time.time()
    for run in (30.0, 50.0):
        book.observe(_job(now - run, now, status=JobStatus.COMPLETED))
    assert book.remaining(_job(now - 10), now=now) is None, "two samples are not enough"
    book.observe(_job(now - 40, now, status=JobStatus.COMPLETED))
    book.observe(_job(now - 99, now, seconds=8, status=JobStatus.COMPLETED))  # another length: not alike
    assert book.remaining(_job(now - 10), now=now) == 30.0  # median 40, ran 10
    assert book.remaining(_job(None), now=now, position=5, parallel=2) == 40.0 * 3
    line = status_line(ProgressEvent(kind=EventKind.PROGRESS, job=_job(now - 10), progress=25, eta=30.0))
    assert "ETA 0:30" in line


async def test_the_runner_puts_an_eta_on_events_after_enough_samples(settings: Any) -> None:
    app = await make_app(ScriptedServer())
    try:
        events = await _record(app)
        for i in range(3):
            job = await app.service.submit(req(f"sample {i}"), user("u"))
            await asyncio.wait_for(app.runner.wait(job.id), 10)
        await app.bus.drain()
        assert all(e.eta is None for e in events), "no ETA before three similar jobs finished"
        job = await app.service.submit(req("now with an eta"), user("u"))
        await asyncio.wait_for(app.runner.wait(job.id), 10)
        await app.bus.drain()
        mine = [e for e in events if e.job.id == job.id and e.kind in (EventKind.STARTED, EventKind.PROGRESS)]
        assert mine and all(e.eta is not None for e in mine)
    finally:
        await app.close()
