"""/video end to end: the real discord.py client against the loopback Discord."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, discord_env, emu, followup_with_file, start_bot  # noqa: F401 (emu is a fixture)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu, DISCORD_EDIT_INTERVAL_SECONDS="0.2")
    running = await start_bot()
    try:
        yield running
    finally:
        await running.close()


async def test_video_defers_shows_progress_and_attaches_a_playable_mp4(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    # Commands are registered globally and copied to the configured guild for instant use.
    assert {c["name"] for c in emu.commands["global"]} >= {"video", "image", "jobs", "job", "cancel"}
    assert {c["name"] for c in emu.commands[emu.guild_id]} >= {"video"}
    emu.fail_next("PATCH", r"/messages/@original$")  # one 429 on the first status edit: discord.py must retry

    interaction = await emu.slash("video", {"prompt": "a teal coupe crossing a desert", "seconds": 1, "size": "256x144"})
    await asyncio.wait_for(interaction.answered.wait(), 3)
    assert interaction.callback is not None and interaction.callback["type"] == 5  # deferred, "thinking"

    result = await emu.wait_for(lambda: followup_with_file(emu, interaction.token), timeout=20)
    attachment = result["attachments"][0]
    assert attachment["filename"].endswith(".mp4")
    video = tmp_path / "got.mp4"
    video.write_bytes(emu.attachment_bytes(attachment))
    assert_video(video, width=256, height=144, seconds=1)
    assert [c["custom_id"].split(":")[1] for row in result["components"] for c in row["components"]] == ["reroll", "remix", "extend", "delete"]

    job = await bot.app.service.find_by_message("discord", interaction.original_id or "")
    assert job is not None
    job = await asyncio.wait_for(bot.app.runner.wait(job.id), 5)
    assert job.status is JobStatus.COMPLETED and job.origin.result_message_id == result["id"]
    assert job.origin.status_message_id == interaction.original_id
    status = emu.messages[interaction.original_id]
    await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id]["content"], timeout=5)
    edits = [c for c in emu.calls_to("PATCH", r"/messages/@original$") if c.status == 200]
    texts = [c.json["content"] for c in edits]
    assert any("Queued" in t or "▱" in t for t in texts[:-1]), texts
    assert "a teal coupe" in status["content"]
    # Coalesced: never two status edits closer than the configured interval (the first one
    # is left out: its 429 retry delays its arrival, not its sending).
    gaps = [b.at - a.at for a, b in zip(edits[1:], edits[2:])]
    assert len(edits) >= 2 and all(gap >= 0.18 for gap in gaps), gaps
