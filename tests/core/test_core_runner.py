"""Runner behaviour: fairness, caps, queue positions, cancel, restart without double work."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import load_settings
from bot.core.errors import LimitReached
from bot.core.requests import video_request_for
from bot.core.models import Actor, EventKind, GenerateRequest, Job, JobStatus, Origin, ProgressEvent
from providers.polling import PollPolicy
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.helpers import assert_video
from tests.stores import BACKENDS, backend_url

FAST = PollPolicy(interval=0.01, min_interval=0.005, backoff_base=0.01)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return backend_url(request)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition; fail saying what never happened (a generous bound: not a timing claim)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} never happened within {timeout:g}s")
        await asyncio.sleep(0.005)


async def _status(app: App, job_id: str) -> JobStatus | None:
    job = await app.store.get(job_id)
    return job.status if job else None


async def _noop(job: Job) -> None:
    return None


async def make_app(server: ScriptedServer, *, deliver: Any = _noop, start: bool = True, **kw: Any) -> App:
    app = await open_app(load_settings())
    app.registry.register("scripted", lambda: scripted_pipeline(server, **kw))
    app.runner.poll_policy = FAST
    app.runner.deliverers["cli"] = deliver
    if start:
        await app.runner.start()
    return app


def req(prompt: str = "a lighthouse at dusk", **kw: Any) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, pipeline="scripted", seconds=1, size="128x72", **kw)


def user(name: str) -> Origin:
    return Origin(platform="cli", user_id=name)


async def _record(app: App) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []

    async def handler(event: ProgressEvent) -> None:
        events.append(event)

    app.bus.subscribe(handler)
    return events


@pytest.fixture
def one_at_a_time(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_MAX_CONCURRENT_JOBS", "1")
    monkeypatch.setenv("VIDEOBOT_MAX_RUNNING_PER_USER", "1")


async def test_one_users_many_jobs_do_not_starve_anothers_one(one_at_a_time: None) -> None:
    server = ScriptedServer()
    app = await make_app(server, start=False)
    try:
        events = await _record(app)
        greedy = [await app.service.submit(req(f"greedy {i}"), user("greedy")) for i in range(6)]
        other = await app.service.submit(req("patient"), user("patient"))
        await app.runner.start()
        await asyncio.gather(*(app.runner.wait(j.id) for j in [*greedy, other]))
        await app.bus.drain()
        starts = [e.job.id for e in events if e.kind is EventKind.STARTED]
        assert starts.index(other.id) == 1, "the second user's job must start right after the first job"
        queued = {e.job.id: e.position for e in events if e.kind is EventKind.QUEUED and e.job.id == other.id}
        assert queued[other.id] is not None
    finally:
        await app.close()


async def test_queue_positions_are_reported_and_move_up(one_at_a_time: None) -> None:
    server = ScriptedServer()
    server.release.clear()
    app = await make_app(server)
    try:
        events = await _record(app)
        jobs = [await app.service.submit(req(f"clip {i}"), user("u")) for i in range(3)]

        async def first_running() -> bool:
            return await _status(app, jobs[0].id) is JobStatus.RUNNING

        await until(first_running, "the first job running (the other two waiting behind it)")
        assert app.runner.position(jobs[1].id) == 1 and app.runner.position(jobs[2].id) == 2
        server.release.set()
        await asyncio.gather(*(app.runner.wait(j.id) for j in jobs))
        await app.bus.drain()
        third = [e.position for e in events if e.kind is EventKind.QUEUED and e.job.id == jobs[2].id]
        assert third == [2, 1], "queued second in line, then first"
    finally:
        await app.close()


async def test_per_user_running_cap_and_queue_limit(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_MAX_CONCURRENT_JOBS", "4")
    monkeypatch.setenv("VIDEOBOT_MAX_RUNNING_PER_USER", "1")
    monkeypatch.setenv("VIDEOBOT_MAX_QUEUED_PER_USER", "3")
    server = ScriptedServer()
    server.release.clear()
    app = await make_app(server)
    try:
        jobs = [await app.service.submit(req(f"clip {i}"), user("u")) for i in range(3)]
        with pytest.raises(LimitReached, match="limit is 3"):
            await app.service.submit(req("one too many"), user("u"))
        assert len(await app.store.list(user_id="u")) == 3, "a refused job leaves no row"
        other = await app.service.submit(req("someone else"), user("v"))

        async def others_running() -> bool:
            # u's jobs came first: by the time v's runs, u's would all run too if the cap let them.
            return await _status(app, other.id) is JobStatus.RUNNING and len(server.creates) >= 2

        await until(others_running, "the second user's job running")
        running = await app.store.list(statuses=[JobStatus.RUNNING])
        assert sorted(j.origin.user_id for j in running) == ["u", "v"], "one running job per user"
        server.release.set()
        done = await asyncio.gather(*(app.runner.wait(j.id) for j in [*jobs, other]))
        assert all(j.status is JobStatus.COMPLETED for j in done)
    finally:
        await app.close()


async def test_cancel_queued_and_running_jobs(one_at_a_time: None) -> None:
    server = ScriptedServer()
    server.release.clear()
    app = await make_app(server)
    try:
        running = await app.service.submit(req("first"), user("u"))
        queued = await app.service.submit(req("second"), user("u"))

        async def first_running() -> bool:
            return await _status(app, running.id) is JobStatus.RUNNING

        await until(first_running, "the first job running")
        q = await app.service.cancel(queued.id, Actor(user_id="u"))
        assert q.status is JobStatus.CANCELLED
        r = await app.service.cancel(running.id, Actor(user_id="u"))
        assert r.status is JobStatus.CANCELLED
        assert server.cancels == [r.remote_id], "the remote job is cancelled too"
        assert len(server.creates) == 1, "the queued job never reached the provider"
        with pytest.raises(Exception, match="already cancelled"):
            await app.service.cancel(running.id, Actor(user_id="u"))
    finally:
        await app.close()


async def test_cancel_needs_owner_or_admin(app: App) -> None:
    server = ScriptedServer()
    server.release.clear()
    app.registry.register("scripted", lambda: scripted_pipeline(server))
    job = await app.service.submit(req("mine"), user("owner"))
    with pytest.raises(Exception, match="Only the person who asked"):
        await app.service.cancel(job.id, Actor(user_id="stranger"))
    assert (await app.service.cancel(job.id, Actor(user_id="mod", platform="cli"))).status is JobStatus.CANCELLED


async def test_restart_mid_job_completes_exactly_once(settings: Any) -> None:
    server = ScriptedServer()
    server.release.clear()
    first = await make_app(server)
    job = await first.service.submit(req("survives a restart"), user("u"))

    async def running_remotely() -> bool:
        current = await first.store.get(job.id)
        return bool(current and current.remote_id and current.progress > 0)

    try:
        # Else "resume without a second create" could silently become "restart before the create".
        await until(running_remotely, "the remote id stored (and progress polled) before the restart")
        assert len(server.creates) == 1
    finally:
        await first.close()  # the process goes away mid-job

    delivered: list[str] = []

    async def deliver(j: Job) -> dict[str, Any]:
        delivered.append(j.id)
        return {"result_message_id": "msg-1"}

    second = await make_app(server, deliver=deliver)
    try:
        events = await _record(second)
        server.release.set()
        done = await asyncio.wait_for(second.runner.wait(job.id), 10)
        await second.bus.drain()
        assert done.status is JobStatus.COMPLETED and done.origin.result_message_id == "msg-1"
        assert len(server.creates) == 1, "the provider was asked to create the video once"
        assert delivered == [job.id]
        assert [e.kind for e in events if e.kind is EventKind.COMPLETED] == [EventKind.COMPLETED]
        statuses = [e["status"] for e in await second.store.events(job.id)]
        assert statuses.count("running") == 1 and statuses.count("completed") == 1
        assert_video(done.output_path, width=128, height=72, seconds=1)
    finally:
        await second.close()


async def test_restart_while_delivering_delivers_without_downloading_again(settings: Any) -> None:
    server = ScriptedServer()
    stuck = asyncio.Event()

    async def hang(job: Job) -> None:
        stuck.set()
        await asyncio.Event().wait()  # the chat API never answers; then the process dies

    first = await make_app(server, deliver=hang)
    job = await first.service.submit(req("deliver me"), user("u"))
    await asyncio.wait_for(stuck.wait(), 10)
    assert (await first.store.get(job.id)).status is JobStatus.DELIVERING  # type: ignore[union-attr]
    await first.close()

    delivered: list[str] = []

    async def deliver(j: Job) -> None:
        delivered.append(j.id)

    second = await make_app(server, deliver=deliver)
    try:
        done = await asyncio.wait_for(second.runner.wait(job.id), 10)
        assert done.status is JobStatus.COMPLETED
        assert delivered == [job.id]
        assert len(server.creates) == 1 and len(server.downloads) == 1
    finally:
        await second.close()


async def test_crash_between_create_and_storing_the_id_is_not_sent_twice(settings: Any) -> None:
    server = ScriptedServer()
    app = await make_app(server, start=False)
    job = await app.service.submit(req("ambiguous"), user("u"))
    # What the store holds if the process died after sending the create, before the answer.
    await app.store.update(job.id, status=JobStatus.SUBMITTING, state={"submit_sent_to": "scripted"})
    await app.runner.start()
    try:
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        assert done.status is JobStatus.FAILED
        assert "To avoid paying twice it was not sent again" in (done.error_message or "")
        assert server.creates == []
    finally:
        await app.close()


async def test_crash_between_create_and_storing_the_id_is_adopted_when_findable(settings: Any) -> None:
    server = ScriptedServer()
    app = await make_app(server, start=False, findable=True)
    job = await app.service.submit(req("ambiguous"), user("u"))
    provider = app.registry.get("scripted").video
    assert provider is not None
    # The create reached the provider, then the process died before storing the id.
    await provider.submit(video_request_for(job))
    await app.store.update(job.id, status=JobStatus.SUBMITTING, state={"submit_sent_to": "scripted"})
    await app.runner.start()
    try:
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        assert done.status is JobStatus.COMPLETED
        assert len(server.creates) == 1
    finally:
        await app.close()


async def test_failed_remote_job_is_explained(settings: Any) -> None:
    server = ScriptedServer(fail_job=("moderation_blocked", "The prompt was blocked."))
    app = await make_app(server)
    try:
        job = await app.service.submit(req("bad"), user("u"))
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        assert done.status is JobStatus.FAILED and done.error_code == "generation_failed"
        assert done.error_message == "The provider could not make this video [moderation_blocked]: The prompt was blocked."
    finally:
        await app.close()


async def test_cancel_from_another_process_stops_the_running_job(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_LEASE_SECONDS", "1")
    server = ScriptedServer()
    server.release.clear()
    bot = await make_app(server)
    cli = await make_app(server, start=False)  # `videobot cancel` in a second process
    try:
        events = await _record(bot)
        job = await bot.service.submit(req("long one"), user("u"))

        async def created() -> bool:
            return bool((await bot.store.get(job.id)).remote_id)  # type: ignore[union-attr]

        await until(created, "the remote id stored before the cancel")
        await cli.service.cancel(job.id, Actor(user_id="ops", platform="cli"))
        done = await asyncio.wait_for(bot.runner.wait(job.id), 5)
        await bot.bus.drain()
        assert done.status is JobStatus.CANCELLED
        assert server.cancels == [done.remote_id]
        assert [e.kind for e in events if e.job.id == job.id][-1] is EventKind.CANCELLED
    finally:
        await cli.close()
        await bot.close()


async def test_two_processes_never_run_the_same_job(settings: Any) -> None:
    server = ScriptedServer()
    server.release.clear()
    first = await make_app(server)
    second = await make_app(server)  # starts with resume: sees the job but cannot lease it
    try:
        job = await first.service.submit(req("only once"), user("u"))

        async def running() -> bool:
            return await _status(first, job.id) is JobStatus.RUNNING

        await until(running, "the job running in the first process")
        await second.runner._adopt_unfinished()
        assert not second.runner.owns(job.id)
        server.release.set()
        done = await asyncio.wait_for(first.runner.wait(job.id), 5)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
    finally:
        await second.close()
        await first.close()


async def test_a_job_enqueued_twice_at_once_is_driven_once(settings: Any) -> None:
    """Two callers hand the runner the same job nobody holds at the same moment (the adopt loop
    and `redeliver`, say): both wait on the lease claim, which is ours for both. One driver only,
    else the job is created (and paid for) twice and posted twice."""
    server = ScriptedServer()
    first = await make_app(server, start=False)
    job = await first.service.submit(req("enqueued twice"), user("u"))
    await first.store.update(job.id, status=JobStatus.SUBMITTING)  # a process died after starting it
    await first.close()  # its leases are released

    delivered: list[str] = []

    async def deliver(j: Job) -> None:
        delivered.append(j.id)

    app = await make_app(server, deliver=deliver, start=False)
    try:
        await app.runner.start(resume=False)
        left = await app.store.get(job.id)
        assert left is not None and left.lease_owner is None
        assert await asyncio.gather(app.runner.enqueue(left), app.runner.enqueue(left)) == [True, True]
        drivers = [t for t in asyncio.all_tasks() if t.get_name() == f"job-{job.id}"]
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        await asyncio.wait_for(asyncio.gather(*drivers, return_exceptions=True), 10)
        assert len(drivers) == 1, "the job was driven twice at once"
        assert done.status is JobStatus.COMPLETED
        assert len(server.creates) == 1 and delivered == [job.id]
    finally:
        await app.close()
