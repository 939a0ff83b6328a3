"""The message shortcut "Animate with videobot": a video from the image in a message, in its thread."""
from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bot.adapters.slack.shortcuts import file_url
from bot.core.models import JobKind, JobStatus
from providers.errors import InvalidRequest
from tests.fakes.slack_api import BOT_TOKEN, SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

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


# --- the bot token goes to Slack's file host only --------------------------------------------


@dataclass
class Foreign:
    """A second loopback host standing in for Google Drive or an attacker: it serves a fine PNG to
    anyone and records every request it gets, with its headers."""

    base: str
    seen: list[dict[str, str]]


@pytest.fixture
async def foreign() -> AsyncIterator[Foreign]:
    seen: list[dict[str, str]] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=png(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Foreign(f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("where", ["external", "elsewhere"])
async def test_a_file_not_on_slacks_file_host_is_refused_and_never_gets_the_token(
    bot: SlackBot, slack: SlackEmulator, foreign: Foreign, where: str
) -> None:
    link = f"{foreign.base}/drive/kite.png"
    kw = {"external_url": link} if where == "external" else {"url": link}
    message = slack.user_file_message(png(), "kite.png", "a kite in the wind", **kw)  # type: ignore[arg-type]
    await slack.shortcut(bot.url, message, SHORTCUT)
    await slack.wait_for(lambda: answers(slack) or cards(slack))  # refused, or (the bug) a job started
    assert not [h for h in foreign.seen if BOT_TOKEN in str(h)], "the bot token reached another host"
    assert foreign.seen == [], "nothing is fetched from another host"
    [answer] = answers(slack)
    assert answer.startswith("That image is not a file uploaded to Slack") and "Upload the image itself to Slack" in answer
    assert not cards(slack) and await bot.app.store.count(statuses=list(JobStatus)) == 0


def test_only_slacks_file_host_over_https_or_the_configured_api_base() -> None:
    slack_api = "https://slack.com/api/"
    assert file_url({"url_private": "https://files.slack.com/files-pri/T1-F1/a.png"}, slack_api)
    for url in (
        "http://files.slack.com/files-pri/T1-F1/a.png",  # not over HTTPS
        "https://files.slack.com.evil.example/a.png",
        "https://files.slack.com:8443/a.png",
        "https://evil.example/a.png",
        "https://user@files.slack.com/a.png",
        "not a url",
    ):
        with pytest.raises(InvalidRequest, match="Upload the image itself"):
            file_url({"url_private": url}, slack_api)
    with pytest.raises(InvalidRequest, match="Upload the image itself"):
        file_url({"url_private": "https://files.slack.com/a.png", "is_external": True}, slack_api)
    # A configured base (GovSlack, a proxy, an emulator): its own origin and its files. host too.
    assert file_url({"url_private": "https://files.slack-gov.com/a.png"}, "https://slack-gov.com/api/")
    assert file_url({"url_private": "http://127.0.0.1:9/files-pri/a.png"}, "http://127.0.0.1:9/api/")
    with pytest.raises(InvalidRequest):
        file_url({"url_private": "http://127.0.0.1:10/files-pri/a.png"}, "http://127.0.0.1:9/api/")
