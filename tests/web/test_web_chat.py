"""The gallery from chat: `/gallery` answers privately with a personal link that opens the asker's
workspace, and results carry "Open in gallery"; a job started on the web page shows its status
card in chat at once and its result there once (Slack and Discord emulators, real SDKs)."""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.adapters.slack.lookup import STATUS_EVENT
from bot.adapters.slack.status import STATUS_WAIT_SECONDS
from bot.app import open_app
from bot.config import load_settings
from bot.core.models import JobStatus
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, discord_env, emu, job_of, result_post, start_bot  # noqa: F401
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401
from tests.web.web_support import PUBLIC_URL, WEB_SECRET, Visitor, link_for, serve

pytestmark = pytest.mark.timeout(60)
WEB_ENV = {"VIDEOBOT_PUBLIC_URL": PUBLIC_URL, "VIDEOBOT_WEB_SECRET": WEB_SECRET}
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/g/[\w.-]+)")
MANAGE_GUILD = 1 << 5
#: A web job's card must show up this soon: well before a delivery would stop waiting for it.
CARD_DEADLINE = 3.0
assert CARD_DEADLINE < STATUS_WAIT_SECONDS / 2


@pytest.fixture
async def slack_bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, **WEB_ENV)
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def discord_bot(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu, **WEB_ENV)
    running = await start_bot()
    try:
        yield running
    finally:
        await running.close()


async def test_slack_gallery_link_is_private_and_results_link_to_the_gallery(slack_bot: SlackBot, slack: SlackEmulator) -> None:
    sent = await slack.slash(slack_bot.url, "/video", "gallery", user_id="U0ALICE")
    assert sent.status == 200
    answer = (await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == "cmd-U0ALICE"]))[0]
    assert answer["response_type"] == "ephemeral"
    link = LINK.search(str(answer["text"]))
    assert link is not None, answer["text"]

    await slack.slash(slack_bot.url, "/video", "a kite over the dunes --seconds 1 --size 128x72", user_id="U0ALICE")
    post = await slack.wait_for(lambda: [m for m in slack.messages.values() if m.get("files") and "Open in gallery" in m["text"]])
    job_id = re.search(r"/jobs/(\w+)\|Open in gallery>", post[0]["text"])
    assert job_id is not None, post[0]["text"]
    job = await asyncio.wait_for(slack_bot.app.runner.wait(job_id.group(1)), 20)
    assert job.status is JobStatus.COMPLETED and f"<{PUBLIC_URL}/jobs/{job.id}|Open in gallery>" in post[0]["text"]

    served = await serve(slack_bot.app)
    alice = Visitor(served)
    try:
        assert (await alice.open_link(link.group(1))).status == 303
        assert job.id in await alice.text("/") and "a kite over the dunes" in await alice.text(f"/jobs/{job.id}")
    finally:
        await alice.close()
        await served.close()


async def test_discord_gallery_slash_command_and_result_link(discord_bot: DiscordBot, emu: DiscordEmulator) -> None:
    assert "gallery" in {c["name"] for c in emu.commands["global"]}
    interaction = await emu.slash("gallery", permissions=MANAGE_GUILD)
    await asyncio.wait_for(interaction.answered.wait(), 3)
    assert interaction.callback is not None and interaction.callback["data"]["flags"] & 64, "only the asker sees the link"
    text = str(interaction.callback["data"]["content"])
    link = LINK.search(text)
    assert link is not None and "usage" in text, text

    made = await emu.slash("video", {"prompt": "a paper boat in the rain", "seconds": 1, "size": "256x144"})
    job = await asyncio.wait_for(discord_bot.app.runner.wait((await job_of(discord_bot, made)).id), 20)
    assert job.status is JobStatus.COMPLETED
    post = result_post(emu, job.id)
    assert post is not None and f"[Open in gallery](<{PUBLIC_URL}/jobs/{job.id}>)" in post["content"]

    served = await serve(discord_bot.app)
    admin = Visitor(served)
    try:
        assert (await admin.open_link(link.group(1))).status == 303
        assert job.id in await admin.text("/")
        assert (await admin.get("/usage")).status == 200, "a guild admin's link opens the admin pages"
    finally:
        await admin.close()
        await served.close()


def slack_cards(slack: SlackEmulator, job_id: str) -> list[dict[str, Any]]:
    """The status messages of a job (the bot marks them with the job id in their metadata)."""
    return [
        m for m in slack.messages.values()
        if (m.get("metadata") or {}).get("event_type") == STATUS_EVENT and m["metadata"]["event_payload"].get("job_id") == job_id
    ]  # fmt: skip


def slack_results(slack: SlackEmulator, job_id: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages.values() if m.get("files") and f"/jobs/{job_id}|Open in gallery>" in m["text"]]


