"""Uploads that fit the limit, refused attachments, the token switch and a restart mid-job."""
from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App
from providers.media import probe_video
from providers.polling import PollPolicy
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    DiscordBot,
    DiscordEmulator,
    discord_env,
    emu,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)


def with_scripted(server: ScriptedServer) -> Any:
    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST

    return register


async def job_for(bot: DiscordBot, interaction: Any) -> Any:
    await asyncio.wait_for(interaction.answered.wait(), 3)
    for _ in range(200):
        job = await bot.app.service.find_by_message("discord", interaction.original_id or "")
        if job is not None:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("no job for that status message")


async def test_a_video_over_the_limit_is_reencoded_to_fit_or_replaced_by_a_note(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot()
    try:
        emu.attachment_size_limit = 12_000  # the 640x360 clip is ~20 KB
        interaction = await emu.slash("video", {"prompt": "a red kite over green hills", "seconds": 2, "size": "640x360"})
        job = await asyncio.wait_for(bot.app.runner.wait((await job_for(bot, interaction)).id), 20)
        posted = emu.messages[job.origin.result_message_id]
        assert Path(job.output_path).stat().st_size > 12_000, "the test needs a source over the limit"
        data = emu.attachment_bytes(posted["attachments"][0])
        assert len(data) <= 12_000 and "Re-encoded to fit" in posted["content"]
        video = tmp_path / "fit.mp4"
        video.write_bytes(data)
        info = probe_video(video)
        assert_video(video, width=info.width, height=info.height, seconds=2)

        emu.attachment_size_limit = 1_500  # nothing playable fits: a clear note instead of silence
        interaction = await emu.slash("video", {"prompt": "a red kite over green hills", "seconds": 2, "size": "640x360"})
        job = await asyncio.wait_for(bot.app.runner.wait((await job_for(bot, interaction)).id), 20)
        note = emu.messages[job.origin.result_message_id]
        assert "could not be shrunk" in note["content"] and "upload limit" in note["content"]
        assert all(a["size"] <= 1_500 for a in note["attachments"])
    finally:
        await bot.close()


async def test_attachments_that_are_not_images_or_too_large_are_refused_before_download(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot()
    try:
        text = emu.add_user_attachment("notes.txt", b"hello", "text/plain")
        refused = await emu.slash("video", {"prompt": "from my notes", "image": text["id"]}, attachments={"image": text})
        await asyncio.wait_for(refused.answered.wait(), 3)
        assert refused.callback and refused.callback["type"] == 4 and refused.callback["data"]["flags"] & 64
        assert "not an image" in refused.callback["data"]["content"]

        huge = emu.add_user_attachment("huge.png", b"\x89PNG", "image/png")
        huge["size"] = 500_000_000
        refused = await emu.slash("video", {"prompt": "from a huge photo", "image": huge["id"]}, attachments={"image": huge})
        await asyncio.wait_for(refused.answered.wait(), 3)
        assert "the limit is" in refused.callback["data"]["content"]
        assert emu.downloads == [] and await bot.app.service.list_jobs() == []

        buf = io.BytesIO()
        Image.new("RGB", (64, 36), "orange").save(buf, "PNG")
        photo = emu.add_user_attachment("start.png", buf.getvalue(), "image/png")
        ok = await emu.slash("video", {"prompt": "from a photo", "seconds": 1, "size": "256x144", "image": photo["id"]}, attachments={"image": photo})
        job = await asyncio.wait_for(bot.app.runner.wait((await job_for(bot, ok)).id), 20)
        assert emu.messages[job.origin.result_message_id]["attachments"]
        assert job.params.image_path and emu.downloads == [photo["id"]]
    finally:
        await bot.close()


async def test_long_jobs_switch_to_the_bot_token_before_the_interaction_token_dies(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens "live" 1.5 s here; the bot switches 899 s before the real 900 s, i.e. after 1 s.
    emu.token_ttl = 1.5
    discord_env(monkeypatch, emu, DISCORD_TOKEN_MARGIN_SECONDS="899")
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a slow sunrise", "seconds": 1, "size": "128x72", "pipeline": "scripted"})
        job = await job_for(bot, interaction)
        await emu.wait_for(lambda: emu.calls_to("PATCH", r"/@original$"))
        await asyncio.sleep(max(0.0, interaction.created + 1.7 - time.time()))  # past the token's life
        server.release.set()
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        status_path = rf"/channels/{emu.channel_id}/messages/{interaction.original_id}$"
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id]["content"])
        assert emu.calls_to("PATCH", status_path), "the same status message, edited with the bot token"
        assert not [c for c in emu.calls if c.status == 401], "no call with an expired interaction token"
        result = emu.messages[done.origin.result_message_id]
        assert "webhook_id" not in result and result["attachments"][0]["filename"] == f"{job.id}.mp4"
    finally:
        await bot.close()


async def test_a_restart_mid_job_keeps_updating_the_same_status_message(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    discord_env(monkeypatch, emu)
    server = ScriptedServer()
    server.release.clear()
    first = await start_bot(register=with_scripted(server))
    interaction = await emu.slash("video", {"prompt": "survives a restart", "seconds": 1, "size": "128x72", "pipeline": "scripted"})
    try:
        job = await job_for(first, interaction)
        deadline = time.monotonic() + 15  # a bound for a hung run, not a timing claim
        # The restart must land after the create: else "resume without a second create" could
        # silently become "restart before the create" (one create either way).
        while not ((current := await first.app.store.get(job.id)) and current.remote_id and current.progress > 0):
            assert time.monotonic() < deadline, "the remote id was never stored (nor progress polled) before the restart"
            await asyncio.sleep(0.02)
        assert len(server.creates) == 1
    finally:
        await first.close()  # the process goes away mid-job

    second = await start_bot(register=with_scripted(server))
    try:
        server.release.set()
        done = await asyncio.wait_for(second.app.runner.wait(job.id), 20)
        assert len(server.creates) == 1
        status_path = rf"/channels/{emu.channel_id}/messages/{interaction.original_id}$"
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id]["content"])
        assert emu.calls_to("PATCH", status_path), "after the restart the bot token edits the same message"
        result = emu.messages[done.origin.result_message_id]
        video = tmp_path / "after-restart.mp4"
        video.write_bytes(emu.attachment_bytes(result["attachments"][0]))
        assert_video(video, width=128, height=72, seconds=1)
    finally:
        await second.close()


async def test_a_file_discord_refuses_still_gets_a_result_message_with_a_note(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot()
    try:
        interaction = await emu.slash("video", {"prompt": "a red kite", "seconds": 1, "size": "256x144"})
        emu.channel_size_limit = 1_000  # lower than the limit the interaction announced
        job = await asyncio.wait_for(bot.app.runner.wait((await job_for(bot, interaction)).id), 20)
        result = emu.messages[job.origin.result_message_id]
        assert result["attachments"] == [] and "refused the file" in result["content"]
        creates = emu.calls_to("POST", rf"^/channels/{emu.channel_id}/messages$")
        assert [c.status for c in creates] == [413, 200]
        assert creates[0].json["nonce"] == creates[1].json["nonce"] == f"vbr-{job.id}", "the refused create made nothing"
    finally:
        await bot.close()
