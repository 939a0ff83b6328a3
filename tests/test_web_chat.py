"""The gallery from chat: `/gallery` answers privately with a personal link that opens the asker's
workspace, and results carry "Open in gallery" (Slack and Discord emulators, real SDKs)."""
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, discord_env, emu, job_of, result_post, start_bot  # noqa: F401
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401
from tests.web_support import PUBLIC_URL, WEB_SECRET, Visitor, serve

pytestmark = pytest.mark.timeout(60)
WEB_ENV = {"VIDEOBOT_PUBLIC_URL": PUBLIC_URL, "VIDEOBOT_WEB_SECRET": WEB_SECRET}
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/g/[\w.-]+)")
MANAGE_GUILD = 1 << 5


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