async def slack_original(slack_bot: SlackBot, slack: SlackEmulator) -> Any:
    """A finished /video job of alice's, asked in the channel."""
    await slack.slash(slack_bot.url, "/video", "a kite over the dunes --seconds 1 --size 128x72", user_id="U0ALICE")
    card = (await slack.wait_for(lambda: [m for m in slack.messages.values() if m.get("metadata")]))[0]
    job = await job_of_message(slack_bot.app, card["ts"])
    job = await asyncio.wait_for(slack_bot.app.runner.wait(job.id), 20)
    assert job.status is JobStatus.COMPLETED
    await slack.wait_for(lambda: slack_results(slack, job.id))
    return job


async def reroll_on_the_web(app: Any, job: Any) -> str:
    served = await serve(app)
    owner = Visitor(served)
    try:
        assert (await owner.open_link(link_for(app, job.origin))).status == 303
        answer = await owner.post(f"/jobs/{job.id}/reroll")
        assert answer.status == 303, answer.status
        new_id = answer.headers["Location"].rsplit("/", 1)[-1]
        assert new_id != job.id
        return new_id
    finally:
        await owner.close()
        await served.close()


async def test_slack_a_reroll_on_the_web_shows_its_card_at_once_and_posts_its_result_once(
    slack_bot: SlackBot, slack: SlackEmulator
) -> None:
    original = await slack_original(slack_bot, slack)
    asked = time.monotonic()
    new_id = await reroll_on_the_web(slack_bot.app, original)
    card = (await slack.wait_for(lambda: slack_cards(slack, new_id), timeout=CARD_DEADLINE))[0]
    assert time.monotonic() - asked < CARD_DEADLINE
    assert card["channel"] == original.origin.channel_id

    job = await asyncio.wait_for(slack_bot.app.runner.wait(new_id), 20)
    assert job.status is JobStatus.COMPLETED and job.origin.status_message_id == card["ts"]
    await slack.wait_for(lambda: "Done" in slack.text_of(card["ts"]))
    results = await slack.wait_for(lambda: slack_results(slack, new_id))
    assert len(results) == 1 and results[0].get("thread_ts") == card["ts"], "the result goes once, under its card"
    assert len(slack_cards(slack, new_id)) == 1


async def test_slack_a_reroll_from_a_separate_web_process_gets_its_card_from_the_bot(
    slack_bot: SlackBot, slack: SlackEmulator
) -> None:
    """`videobot web` alone stores the job for the running bot, which adopts it and posts its card."""
    original = await slack_original(slack_bot, slack)
    web_app = await open_app(load_settings())
    web_app.service.runner = None  # as `videobot web`: jobs are stored for `videobot run`
    try:
        new_id = await reroll_on_the_web(web_app, original)
        card = (await slack.wait_for(lambda: slack_cards(slack, new_id), timeout=10))[0]
        job = await asyncio.wait_for(slack_bot.app.runner.wait(new_id), 20)
        assert job.status is JobStatus.COMPLETED and job.origin.status_message_id == card["ts"]
        results = await slack.wait_for(lambda: slack_results(slack, new_id))
        assert len(results) == 1 and results[0].get("thread_ts") == card["ts"]
        assert len(slack_cards(slack, new_id)) == 1
    finally:
        await web_app.close()


async def test_discord_a_reroll_on_the_web_shows_its_card_at_once_and_posts_its_result_once(
    discord_bot: DiscordBot, emu: DiscordEmulator
) -> None:
    made = await emu.slash("video", {"prompt": "a paper boat in the rain", "seconds": 1, "size": "256x144"})
    original = await asyncio.wait_for(discord_bot.app.runner.wait((await job_of(discord_bot, made)).id), 20)
    assert original.status is JobStatus.COMPLETED

    def cards(job_id: str) -> list[dict[str, Any]]:
        return [m for m in emu.channel_messages(emu.channel_id) if f"job {job_id}" in m["content"] and not m["attachments"]]

    asked = time.monotonic()
    new_id = await reroll_on_the_web(discord_bot.app, original)
    card = (await emu.wait_for(lambda: cards(new_id), timeout=CARD_DEADLINE))[0]
    assert time.monotonic() - asked < CARD_DEADLINE

    job = await asyncio.wait_for(discord_bot.app.runner.wait(new_id), 20)
    assert job.status is JobStatus.COMPLETED and job.origin.status_message_id == card["id"]
    post = await emu.wait_for(lambda: result_post(emu, new_id))
    posts = [m for m in emu.channel_messages(emu.channel_id) if any(a["filename"].startswith(new_id) for a in m["attachments"])]
    assert posts == [post], "the result is posted once"
    assert len(cards(new_id)) == 1
