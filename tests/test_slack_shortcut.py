"""The message shortcut "Animate with videobot": a video from the image in a message, in its thread."""
from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.core.models import JobKind, JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)
SHORTCUT = "vb_animate_message"


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, VIDEOBOT_MAX_IMAGE_MB="0.5")
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


def png(width: int = 160, height: int = 90, noise: bool = False) -> bytes:
    image = Image.effect_noise((width, height), 80).convert("RGB") if noise else Image.new("RGB", (width, height), (200, 80, 40))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


def answers(slack: SlackEmulator, user: str = "U0ALICE") -> list[str]:
    return [r["text"] for r in slack.responses if r["key"] == f"sc-{user}"]


async def test_a_posted_image_becomes_a_video_in_its_thread(bot: SlackBot, slack: SlackEmulator, tmp_path: Path) -> None:
    picture = png()
    message = slack.user_file_message(picture, "kite.png", "a red kite <@U0BOB> tugs at its string", user="U0BOB")
    sent = await slack.shortcut(bot.url, message, SHORTCUT, user_id="U0ALICE")
    assert sent.status == 200 and sent.elapsed < 3

    [card] = await slack.wait_for(lambda: cards(slack))
    assert slack.messages[card]["thread_ts"] == message  # the job's card in the image's thread
    job = await job_of_message(bot.app, card)
    assert (job.kind, job.origin.user_id, job.origin.extra["thread_ts"]) == (JobKind.GENERATE, "U0ALICE", message)
    assert job.prompt == "a red kite <@U0BOB> tugs at its string" and job.params.image_path
    assert [c.args["file_id"] for c in slack.calls_to("files-pri")] == [slack.messages[message]["files"][0]]  # fetched with the bot token

    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    # The result in the same thread, found by a retried delivery there too.
    result = await slack.wait_for(lambda: [m for m in slack.thread(message) if m.get("files") and m["user"] == "U0BOT"])
    assert done.origin.result_message_id == result[0]["ts"]
    assert (await bot.adapter.deliver(done.model_copy(update={"state": {**done.state, "delivery": {"attempt": 2}}})))["result_message_id"] == result[0]["ts"]
    assert "&lt;@U0BOB&gt;" in slack.text_of(card) and "<@U0BOB>" not in slack.text_of(card)


async def test_the_shortcut_on_the_bots_own_image_animates_that_job(bot: SlackBot, slack: SlackEmulator) -> None:
    await slack.slash(bot.url, "/image", "a lighthouse at dusk --size 128x128")
    [card] = await slack.wait_for(lambda: cards(slack))
    image = await asyncio.wait_for(bot.app.runner.wait((await job_of_message(bot.app, card)).id), 20)
    result = image.origin.result_message_id
    assert result is not None

    await slack.shortcut(bot.url, result, SHORTCUT, user_id="U0CAROL")
    second = (await slack.wait_for(lambda: cards(slack)[1:]))[0]
    video = await job_of_message(bot.app, second)
    assert (video.kind, video.parent_id, video.prompt, video.origin.user_id) == (JobKind.GENERATE, image.id, image.prompt, "U0CAROL")
    assert not slack.calls_to("files-pri"), "the bot's own file is used from disk, not downloaded"


async def test_no_image_or_too_big_an_image_is_answered_privately(bot: SlackBot, slack: SlackEmulator) -> None:
    plain = slack.user_message("just words here")
    await slack.shortcut(bot.url, plain, SHORTCUT)
    [answer] = await slack.wait_for(lambda: answers(slack))
    assert "no image in this message" in answer

    big = slack.user_file_message(png(800, 800, noise=True), "noise.png", "")  # over the 0.5 MB limit set above
    await slack.shortcut(bot.url, big, SHORTCUT)
    answer = (await slack.wait_for(lambda: answers(slack)[1:]))[0]
    assert "The image is 1." in answer and "the limit is 0.5 MB" in answer
    assert not slack.calls_to("files-pri"), "too big by Slack's own account: not downloaded"
    text_file = slack.user_file_message(b"not a picture", "notes.txt", "see notes")
    await slack.shortcut(bot.url, text_file, SHORTCUT)
    answer = (await slack.wait_for(lambda: answers(slack)[2:]))[0]
    assert "no image in this message" in answer
    assert not cards(slack) and await bot.app.store.count(statuses=list(JobStatus)) == 0
