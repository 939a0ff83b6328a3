"""Exactly-once posts in Slack: a retried delivery or a lost answer finds the earlier post instead
of posting again; a status message is found by its metadata; failures are transient or permanent.

Everything goes through the real slack_sdk / slack-bolt against the loopback emulator. Some tests
let the runner deliver nowhere and then play the runner's delivery attempts themselves
(`adapter.deliver(job)` with `state.delivery.attempt` set as the runner records it).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.core.errors import DeliveryFailed
from bot.core.models import Job, JobStatus
from providers.polling import PollPolicy
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import (  # noqa: F401 (slack is a fixture)
    SlackBot,
    SlackEmulator,
    job_of_message,
    slack,
    slack_env,
    start_slack_bot,
)

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)
UPLOAD_CALLS = ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack)
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


async def _nowhere(job: Job) -> None:
    return None


def top_level(slack: SlackEmulator) -> list[dict[str, Any]]:
    return [m for m in slack.messages.values() if "thread_ts" not in m]


def file_messages(slack: SlackEmulator, job_id: str) -> list[dict[str, Any]]:
    """Messages carrying a file of this job, wherever they are."""
    return [m for m in slack.messages.values() if any(slack.files[f]["name"].startswith(job_id) for f in m.get("files", []))]


def stills(slack: SlackEmulator, job_id: str) -> list[str]:
    return [f for f, file in slack.files.items() if file["name"] == f"{job_id}.jpg"]


def uploads(slack: SlackEmulator) -> int:
    return sum(len(slack.calls_to(m)) for m in UPLOAD_CALLS)


async def until(read: Callable[[], Awaitable[Any]], check: Callable[[Any], Any], timeout: float = 10) -> Any:
    """Poll `read()` until `check` holds for its value (a deadline, not a guess)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last value {value!r}"
        await asyncio.sleep(0.02)


def attempt(job: Job, n: int, **origin: Any) -> Job:
    """The job as the runner hands it to the adapter on delivery attempt `n`."""
    state = {**job.state, "delivery": {**job.state.get("delivery", {}), "attempt": n}}
    return job.model_copy(update={"state": state, "origin": job.origin.model_copy(update=origin)})


async def video(bot: SlackBot, slack: SlackEmulator, prompt: str = "a heron in the reeds") -> tuple[Job, str]:
    """A finished job and its status message ts."""
    before = len(top_level(slack))
    await slack.slash(bot.url, "/video", f"{prompt} --seconds 1 --size 256x144")
    ts = (await slack.wait_for(lambda: [m["ts"] for m in top_level(slack)][before:]))[0]
    job = await job_of_message(bot.app, ts)
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    return done, ts


async def test_a_retried_delivery_finds_the_posted_file_and_posts_nothing_new(bot: SlackBot, slack: SlackEmulator) -> None:
    job, ts = await video(bot, slack)
    [posted] = file_messages(slack, job.id)
    assert posted["thread_ts"] == ts and job.origin.result_message_id == posted["ts"]
    file_id, still_id = job.origin.extra["file_ids"]
    calls, messages = uploads(slack), dict(slack.messages)

    # The process died after posting, before the store heard of it: attempt 2 knows nothing.
    retry = attempt(job, 2, result_message_id=None, extra={})
    updates = await bot.adapter.deliver(retry)
    assert updates is not None and updates["result_message_id"] == posted["ts"]
    assert updates["origin_extra"]["file_ids"] == [file_id, still_id]  # the still too, found by files.list
    assert uploads(slack) == calls and slack.messages == messages
    history = slack.calls_to("conversations.replies")[-1].args
    assert history["ts"] == ts and history["include_all_metadata"] in ("1", "true")

    # A result already recorded (any attempt): the same answer, still nothing posted.
    updates = await bot.adapter.deliver(attempt(job, 1))
    assert updates is not None and updates["result_message_id"] == posted["ts"]
    assert uploads(slack) == calls and len(file_messages(slack, job.id)) == 1 and len(stills(slack, job.id)) == 1


async def test_an_upload_whose_answer_was_lost_is_transient_and_found_on_the_next_attempt(bot: SlackBot, slack: SlackEmulator) -> None:
    bot.app.runner.deliverers["slack"] = _nowhere
    job, ts = await video(bot, slack)
    assert not file_messages(slack, job.id)

    slack.drop_next("files.completeUploadExternal")  # Slack shares the file, the answer never arrives
    with pytest.raises(DeliveryFailed) as failed:
        await bot.adapter.deliver(attempt(job, 1))
    assert failed.value.transient
    [posted] = file_messages(slack, job.id)
    assert len(slack.calls_to("files.completeUploadExternal")) == 1, "a lost answer is not re-sent blindly"

    completes = len(slack.calls_to("files.completeUploadExternal"))
    updates = await bot.adapter.deliver(attempt(job, 2))
    assert updates is not None and updates["result_message_id"] == posted["ts"] and posted["thread_ts"] == ts
    assert updates["origin_extra"]["file_ids"][0] == posted["files"][0]
    assert len(slack.calls_to("files.completeUploadExternal")) == completes + 1  # the still only (unshared)
    assert file_messages(slack, job.id) == [posted] and len(stills(slack, job.id)) == 1

    # Attempt 3 (its answer lost too, nothing stored): the still is found, not uploaded again.
    calls = uploads(slack)
    again = await bot.adapter.deliver(attempt(job, 3))
    assert again == updates and uploads(slack) == calls


