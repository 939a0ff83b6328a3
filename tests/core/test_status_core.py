"""The core's share of the chat experience: status views, rate budgets, the upload policy, actions."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from pathlib import Path

import pytest

from bot.app import App
from bot.core.actions import perform, reaction_action
from bot.core.errors import JobStateError
from bot.core.models import Actor, EventKind, GenerateParams, GenerateRequest, Job, JobKind, JobStatus, Origin, ProgressEvent
from bot.core.pacing import SENT_KEPT, RateScheduler, SchedulerPool, Throttled
from bot.core.uploads import prepare_upload
from bot.core.views import Action, Phase, status_view
from tests.helpers import assert_video


def _job(kind: JobKind = JobKind.GENERATE, status: JobStatus = JobStatus.RUNNING, **kw: object) -> Job:
    return Job(
        id="abcd2345", kind=kind, origin=Origin(), prompt="a kite", params=GenerateParams(seconds=4, size="128x72", seed=1),
        pipeline="local", status=status, created_at=time.time() - 5, started_at=time.time() - 4, **kw,
    )  # fmt: skip


def test_views_offer_the_buttons_of_their_state() -> None:
    running = status_view(_job(), ProgressEvent(kind=EventKind.PROGRESS, job=_job(), progress=40, eta=12.0))
    assert running.phase is Phase.RUNNING and running.percent == 40 and running.actions == (Action.CANCEL,)
    assert running.eta == "0:12" and "40%" in running.line and not running.final
    queued = status_view(_job(status=JobStatus.QUEUED), ProgressEvent(kind=EventKind.QUEUED, job=_job(), position=3))
    assert queued.position == 3 and queued.actions == (Action.CANCEL,)
    video = status_view(_job(status=JobStatus.COMPLETED, finished_at=time.time()), ProgressEvent(kind=EventKind.COMPLETED, job=_job()))
    assert video.actions == (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DELETE) and video.final
    image = _job(JobKind.IMAGE, JobStatus.COMPLETED, finished_at=time.time())
    assert status_view(image).actions == (Action.ANIMATE, Action.REROLL, Action.DELETE)
    failed = _job(status=JobStatus.FAILED, error_message="Rejected by the provider's content policy.")
    view = status_view(failed)
    assert view.phase is Phase.FAILED and view.error and "content policy" in view.error and view.actions == (Action.REROLL,)
    assert status_view(_job(status=JobStatus.COMPLETED, deleted_at=time.time())).actions == ()
    assert status_view(_job(status=JobStatus.COMPLETED, media_expired_at=time.time())).actions == ()


async def test_eight_busy_messages_share_one_budget_and_every_final_arrives() -> None:
    sent: list[tuple[float, Hashable, str]] = []

    async def send(key: Hashable, payload: str) -> None:
        sent.append((time.monotonic(), key, payload))

    # 10 per second here stands for Slack's 50 per minute: the same rule, a quicker test.
    scheduler: RateScheduler[str] = RateScheduler(send, rate=10, per=1.0, name="workspace")
    start = time.monotonic()
    for tick in range(40):
        for job in range(8):
            scheduler.offer(job, f"{job}:{tick}")
        await asyncio.sleep(0.025)
    for job in range(8):
        scheduler.offer(job, f"{job}:final", final=True)
    await asyncio.wait_for(scheduler.drain(), 10)
    await scheduler.close()
    times = [t for t, _, _ in sent]
    for t in times:
        in_window = [u for u in times if t <= u < t + 1.0]
        assert len(in_window) <= 11, f"{len(in_window)} sends in one second against a budget of 10"
    last = {key: payload for _, key, payload in sent}
    assert last == {job: f"{job}:final" for job in range(8)}, "the final state of every message is sent"
    assert len(sent) < 8 * 41, "intermediate states were coalesced"
    assert time.monotonic() - start < 5


async def test_a_429_slows_the_scheduler_down_instead_of_retrying_blindly() -> None:
    calls: list[float] = []

    async def send(key: Hashable, payload: str) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise Throttled(retry_after=0.2)

    scheduler: RateScheduler[str] = RateScheduler(send, rate=20, per=1.0)
    scheduler.offer("m", "state", final=True)
    await asyncio.wait_for(scheduler.drain(), 5)
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.19 and calls[2] - calls[1] >= 0.19
    assert scheduler.rate < 20
    await scheduler.close()


async def test_the_upload_policy_fits_or_falls_back_to_a_still(app: App) -> None:
    job = await app.service.submit(GenerateRequest(prompt="a big file", seconds=2, size="640x360"), Origin(platform="cli", user_id="u"))
    job = await asyncio.wait_for(app.runner.wait(job.id), 30)
    size = Path(job.output_path or "").stat().st_size
    whole = await prepare_upload(job, size + 1)
    assert whole.path == Path(job.output_path or "") and whole.note is None
    fitted = await prepare_upload(job, int(size * 0.6))
    assert fitted.path is not None and fitted.path.stat().st_size <= size * 0.6 and "Re-encoded" in (fitted.note or "")
    width, height = fitted_width(fitted.path), fitted_height(fitted.path)
    assert width <= 640 and height <= 360 and abs(width / height - 16 / 9) < 0.02, "never larger, same shape"
    assert_video(fitted.path, width=width, height=height, seconds=2, tolerance=0.2)
    still = await prepare_upload(job, 2_000)
    assert still.is_still and "could not be shrunk" in (still.note or "")


def fitted_width(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return int(c.streams.video[0].codec_context.width)


def fitted_height(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return int(c.streams.video[0].codec_context.height)


async def test_one_meaning_per_action(app: App) -> None:
    owner = Origin(platform="cli", user_id="owner")
    image = await app.service.submit(GenerateRequest(prompt="a red kite", kind="image", size="256x144"), owner)
    image = await asyncio.wait_for(app.runner.wait(image.id), 20)
    assert reaction_action("🔁") is Action.REROLL and reaction_action("❌") is Action.CANCEL and reaction_action("👍") is None
    animated = await perform(app.service, Action.ANIMATE, image.id, actor=Actor(user_id="other"), origin=owner.model_copy(update={"user_id": "other"}))
    assert animated.started and animated.job.params.image_path and animated.job.parent_id == image.id
    assert animated.job.prompt == "a red kite" and animated.job.origin.user_id == "other"
    video = await asyncio.wait_for(app.runner.wait(animated.job.id), 30)
    assert video.status is JobStatus.COMPLETED
    with pytest.raises(JobStateError, match="Animate makes a video from an image"):
        await perform(app.service, Action.ANIMATE, video.id, actor=Actor(user_id="owner"), origin=owner)
    dm = await perform(app.service, Action.DM, video.id, actor=Actor(user_id="owner"), origin=owner)
    assert dm.file_path == video.output_path
    # ❌ on a finished job removes it.
    removed = await perform(app.service, Action.CANCEL, video.id, actor=Actor(user_id="other"), origin=owner)
    assert removed.job.deleted_at is not None


async def test_audio_asked_in_chat_survives_to_the_upload(app: App) -> None:
    from bot.core.commands import parse_command
    from bot.core.dispatch import run_command
    from tests.helpers import assert_audio, assert_no_audio

    reply = await run_command(app.service, parse_command("/video a choir in a cathedral --audio --seconds 2 --size 320x180"), Origin(platform="cli", user_id="u"))
    assert reply.job is not None
    job = await asyncio.wait_for(app.runner.wait(reply.job.id), 30)
    assert job.status is JobStatus.COMPLETED
    assert_audio(job.output_path or "", seconds=2)
    fitted = await prepare_upload(job, int(Path(job.output_path or "").stat().st_size * 0.7))
    assert fitted.path is not None and fitted.note and "Re-encoded" in fitted.note
    assert_audio(fitted.path, seconds=2, tolerance=0.2)
    silent = await app.service.submit(GenerateRequest(prompt="a silent film", seconds=1, size="320x180"), Origin(platform="cli", user_id="u"))
    silent = await asyncio.wait_for(app.runner.wait(silent.id), 30)
    assert_no_audio(silent.output_path or "")


async def test_a_pool_retires_idle_schedulers_and_keeps_bounded_records() -> None:
    gate = asyncio.Event()

    async def send(key: Hashable, payload: str) -> None:
        if payload == "hold":
            await gate.wait()

    pool: SchedulerPool[str] = SchedulerPool(lambda key: RateScheduler(send, rate=100_000, per=1.0, name=str(key)), idle_seconds=0.05)
    for channel in range(3):
        pool.get(channel).offer("m", "state", final=True)
    await asyncio.wait_for(pool.drain(), 5)
    busy = pool.get("busy")
    busy.offer("m", "hold")  # a scheduler with work in hand is never retired
    deadline = time.monotonic() + 5
    while min(pool.find(c).idle_for() for c in range(3)) < 0.05:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert pool.sweep(force=True) == 3 and len(pool) == 1 and pool.find("busy") is busy
    assert pool.get(0) is not None and len(pool) == 2, "a retired key gets a fresh scheduler on its next use"

    gate.set()
    await pool.retire("busy")  # a limit that is done with: what is pending is sent, then it goes
    assert pool.find("busy") is None and [k for _, k in busy.sent] == ["m"]

    many = pool.get("many")
    for i in range(SENT_KEPT + 200):
        many.offer(i, "x")
    await asyncio.wait_for(many.drain(), 10)
    assert len(many.sent) == SENT_KEPT and many.sent[-1][1] == SENT_KEPT + 199
    await pool.close()
