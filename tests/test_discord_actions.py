"""Result buttons (DynamicItems), the remix modal and reactions, through the real client."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.models import Job, JobKind, JobStatus
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    DiscordBot,
    DiscordEmulator,
    channel_posts,
    discord_env,
    emu,
    followup_with_file,
    start_bot,
)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)
MANAGE_MESSAGES = 0x2000


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu)
    running = await start_bot()
    try:
        yield running
    finally:
        await running.close()


async def make_video(bot: DiscordBot, emu: DiscordEmulator, prompt: str = "a red kite over green hills") -> tuple[dict[str, Any], Job]:
    interaction = await emu.slash("video", {"prompt": prompt, "seconds": 1, "size": "256x144"})
    result = await emu.wait_for(lambda: followup_with_file(emu, interaction.token), timeout=20)
    job = await bot.app.service.find_by_message("discord", interaction.original_id or "")
    assert job is not None
    job = await asyncio.wait_for(bot.app.runner.wait(job.id), 5)
    return result, job


async def children(bot: DiscordBot, parent: Job, count: int = 1) -> list[Job]:
    for _ in range(200):
        found = await bot.app.store.children(parent.id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} child job(s) of {parent.id}")


async def test_remix_button_opens_a_modal_and_starts_a_child_job(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    result, parent = await make_video(bot, emu)
    click = await emu.click(result["id"], f"vb:remix:{parent.id}")
    await asyncio.wait_for(click.answered.wait(), 3)
    assert click.callback is not None and click.callback["type"] == 9  # a modal

    submit = await emu.submit_modal(click, {"New prompt": "the same kite at night"})
    await asyncio.wait_for(submit.answered.wait(), 3)
    assert submit.callback is not None and submit.callback["type"] == 5
    (child,) = await children(bot, parent)
    assert child.kind is JobKind.REMIX and child.prompt == "the same kite at night"
    assert child.origin.status_message_id == submit.original_id
    done = await asyncio.wait_for(bot.app.runner.wait(child.id), 20)
    assert done.status is JobStatus.COMPLETED
    posted = await emu.wait_for(lambda: followup_with_file(emu, submit.token))
    video = tmp_path / "remix.mp4"
    video.write_bytes(emu.attachment_bytes(posted["attachments"][0]))
    assert_video(video, width=256, height=144, seconds=1)


async def test_reroll_button_and_delete_needs_owner_or_manage_messages(bot: DiscordBot, emu: DiscordEmulator) -> None:
    result, parent = await make_video(bot, emu)
    click = await emu.click(result["id"], f"vb:reroll:{parent.id}", user_id="2002")
    (child,) = await children(bot, parent)
    assert child.kind is JobKind.VARIATION and child.origin.user_id == "2002"
    await asyncio.wait_for(bot.app.runner.wait(child.id), 20)
    assert click.original_id and (await emu.wait_for(lambda: followup_with_file(emu, click.token)))

    stranger = await emu.click(result["id"], f"vb:delete:{parent.id}", user_id="3003")
    await asyncio.wait_for(stranger.answered.wait(), 3)
    assert stranger.callback is not None and stranger.callback["type"] == 4
    assert stranger.callback["data"]["flags"] & 64, "errors are ephemeral"
    assert "Only the person who asked" in stranger.callback["data"]["content"]
    assert (await bot.app.service.get(parent.id)).deleted_at is None

    moderator = await emu.click(result["id"], f"vb:delete:{parent.id}", user_id="4004", permissions=MANAGE_MESSAGES)
    await asyncio.wait_for(moderator.answered.wait(), 3)
    assert (await bot.app.service.get(parent.id)).deleted_at is not None
    assert emu.messages[result["id"]]["attachments"] == [] and "deleted" in emu.messages[result["id"]]["content"]


async def test_reactions_reroll_mail_and_owner_only_delete(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    result, parent = await make_video(bot, emu)

    await emu.react(result["id"], "🔁")
    (child,) = await children(bot, parent)
    assert child.kind is JobKind.VARIATION
    await asyncio.wait_for(bot.app.runner.wait(child.id), 20)
    # No interaction behind a reaction: status and result go through the bot token.
    status = await emu.wait_for(lambda: [m for m in channel_posts(emu, emu.channel_id) if "Re-roll" in m["content"] and not m["attachments"]])
    assert (await bot.app.service.get(child.id)).origin.status_message_id == status[0]["id"]
    posted = await emu.wait_for(lambda: channel_posts(emu, emu.channel_id, with_file=True))
    assert posted[0]["attachments"][0]["filename"] == f"{child.id}.mp4"
    await emu.wait_for(lambda: "✅ Done" in emu.messages[status[0]["id"]]["content"])

    await emu.react(result["id"], "✉️", user_id="5005")
    dm = await emu.wait_for(lambda: emu.dm_channels.get("5005") and channel_posts(emu, emu.dm_channels["5005"], with_file=True))
    video = tmp_path / "dm.mp4"
    video.write_bytes(emu.attachment_bytes(dm[0]["attachments"][0]))
    assert_video(video, width=256, height=144, seconds=1)

    await emu.react(result["id"], "❌", user_id="6006")  # not the owner: refused, told by DM
    notice = await emu.wait_for(lambda: emu.dm_channels.get("6006") and channel_posts(emu, emu.dm_channels["6006"]))
    assert "Only the person who asked" in notice[0]["content"]
    assert (await bot.app.service.get(parent.id)).deleted_at is None
    await emu.react(result["id"], "❌")  # the owner
    await emu.wait_for(lambda: "deleted" in emu.messages[result["id"]]["content"])
    assert (await bot.app.service.get(parent.id)).deleted_at is not None
