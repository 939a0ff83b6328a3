"""Crash-proof core: lease holders, takeover without waiting, fenced writes, delivery that
is retried or kept, rate-limited creates, paid steps done once, remote work stopped."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App
from bot.core.errors import DeliveryFailed, JobStateError
from bot.core.models import Actor, GenerateRequest, Job, JobStatus, Origin
from bot.core.render import INTERRUPTED, job_row
from storage.jobs import AlreadyFinished, LeaseLost
from storage.leases import Holder, HolderState, holder_state, this_host
from tests.fakes.scripted_provider import ScriptedServer
from tests.stores import BACKENDS, backend_url, raw_sql
from tests.core.test_core_runner import make_app, req, user

pytestmark = pytest.mark.timeout(60)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition until it holds: tests wait for states, never for luck."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on PostgreSQL."""
    return backend_url(request)


async def sql(app: App, query: str, *args: Any) -> list[tuple[Any, ...]]:
    return await raw_sql(app.settings.core.database_url, app.settings.core.data_dir, query, *args)


async def force_lease(app: App, job_id: str, owner: str, until_: float) -> None:
    """What another process's runner would have written (a separate connection, as it would be)."""
    await sql(app, "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ?", owner, until_, job_id)


def a_dead_holder() -> str:
    """The lease owner text of a real process on this host that has been SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = Holder(this_host(), proc.pid, _start(proc.pid), "deadbeef")
        assert not holder.process_gone()
    finally:
        proc.kill()
        proc.wait()
    assert holder.process_gone()
    return str(holder)


def _start(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).create_time(), 2)


# --- leases -------------------------------------------------------------------------------------


def test_holder_states() -> None:
    me = Holder.current()
    assert Holder.parse(str(me)) == me
    assert holder_state(str(me), time.time() + 60) is HolderState.ALIVE
    assert holder_state(str(me), time.time() - 1) is HolderState.EXPIRED
    assert holder_state(a_dead_holder(), time.time() + 60) is HolderState.GONE
    # A reused pid: our own pid with another start time is not us.
    impostor = Holder(me.host, me.pid, me.started - 100, "x")
    assert impostor.process_gone()
    # Another host: alive until its lease runs out, whatever its pid.
    elsewhere = Holder("other-host~1234", 1, 1.0, "y")
    assert holder_state(str(elsewhere), time.time() + 60) is HolderState.ALIVE
    assert holder_state(str(elsewhere), time.time() - 1) is HolderState.EXPIRED
    assert holder_state(None, None) is None


async def test_a_dead_local_holders_jobs_are_taken_over_at_once(settings: Any) -> None:
    server = ScriptedServer()
    stored = await make_app(server, start=False)
    job = await stored.service.submit(req("left behind"), user("u"))
    await stored.store.update(job.id, status=JobStatus.RUNNING, remote_id=None)
    await stored.close()
    # Its holder died a second ago with 10 minutes of lease left: nobody waits for that lease.
    app = await make_app(server, start=False)
    try:
        await force_lease(app, job.id, a_dead_holder(), time.time() + 600)
        listed = await app.store.get(job.id)
        assert listed is not None and INTERRUPTED in job_row(listed)
        await app.store.update(job.id, status=JobStatus.QUEUED)
        started = time.monotonic()
        assert await app.runner.start() == 1
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
        assert time.monotonic() - started < 5
    finally:
        await app.close()


async def test_a_live_holder_and_an_unexpired_remote_holder_are_left_alone(settings: Any) -> None:
    server = ScriptedServer()
    app = await make_app(server, start=False)
    try:
        app.service.runner = None  # stored only, as `videobot generate --detach` does
        alive = await app.service.submit(req("held by a live process"), user("a"))
        remote = await app.service.submit(req("held on another machine"), user("b"))
        expired = await app.service.submit(req("lease ran out elsewhere"), user("c"))
        await force_lease(app, alive.id, str(Holder.current()), time.time() + 600)  # this process, another runner
        await force_lease(app, remote.id, str(Holder("other-host~1", 42, 1.0, "z")), time.time() + 600)
        await force_lease(app, expired.id, str(Holder("other-host~1", 42, 1.0, "z")), time.time() - 1)
        app.service.runner = app.runner
        assert await app.runner.start() == 1
        done = await asyncio.wait_for(app.runner.wait(expired.id), 10)
        assert done.status is JobStatus.COMPLETED
        assert not app.runner.owns(alive.id) and not app.runner.owns(remote.id)
        rows = {j.id: j for j in await app.store.list(limit=5)}
        assert INTERRUPTED not in job_row(rows[alive.id]) and INTERRUPTED not in job_row(rows[remote.id])
    finally:
        await app.close()


# --- fenced writes --------------------------------------------------------------------------------


async def test_a_runner_that_lost_its_lease_stops_writing(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_LEASE_SECONDS", "1.5")  # renewals every 0.5 s notice the loss
    server = ScriptedServer()
    server.release.clear()
    first = await make_app(server)
    second = await make_app(server, start=False)
    try:
        job = await first.service.submit(req("two drivers"), user("u"))
        await until(lambda: _status(first, job.id, JobStatus.RUNNING), what="running")
        # The second runner takes the job over (as after an expired lease on another host).
        await force_lease(first, job.id, second.runner.owner, time.time() + 600)
        with pytest.raises(LeaseLost):
            await first.store.update(job.id, fence=first.runner.owner, progress=55)
        # The first runner notices at its next write or renewal, and lets go without a word more.
        await until(lambda: _async(not first.runner.owns(job.id)), what="first runner to drop the job")
        events_before = await first.store.events(job.id)
        assert await second.runner.enqueue(await first.store.get(job.id))  # type: ignore[arg-type]
        await second.runner.start(resume=False)
        server.release.set()
        done = await asyncio.wait_for(second.runner.wait(job.id), 10)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
        after = await first.store.events(job.id)
        assert [e["status"] for e in after[len(events_before):]] == ["downloading", "delivering", "completed"]
    finally:
        await second.close()
        await first.close()


async def test_a_terminal_state_is_never_overwritten(app: App) -> None:
    job = await app.service.submit(GenerateRequest(prompt="finish me", seconds=1, size="128x72"), Origin(platform="cli", user_id="u"))
    done = await asyncio.wait_for(app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    with pytest.raises(AlreadyFinished):
        await app.store.update(job.id, status=JobStatus.FAILED, error_message="late writer")
    with pytest.raises(JobStateError):
        await app.service.cancel(job.id, Actor(user_id="u"))
    assert (await app.store.get(job.id)).status is JobStatus.COMPLETED  # type: ignore[union-attr]


async def test_a_cancel_from_another_process_stops_the_remote_job(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_LEASE_SECONDS", "1.5")
    server = ScriptedServer()
    server.release.clear()
    app = await make_app(server)
    cli = await make_app(server, start=False)  # `videobot cancel` in another process
    try:
        job = await app.service.submit(req("cancel me elsewhere"), user("u"))
        running = await until(lambda: _status(app, job.id, JobStatus.RUNNING), what="running")
        cli.service.runner = None
        await cli.service.cancel(job.id, Actor(user_id="u"))
        await until(lambda: _async(running.remote_id in server.cancels), what="remote cancel")
        final = await app.store.get(job.id)
        assert final is not None and final.status is JobStatus.CANCELLED

        async def noted() -> bool:
            # The history line is written after the provider's cancel returns: wait for it, not for luck.
            events = await app.store.events(job.id)
            return any("remote" in (e["detail"] or "") and "cancelled" in (e["detail"] or "") for e in events)

        await until(noted, what="the remote cancel in the job's history")
    finally:
        await cli.close()
        await app.close()


# --- delivery -------------------------------------------------------------------------------------


async def test_a_transient_delivery_failure_is_retried_and_posts_once(settings: Any) -> None:
    posted: list[tuple[str, int]] = []
    attempts: list[int] = []

    async def flaky(job: Job) -> dict[str, Any]:
        attempts.append(job.delivery_attempt)
        if len(attempts) < 3:
            raise DeliveryFailed("the chat is down", transient=True, retry_after=0.01)
        posted.append((job.id, job.delivery_attempt))
        return {"result_message_id": "m1"}

    app = await make_app(ScriptedServer(), deliver=flaky)
    try:
        job = await app.service.submit(req("deliver me"), user("u"))
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    finally:
        await app.close()
    assert done.status is JobStatus.COMPLETED and done.error_code is None
    assert attempts == [1, 2, 3] and posted == [(job.id, 3)]
    assert done.origin.result_message_id == "m1"


async def test_a_permanent_delivery_failure_keeps_the_result_for_redeliver(settings: Any) -> None:
    mode = {"broken": True}
    posts: list[int] = []

    async def channel(job: Job) -> None:
        if mode["broken"]:
            raise DeliveryFailed("The channel is gone. Run `videobot redeliver` once it is back.", transient=False)
        posts.append(job.delivery_attempt)

    server = ScriptedServer()
    app = await make_app(server, deliver=channel)
    try:
        job = await app.service.submit(req("no channel"), user("u"))
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        assert done.status is JobStatus.COMPLETED and done.error_code == "undelivered"
        assert "channel is gone" in (done.error_message or "") and Path(done.output_path or "").exists()
        assert "redeliver" in job_row(done)
        mode["broken"] = False
        again = await app.service.redeliver(job.id)
        assert again.status is JobStatus.DELIVERING
        done = await until(lambda: _status(app, job.id, JobStatus.COMPLETED), what="redelivered")
        assert done.error_code is None and posts == [2]
        assert len(server.creates) == 1, "delivered again, never generated again"
        with pytest.raises(JobStateError):
            await app.service.redeliver(job.id)
    finally:
        await app.close()


# --- rate limits, paid steps ------------------------------------------------------------------------


async def test_a_rate_limited_create_waits_and_is_sent_again(settings: Any) -> None:
    from providers.errors import RateLimited

    server = ScriptedServer()
    refusals = {"left": 2}
    notes: list[str | None] = []
    app = await make_app(server, start=False)
    provider = app.registry.get("scripted").video
    assert provider is not None
    original = provider.submit

    async def busy_then_ok(request: Any) -> Any:
        if refusals["left"]:
            refusals["left"] -= 1
            raise RateLimited("slow down", retry_after=0.05)
        return await original(request)

    provider.submit = busy_then_ok  # type: ignore[method-assign]

    async def record(event: Any) -> None:
        notes.append(event.message)

    app.bus.subscribe(record)
    await app.runner.start()
    try:
        job = await app.service.submit(req("popular provider"), user("u"))
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
        await app.bus.drain()
        events = await app.store.events(job.id)
    finally:
        await app.close()
    assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
    assert "waiting for the provider's rate limit" in notes
    assert any("rate limited" in (e["detail"] or "") for e in events)


async def test_an_image_made_before_a_crash_is_not_made_again(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ScriptedServer()
    app = await make_app(server, start=False)
    try:
        job = await app.service.submit(GenerateRequest(prompt="a still", kind="image", pipeline="local-image", size="256x256"), user("u"))
        # The image was written (atomically) but the crash came before the state write.
        final = app.media.image_path(job.id, "image.png")
        final.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (256, 256), (10, 200, 30)).save(final)
        generate = app.registry.get("local-image").image
        assert generate is not None

        async def must_not_run(*_: Any) -> Any:
            raise AssertionError("the image step ran twice")

        monkeypatch.setattr(generate, "generate", must_not_run)
        await app.runner.start()
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    finally:
        await app.close()
    assert done.status is JobStatus.COMPLETED and done.output_path == str(final)
    with Image.open(final) as image:
        assert image.getpixel((5, 5)) == (10, 200, 30)


async def test_closing_the_store_lets_writes_under_way_finish(app: App) -> None:
    job = await app.service.submit(GenerateRequest(prompt="closing time", seconds=1, size="128x72"), Origin(platform="cli", user_id="u"))
    await asyncio.wait_for(app.runner.wait(job.id), 20)
    await app.runner.stop()
    writes = [asyncio.create_task(app.store.add_event(job.id, f"note {i}")) for i in range(50)]
    await asyncio.sleep(0)
    for task in writes[::2]:
        task.cancel()  # a stop cancels the callers, not the shielded transactions
    await app.store.close()
    notes = await sql(app, "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND detail LIKE 'note %'", job.id)
    assert notes[0][0] == 50


# --- helpers ------------------------------------------------------------------------------------------


async def _status(app: App, job_id: str, status: JobStatus) -> Job | None:
    job = await app.store.get(job_id)
    return job if job is not None and job.status is status else None


async def _async(value: Any) -> Any:
    return value
