"""Issue 9's faults end to end through the emulators and real SDKs, and real kills of the CLI."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.core.models import Actor, EventKind, GenerateRequest, Job, JobStatus, Origin, ProgressEvent
from bot.core.runner import RATE_LIMIT_NOTE
from providers.openai_common import SORA_DEPRECATION
from providers.polling import PollPolicy
from tests.fakes.bfl_server import BflServer
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.runway_server import SECRET, RunwayServer
from tests.helpers import assert_video

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning"), pytest.mark.timeout(90)]
ORIGIN = Origin(platform="cli", user_id="tester")
REPO = Path(__file__).resolve().parents[2]


async def _no_delivery(job: Job) -> None:
    return None


@pytest.fixture
async def make_app(
    settings: Settings, runway_server: RunwayServer, bfl_server: BflServer, openai_server: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Callable[[], Awaitable[tuple[App, list[ProgressEvent]]]]]:
    env = {
        "RUNWAYML_API_SECRET": SECRET, "RUNWAYML_BASE_URL": runway_server.base_url, "RUNWAYML_POLL_SECONDS": "0.01",
        "RUNWAYML_RETRY_BACKOFF_SECONDS": "0.01", "BFL_API_KEY": "bfl-test-key", "BFL_BASE_URL": bfl_server.base_url,
        "BFL_POLL_SECONDS": "0.01", "BFL_RETRY_BACKOFF_SECONDS": "0.01",
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
    }  # fmt: skip
    from tests.fakes import bfl_server as bfl_module

    env["BFL_API_KEY"] = bfl_module.KEY
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    apps: list[App] = []

    async def factory() -> tuple[App, list[ProgressEvent]]:
        app = await open_app(load_settings())
        app.runner.poll_policy = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)
        app.runner.deliverers["cli"] = _no_delivery
        events: list[ProgressEvent] = []

        async def record(event: ProgressEvent) -> None:
            events.append(event)

        app.bus.subscribe(record)
        await app.runner.start()
        apps.append(app)
        return app, events

    try:
        yield factory
    finally:
        for app in apps:
            await app.close()


async def run(app: App, request: GenerateRequest) -> Job:
    job = await app.service.submit(request, ORIGIN)
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


def rate_limit_shown(events: list[ProgressEvent], job: Job) -> bool:
    return any(e.job.id == job.id and e.message == RATE_LIMIT_NOTE for e in events)


# --- a 429 on a create bills nothing: it is waited out and sent again ---------------------------


async def test_sora_429_on_create_is_retried_after_retry_after(make_app: Any, openai_server: OpenAIEmulator) -> None:
    app, events = await make_app()
    openai_server.fail("create", 429, code="rate_limit_exceeded", headers={"Retry-After": "0"}, times=3)
    job = await run(app, GenerateRequest(prompt="a busy day", pipeline="sora", seconds=4))
    await app.bus.drain()
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.creates) == 4 and len(openai_server.videos) == 1  # three refused, one made
    assert rate_limit_shown(events, job)
    assert_video(job.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


async def test_sora_429_without_retry_after_backs_off_and_succeeds(make_app: Any, openai_server: OpenAIEmulator) -> None:
    app, events = await make_app()
    openai_server.fail("create", 429, code="rate_limit_exceeded", times=2)
    job = await run(app, GenerateRequest(prompt="no hint given", pipeline="sora", seconds=4))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.videos) == 1


async def test_runway_429s_beyond_the_clients_own_retries_are_waited_out(make_app: Any, runway_server: RunwayServer) -> None:
    app, events = await make_app()
    runway_server.fail("POST", "/v1/text_to_video", 429, times=5)
    job = await run(app, GenerateRequest(prompt="a crowded api", pipeline="runway", seconds=5))
    await app.bus.drain()
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(runway_server.creates()) == 6 and len(runway_server.tasks) == 1
    assert rate_limit_shown(events, job)


async def test_bfl_429_on_the_image_step_is_waited_out(make_app: Any, bfl_server: BflServer, runway_server: RunwayServer) -> None:
    app, events = await make_app()
    bfl_server.fail("POST", "/v1/", 429, times=4)
    job = await run(app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="flux+runway", seconds=4, size="720x1280"))
    await app.bus.drain()
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(bfl_server.tasks) == 1 and len(runway_server.tasks) == 1
    assert rate_limit_shown(events, job)


# --- a crash between sending a create and storing its id -------------------------------------------


async def _interrupted_create(app: App, openai_server: OpenAIEmulator, *, accepted: bool, sent_ago: float) -> Job:
    """A job as a SIGKILL between the create call and the id write leaves it."""
    openai_server.hold = True
    job = await app.service.submit(GenerateRequest(prompt="cut off mid-create", pipeline="sora", seconds=4), ORIGIN)
    running = await _until(app, job.id, lambda j: j.remote_id is not None)
    await app.runner.stop()
    if not accepted:
        openai_server.videos.clear()
    state = {**running.state, "submit_sent_to": "sora", "submit_sent_at": time.time() - sent_ago}
    await app.store.update(job.id, status=JobStatus.SUBMITTING, remote_id=None, state=state)
    await app.close()
    return running


async def test_an_accepted_create_is_found_and_adopted_after_a_crash(make_app: Any, openai_server: OpenAIEmulator) -> None:
    first, _ = await make_app()
    before = await _interrupted_create(first, openai_server, accepted=True, sent_ago=30)
    openai_server.hold = False
    again, _ = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 20)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == before.remote_id and len(openai_server.creates) == 1


async def test_a_create_that_never_arrived_is_sent_once_more(make_app: Any, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.openai_videos import OpenAIVideoProvider

    monkeypatch.setattr(OpenAIVideoProvider, "ABSENCE_GRACE_SECONDS", 0.3)
    first, _ = await make_app()
    before = await _interrupted_create(first, openai_server, accepted=False, sent_ago=0)
    openai_server.hold = False
    started = time.monotonic()
    again, _ = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 20)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert time.monotonic() - started >= 0.2, "the lookup waits out the grace period before trusting a miss"
    assert len(openai_server.videos) == 1 and done.remote_id != before.remote_id


async def test_two_matching_videos_are_not_guessed_between(make_app: Any, openai_server: OpenAIEmulator) -> None:
    first, _ = await make_app()
    before = await _interrupted_create(first, openai_server, accepted=True, sent_ago=30)
    twin = openai_server._new_job(model="sora-2", prompt=before.prompt, seconds=4, size="1280x720", kind="create")
    assert twin.id != before.remote_id
    openai_server.hold = False
    again, _ = await make_app()
    done = await asyncio.wait_for(again.runner.wait(before.id), 20)
    assert done.status is JobStatus.FAILED and "not sent again" in (done.error_message or "")
    assert len(openai_server.videos) == 2


# --- remote work is stopped when a job ends early ------------------------------------------------


async def test_cancel_while_running_deletes_the_remote_video(make_app: Any, openai_server: OpenAIEmulator) -> None:
    app, _ = await make_app()
    openai_server.hold = True
    job = await app.service.submit(GenerateRequest(prompt="stop me", pipeline="sora", seconds=4), ORIGIN)
    running = await _until(app, job.id, lambda j: j.remote_id is not None and j.status is JobStatus.RUNNING)
    await app.service.cancel(job.id, Actor(user_id=ORIGIN.user_id))
    done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    assert [r.path for r in openai_server.calls("delete")] == [f"/v1/videos/{running.remote_id}"]
    assert any("cancelled at sora" in (e["detail"] or "") for e in await app.store.events(job.id))


async def test_a_job_that_fails_while_its_remote_job_runs_deletes_it(make_app: Any, openai_server: OpenAIEmulator) -> None:
    app, _ = await make_app()
    openai_server.hold = True
    job = await app.service.submit(GenerateRequest(prompt="the poller gives up", pipeline="sora", seconds=4), ORIGIN)
    running = await _until(app, job.id, lambda j: j.remote_id is not None and j.status is JobStatus.RUNNING)
    openai_server.fail("retrieve", 500, times=50)  # the provider stops answering: unavailable after retries
    done = await asyncio.wait_for(app.runner.wait(job.id), 20)
    assert done.status is JobStatus.FAILED and done.error_code == "unavailable"
    assert [r.path for r in openai_server.calls("delete")] == [f"/v1/videos/{running.remote_id}"]
    assert any("remote" in (e["detail"] or "") for e in await app.store.events(job.id))


# --- the default pipeline is the best configured one -----------------------------------------------


async def test_the_default_pipeline_is_the_best_configured(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    app = await open_app(load_settings())
    try:
        assert app.service.default_pipeline(image=False) == "local"
        assert app.service.default_pipeline(image=True) == "local-image"
    finally:
        await app.close()
    monkeypatch.setenv("RUNWAYML_API_SECRET", "key_x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    app = await open_app(load_settings())
    try:
        assert app.service.default_pipeline(image=False) == "runway"
        assert app.service.default_pipeline(image=True) == "gpt-image"
    finally:
        await app.close()
    monkeypatch.setenv("VIDEOBOT_DEFAULT_PIPELINE", "sora")
    app = await open_app(load_settings())
    try:
        assert app.service.default_pipeline(image=False) == "sora"
    finally:
        await app.close()
    out = _cli(Path.cwd(), "pipelines", env={"RUNWAYML_API_SECRET": "key_x", "OPENAI_API_KEY": "sk-x"})
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line and not line.startswith(" ")}
    assert "(default for video)" in lines["runway"] and "(default for image)" in lines["gpt-image"]
    assert "default" not in lines["local"]


# --- real processes, real kills ------------------------------------------------------------------


def test_kill_9_during_generate_then_run_finishes_it(tmp_path: Path) -> None:
    """The issue's own reproduction: generate killed with SIGKILL, then `videobot run </dev/null`."""
    env = _env(tmp_path)
    env.pop("VIDEOBOT_LOCAL_FPS")  # 24 fps: a render long enough to be killed in the middle
    db = tmp_path / "data" / "videobot.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "generate", "a slow pan across a lake", "--seconds", "6", "--size", "640x360"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_db(db, "SELECT 1 FROM jobs WHERE status = 'running'")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    listing = _cli(tmp_path, "jobs").stdout
    assert "interrupted: resumes when the bot runs" in listing, listing
    started = time.monotonic()
    resumed = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed 1 unfinished job" in resumed.stdout
    assert time.monotonic() - started < 45
    with sqlite3.connect(db) as conn:
        (job_id, status, path) = conn.execute("SELECT id, status, output_path FROM jobs").fetchone()
        statuses = [row[0] for row in conn.execute("SELECT status FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))]
    assert status == "completed"
    assert statuses == ["queued", "submitting", "running", "downloading", "delivering", "completed"]
    # Stored relative to the media directory (VIDEOBOT_MEDIA_DIR, by default under the data dir).
    assert_video(tmp_path / "data" / "media" / path, width=640, height=360, seconds=6)
    assert "interrupted" not in _cli(tmp_path, "jobs").stdout


def test_run_with_closed_stdin_waits_for_detached_jobs(tmp_path: Path) -> None:
    env = _env(tmp_path)
    ids = [_cli(tmp_path, "generate", f"detached {i}", "--seconds", "1", "--size", "128x72", "--detach").stdout.strip() for i in range(3)]
    assert all(len(i) == 8 for i in ids)
    resumed = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert resumed.returncode == 0 and "resumed 3 unfinished jobs" in resumed.stdout, resumed.stdout + resumed.stderr
    for job_id in ids:
        assert "status: completed" in _cli(tmp_path, "show", job_id).stdout


def test_sigterm_under_load_stops_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, VIDEOBOT_MAX_CONCURRENT_JOBS="3", VIDEOBOT_MAX_RUNNING_PER_USER="3")
    env.pop("VIDEOBOT_LOCAL_FPS")
    db = tmp_path / "data" / "videobot.sqlite3"
    # Files, not pipes: nobody reads the output while the bot runs, and a full pipe would stall it.
    out_file, err_file = (tmp_path / "out.log").open("w+"), (tmp_path / "err.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
        stdout=out_file, stderr=err_file, text=True,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        for i in range(6):
            proc.stdin.write(f"/video a stopped take {i} --seconds 4 --size 640x360\n")
        proc.stdin.flush()
        _wait_db(db, "SELECT 1 WHERE (SELECT COUNT(*) FROM jobs) = 6")  # every command answered
        _wait_db(db, "SELECT 1 FROM jobs WHERE status = 'running' GROUP BY status HAVING COUNT(*) >= 2")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        err = (tmp_path / "err.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "closed database" not in err and "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 6
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE lease_owner IS NOT NULL").fetchone()[0] == 0, "a stop lets go of its leases"
    listing = _cli(tmp_path, "jobs").stdout
    assert "interrupted: resumes when the bot runs" in listing
    finished = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0 and "resumed" in finished.stdout, finished.stderr
    with sqlite3.connect(db) as conn:
        assert {row[0] for row in conn.execute("SELECT status FROM jobs")} == {"completed"}


# --- helpers ---------------------------------------------------------------------------------------


async def _until(app: App, job_id: str, check: Callable[[Job], bool], timeout: float = 10) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await app.store.get(job_id)
        if job is not None and check(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} never reached the expected state ({job.status if job else None})"
        await asyncio.sleep(0.01)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "SLACK_", "DISCORD_"))}
    env.update(VIDEOBOT_DATA_DIR=str(tmp_path / "data"), VIDEOBOT_LOCAL_FPS="12", PYTHONPATH=str(REPO), **extra)
    return env


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=_env(cwd, **(env or {})), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


def _wait_db(db: Path, query: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    if conn.execute(query).fetchone():
                        return
            except sqlite3.OperationalError:
                pass  # not created yet, or busy: look again
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {query}")