async def test_a_status_post_whose_answer_was_lost_is_found_by_its_metadata(bot: SlackBot, slack: SlackEmulator) -> None:
    slack.drop_next("chat.postMessage")
    job, ts = await video(bot, slack)
    assert len(slack.calls_to("chat.postMessage")) == 1 and [m["ts"] for m in top_level(slack)] == [ts]
    assert slack.messages[ts]["metadata"] == {"event_type": "videobot_job", "event_payload": {"job_id": job.id}}
    assert job.origin.status_message_id == ts
    await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
    assert len(file_messages(slack, job.id)) == 1 and file_messages(slack, job.id)[0]["thread_ts"] == ts


def with_scripted(server: ScriptedServer | None = None) -> Any:
    def register(app: App) -> None:
        if server is not None:
            app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST
        app.runner.delivery_policy = PollPolicy(backoff_base=0.05, backoff_max=0.2)  # delivery retries in tenths

    return register


async def test_a_restart_adopts_the_status_message_whose_ts_never_reached_the_store(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()
    first = await start_slack_bot(register=with_scripted(server))
    released = slack.hold_next("chat.postMessage")  # posted in Slack; the bot dies before it hears the ts
    await slack.slash(first.url, "/video", "a lantern festival --seconds 1 --size 128x72 --pipeline scripted")
    ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
    [job] = await first.app.service.list_jobs()
    assert job.origin.status_message_id is None
    running = await until(lambda: first.app.service.get(job.id), lambda j: j.status is JobStatus.RUNNING and j.remote_id)
    assert running.origin.status_message_id is None  # submitted and polled; its status ts never stored
    await first.close()
    released.set()

    second = await start_slack_bot(register=with_scripted(server))
    try:
        found = await job_of_message(second.app, ts)  # adopted: found by its metadata, stored
        assert found.id == job.id
        server.release.set()
        done = await asyncio.wait_for(second.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and done.origin.status_message_id == ts
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
        assert len(slack.calls_to("chat.postMessage")) == 1, "no second status message"
        assert [m["ts"] for m in top_level(slack)] == [ts]
        assert [m["thread_ts"] for m in file_messages(slack, job.id)] == [ts]
        assert any(c.args.get("include_all_metadata") in ("1", "true") for c in slack.calls_to("conversations.history"))
    finally:
        await second.close()


async def test_a_reaction_before_the_ts_is_stored_finds_the_job_by_the_message(bot: SlackBot, slack: SlackEmulator) -> None:
    released = slack.hold_next("chat.postMessage")  # the message is up; the bot has not stored its ts
    await slack.slash(bot.url, "/video", "a long slow sunrise --seconds 20 --size 640x360")
    ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
    [job] = await bot.app.service.list_jobs()
    assert await bot.app.service.find_by_message("slack", ts) is None

    await slack.react(bot.url, ts, "x")  # the owner's ❌, in the window
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 10)
    assert done.status is JobStatus.CANCELLED
    read = slack.calls_to("conversations.history")[-1].args
    assert (read["latest"], read["inclusive"], read["limit"]) == (ts, "1", "1")
    released.set()
    await slack.wait_for(lambda: "Cancelled" in slack.text_of(ts))
    assert (await job_of_message(bot.app, ts)).id == job.id


async def test_a_reaction_on_a_file_not_yet_recorded_finds_the_job_by_the_file_title(bot: SlackBot, slack: SlackEmulator) -> None:
    bot.app.runner.deliverers["slack"] = _nowhere
    job, ts = await video(bot, slack)
    updates = await bot.adapter.deliver(job)  # posted; the store never hears of it
    assert updates is not None
    result_ts = updates["result_message_id"]
    assert await bot.app.service.find_by_message("slack", result_ts) is None

    before = len(top_level(slack))
    await slack.react(bot.url, result_ts, "repeat", user_id="U0CAROL")
    child_ts = (await slack.wait_for(lambda: [m["ts"] for m in top_level(slack)][before:]))[0]
    child = await job_of_message(bot.app, child_ts)
    assert (child.parent_id, child.origin.user_id) == (job.id, "U0CAROL")
    assert slack.calls_to("conversations.replies")[-1].args["ts"] == result_ts


async def test_delivery_failures_are_classified(bot: SlackBot, slack: SlackEmulator) -> None:
    bot.app.runner.deliverers["slack"] = _nowhere
    job, _ = await video(bot, slack)

    for method in ("files.getUploadURLExternal", "upload", "files.completeUploadExternal"):
        slack.fail_next(method, 500)
        with pytest.raises(DeliveryFailed) as failed:
            await bot.adapter.deliver(job)
        assert failed.value.transient, method

    slack.outside.add(slack.channel_id)
    with pytest.raises(DeliveryFailed) as failed:
        await bot.adapter.deliver(job)
    assert not failed.value.transient and "/invite @videobot" in failed.value.message
    slack.outside.clear()

    slack.deleted.add(slack.channel_id)
    with pytest.raises(DeliveryFailed) as failed:
        await bot.adapter.deliver(attempt(job, 2))  # the look-up for an earlier post fails the same way
    assert not failed.value.transient and f"videobot redeliver {job.id}" in failed.value.message
    assert len(failed.value.message) < 160
    assert not file_messages(slack, job.id)

    await bot.adapter.stop()  # a stopped adapter: try again later
    with pytest.raises(DeliveryFailed) as failed:
        await bot.adapter.deliver(job)
    assert failed.value.transient


async def test_a_missing_output_file_is_a_permanent_failure(bot: SlackBot, slack: SlackEmulator) -> None:
    bot.app.runner.deliverers["slack"] = _nowhere
    job, _ = await video(bot, slack)
    Path(job.output_path or "").unlink()
    with pytest.raises(DeliveryFailed) as failed:
        await bot.adapter.deliver(job)
    assert not failed.value.transient and not file_messages(slack, job.id)


# --- end to end through the runner: retry, undelivered, redeliver ---------------------------


@pytest.mark.parametrize("answer", ["lost", "refused"])
async def test_a_5xx_on_delivery_is_retried_and_the_file_posted_once(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    # "lost": Slack shared the file but answered 500; the retry finds the file instead of posting it.
    slack_env(monkeypatch, slack)
    bot = await start_slack_bot(register=with_scripted())
    try:
        slack.fail_next("files.completeUploadExternal", 500, after=answer == "lost")
        job, ts = await video(bot, slack)
        assert job.error_code is None and job.delivery_attempt == 2
        [posted] = file_messages(slack, job.id)
        assert posted["thread_ts"] == ts and job.origin.result_message_id == posted["ts"]
        assert [c.status for c in slack.calls_to("files.completeUploadExternal") if c.args.get("channel_id")] == (
            [500] if answer == "lost" else [500, 200]
        )
        assert len(stills(slack, job.id)) == 1
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
        assert "⚠️" not in slack.text_of(ts)
    finally:
        await bot.close()


async def test_a_deleted_channel_ends_the_job_completed_undelivered_with_the_file_kept(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_slack_bot(register=with_scripted(server))
    try:
        await slack.slash(bot.url, "/video", "a lighthouse at dusk --seconds 1 --size 128x72 --pipeline scripted", user_id="U0DANA")
        ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
        job = await job_of_message(bot.app, ts)
        slack.deleted.add(slack.channel_id)
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 30)
        assert done.status is JobStatus.COMPLETED and done.error_code == "undelivered"
        assert done.error_message and f"videobot redeliver {job.id}" in done.error_message
        assert done.output_path and Path(done.output_path).exists(), "the paid-for file is kept"
        assert not file_messages(slack, job.id) and done.origin.result_message_id is None
        # No channel to show it in: the owner is told in the app's DM.
        dm = await slack.wait_for(lambda: [m for m in slack.messages.values() if m["channel"] == slack.dm_channel("U0DANA")])
        assert job.id in dm[0]["text"] and "redeliver" in dm[0]["text"]
    finally:
        await bot.close()


async def test_not_in_the_channel_then_redeliver_posts_the_file_once(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_slack_bot(register=with_scripted(server))
    try:
        await slack.slash(bot.url, "/video", "a lighthouse at dusk --seconds 1 --size 128x72 --pipeline scripted")
        ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
        job = await job_of_message(bot.app, ts)
        slack.outside.add(slack.channel_id)  # the bot was removed from the channel meanwhile
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 30)
        assert done.status is JobStatus.COMPLETED and done.error_code == "undelivered"
        assert done.error_message and "/invite @videobot" in done.error_message
        await slack.wait_for(lambda: "⚠️" in slack.text_of(ts) and "/invite @videobot" in slack.text_of(ts))

        slack.outside.clear()  # invited back
        await bot.app.service.redeliver(job.id)
        again = await until(lambda: bot.app.service.get(job.id), lambda j: j.status is JobStatus.COMPLETED and j.error_code is None)
        [posted] = file_messages(slack, job.id)
        assert again.origin.result_message_id == posted["ts"] and posted["thread_ts"] == ts and len(server.creates) == 1
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts) and "⚠️" not in slack.text_of(ts))
    finally:
        await bot.close()
