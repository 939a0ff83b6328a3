"""Signatures, ephemeral errors and the commands that only answer the user."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack)
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()

async def test_wrong_or_stale_signatures_get_401_and_do_nothing(bot: SlackBot, slack: SlackEmulator) -> None:
    calls = len(slack.calls)
    forged = await slack.slash(bot.url, "/video", "a fox --seconds 1 --size 256x144", secret="not-the-secret")
    stale = await slack.slash(bot.url, "/video", "a fox --seconds 1 --size 256x144", timestamp=int(time.time()) - 10 * 60)
    assert (forged.status, stale.status) == (401, 401)
    assert len(slack.calls) == calls and await bot.app.store.count(statuses=list(JobStatus)) == 0

async def answers(slack: SlackEmulator, user: str) -> list[dict[str, Any]]:
    return await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == f"cmd-{user}"])

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a fox --colour red", "/video has no option --colour"),
        ("a fox --seconds many", "--seconds takes a whole number"),
        ("a fox --pipeline nope", "nope"),
        ("--seconds 2", "The prompt is empty"),
        ("a fox --size 13x7", ""),
    ],
)
async def test_bad_commands_are_answered_to_the_user_alone_and_the_channel_is_untouched(
    bot: SlackBot, slack: SlackEmulator, text: str, expected: str
) -> None:
    sent = await slack.slash(bot.url, "/video", text, user_id="U0DAVE")
    assert sent.status == 200 and sent.elapsed < 3
    reply = (await answers(slack, "U0DAVE"))[0]
    assert reply["response_type"] == "ephemeral" and expected in reply["text"] and len(reply["text"]) < 300
    assert not slack.messages and not slack.calls_to("chat.postMessage")
    assert await bot.app.store.count(statuses=list(JobStatus)) == 0

async def test_help_jobs_and_cancel_answer_ephemerally(bot: SlackBot, slack: SlackEmulator) -> None:
    await slack.slash(bot.url, "/video", "help", user_id="U0ERIN")
    assert "/video PROMPT" in (await answers(slack, "U0ERIN"))[0]["text"]
    slack.responses.clear()
    await slack.slash(bot.url, "/video", "jobs", user_id="U0ERIN")
    assert "no jobs yet" in (await answers(slack, "U0ERIN"))[0]["text"]

    slack.responses.clear()
    await slack.slash(bot.url, "/video", "a slow tide --seconds 20 --size 640x360", user_id="U0ERIN")
    ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
    job = await job_of_message(bot.app, ts)  # the store write follows the post: wait for it
    await slack.slash(bot.url, "/video", "jobs", user_id="U0ERIN")
    assert job.id in (await answers(slack, "U0ERIN"))[0]["text"]
    slack.responses.clear()
    await slack.slash(bot.url, "/video", f"cancel {job.id}", user_id="U0FRANK")
    assert "Only the person who asked" in (await answers(slack, "U0FRANK"))[0]["text"]
    await slack.slash(bot.url, "/video", f"cancel {job.id}", user_id="U0ERIN")
    assert "cancelled" in (await answers(slack, "U0ERIN"))[0]["text"]
    await slack.wait_for(lambda: "Cancelled" in slack.text_of(ts))

async def test_a_channel_the_bot_is_not_in_gets_an_invite_hint_and_the_job_is_cancelled(bot: SlackBot, slack: SlackEmulator) -> None:
    slack.outside.add("C0PRIVATE")
    await slack.slash(bot.url, "/video", "a fox --seconds 1 --size 256x144", user_id="U0GINA", channel_id="C0PRIVATE")
    reply = (await answers(slack, "U0GINA"))[0]
    assert reply["response_type"] == "ephemeral" and "/invite @videobot" in reply["text"]
    jobs = await bot.app.service.list_jobs()
    assert [j.status for j in jobs] == [JobStatus.CANCELLED] and not slack.messages

async def test_image_command_posts_the_picture_in_the_thread(bot: SlackBot, slack: SlackEmulator) -> None:
    await slack.slash(bot.url, "/image", "a lighthouse at dusk --size 256x256")
    ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
    job = await job_of_message(bot.app, ts)  # the store write follows the post: wait for it

    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    reply = await slack.wait_for(lambda: [m for m in slack.thread(ts) if m.get("files")])
    assert slack.files[reply[0]["files"][0]]["data"][:8] == b"\x89PNG\r\n\x1a\n"
