"""/video end to end: the real discord.py client against the loopback Discord."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    DiscordBot,
    DiscordEmulator,
    buttons_of,
    discord_env,
    emu,
    job_of,
    result_post,
    start_bot,
)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    # 5 edits per second per status message: sends at least 0.2 s apart.
    discord_env(monkeypatch, emu, DISCORD_STATUS_EDIT_WINDOW_SECONDS="1")
    running = await start_bot()
    try:
        yield running
    finally:
        await running.close()


async def test_video_defers_shows_progress_and_attaches_a_playable_mp4(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    # Commands are registered globally and copied to the configured guild for instant use.
    assert {c["name"] for c in emu.commands["global"]} >= {
        "video", "image", "jobs", "job", "remix", "extend", "reroll", "cancel", "delete", "usage", "help", "settings", "confirm",
        "decline", "story",
    }  # fmt: skip
    assert {c["name"] for c in emu.commands[emu.guild_id]} >= {"video"}
    emu.fail_next("PATCH", r"/messages/@original$")  # one 429 on the first status edit: discord.py must retry

    interaction = await emu.slash("video", {"prompt": "a teal coupe crossing a desert", "seconds": 1, "size": "256x144"})
    await asyncio.wait_for(interaction.answered.wait(), 3)
    assert interaction.callback is not None and interaction.callback["type"] == 5  # deferred, "thinking"

    job = await job_of(bot, interaction)
    job = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert job.status is JobStatus.COMPLETED and job.origin.status_message_id == interaction.original_id
    # The bot may post here: the result is a reply to the status message with the bot token
    # (nonce-protected), not an interaction follow-up.
    result = emu.messages[job.origin.result_message_id or ""]
    assert result == result_post(emu, job.id) and "webhook_id" not in result
    assert result["message_reference"]["message_id"] == interaction.original_id
    attachment = result["attachments"][0]
    assert attachment["filename"] == f"{job.id}.mp4"
    video = tmp_path / "got.mp4"
    video.write_bytes(emu.attachment_bytes(attachment))
    assert_video(video, width=256, height=144, seconds=1)
    assert [c.split(":")[1] for c in buttons_of(result)] == ["reroll", "remix", "extend", "delete"]
    # Only the requester may be pinged by it.
    (create,) = [c for c in emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$") if c.files]
    mentions = create.json["allowed_mentions"]
    assert mentions["parse"] == [] and [str(u) for u in mentions["users"]] == ["1001"] and not mentions.get("replied_user")

    await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"], timeout=5)
    status = emu.messages[interaction.original_id or ""]
    assert "a teal coupe" in status["content"] and f"job {job.id}" in status["content"]
    assert buttons_of(status) == [], "the result post carries the finished job's buttons"
    edits = [c for c in emu.calls_to("PATCH", r"/messages/@original$") if c.status == 200]
    texts = [c.json["content"] for c in edits]
    assert any("Queued" in t or "▱" in t for t in texts[:-1]), texts
    # While it ran, the status message offered Cancel (and only that).
    running = [c.json for c in edits if "▱" in c.json["content"] or "Starting" in c.json["content"]]
    assert running and all([b["custom_id"] for row in e["components"] for b in row["components"]] == [f"vbs:cancel:{job.id}"] for e in running)
    # Paced: never two edits of one message closer than the budget allows (5 per second).
    # The first is left out: its 429 retry delays its arrival, not its sending.
    gaps = [b.at - a.at for a, b in zip(edits[1:], edits[2:])]
    assert len(edits) >= 2 and all(gap >= 0.18 for gap in gaps), gaps
