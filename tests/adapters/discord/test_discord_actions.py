"""Buttons and reactions as only Discord has them, through the real discord.py client against the
loopback Discord: a server admin (Manage Server) and a channel moderator (Manage Messages, which a
channel overwrite can grant and so makes no admin), the interaction callback
each click gets (a modal, an in-place edit, a deferred update), status messages of reaction-started
jobs answering the reacted message, ✉️'s file by DM, and an animated image decoded.

The owner / other member / admin table of every command, button and reaction is shared by every
platform: tests/adapters/test_scenarios.py."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.core.models import Job, JobKind, JobStatus
from providers.polling import PollPolicy
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    MANAGE_MESSAGES,
    DiscordBot,
    DiscordEmulator,
    Interaction,
    buttons_of,
    channel_posts,
    discord_env,
    emu,
    job_of,
    result_post,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(90)
OWNER, OTHER, ADMIN, MODERATOR, SERVER_ADMIN = "1001", "2002", "9009", "4004", "5005"
MANAGE_GUILD = 1 << 5
#: Who acts, as (user id, permissions): an admin by the bot's setting, a server admin by Manage Server,
#: a channel moderator by Manage Messages (no admin of the bot: a channel overwrite can grant it).
WHO = {
    "owner": (OWNER, 0), "other": (OTHER, 0), "admin": (ADMIN, 0), "moderator": (MODERATOR, MANAGE_MESSAGES),
    "server admin": (SERVER_ADMIN, MANAGE_GUILD),
}  # fmt: skip
REFUSED = "Only the person who asked"


@pytest.fixture
async def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu, VIDEOBOT_ADMIN_USER_IDS=ADMIN, VIDEOBOT_MAX_CONCURRENT_JOBS="8", VIDEOBOT_MAX_RUNNING_PER_USER="8")

    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)

    running = await start_bot(register=register)
    try:
        yield running
    finally:
        await running.close()


async def finished(bot: DiscordBot, job_id: str) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait(job_id), 30)


async def make_video(bot: DiscordBot, emu: DiscordEmulator, prompt: str = "a red kite over green hills") -> tuple[dict[str, Any], Job]:
    interaction = await emu.slash("video", {"prompt": prompt, "pipeline": "scripted", "seconds": 1})
    job = await finished(bot, (await job_of(bot, interaction)).id)
    assert job.status is JobStatus.COMPLETED
    return emu.messages[job.origin.result_message_id or ""], job


async def children(bot: DiscordBot, parent: Job, count: int) -> list[Job]:
    for _ in range(500):
        found = await bot.app.store.children(parent.id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} child job(s) of {parent.id}")


def ephemeral_text(interaction: Interaction) -> str:
    assert interaction.callback is not None and interaction.callback["type"] == 4, interaction.callback
    assert interaction.callback["data"]["flags"] & 64, "errors are ephemeral"
    return str(interaction.callback["data"]["content"])


async def dms(emu: DiscordEmulator, user_id: str, *, with_file: bool = False) -> list[dict[str, Any]]:
    return await emu.wait_for(lambda: emu.dm_channels.get(user_id) and channel_posts(emu, emu.dm_channels[user_id], with_file=with_file))


@pytest.mark.parametrize("who", ["server admin"])
async def test_cancel_button_while_running(bot: DiscordBot, emu: DiscordEmulator, server: ScriptedServer, who: str) -> None:
    server.release.clear()  # the job keeps running until the test is done with it
    interaction = await emu.slash("video", {"prompt": "a slow sunrise", "pipeline": "scripted", "seconds": 1})
    job = await job_of(bot, interaction)
    status_id = interaction.original_id or ""
    cancel = f"vbs:cancel:{job.id}"
    await emu.wait_for(lambda: buttons_of(emu.messages[status_id]) == [cancel] and "▱" in emu.messages[status_id]["content"])

    user, permissions = WHO[who]
    click = await emu.click(status_id, cancel, user_id=user, permissions=permissions)
    await asyncio.wait_for(click.answered.wait(), 3)
    assert click.callback is not None and click.callback["type"] == 6  # acknowledged; the message follows the job
    done = await finished(bot, job.id)
    assert done.status is JobStatus.CANCELLED and server.cancels == [done.remote_id]
    await emu.wait_for(lambda: "🚫 Cancelled" in emu.messages[status_id]["content"])
    assert buttons_of(emu.messages[status_id]) == [], "nothing left to click on a cancelled job"


async def test_a_channel_moderator_cannot_cancel_someone_elses_job(bot: DiscordBot, emu: DiscordEmulator, server: ScriptedServer) -> None:
    server.release.clear()
    interaction = await emu.slash("video", {"prompt": "a slow sunrise", "pipeline": "scripted", "seconds": 1})
    job = await job_of(bot, interaction)
    status_id = interaction.original_id or ""
    cancel = f"vbs:cancel:{job.id}"
    await emu.wait_for(lambda: buttons_of(emu.messages[status_id]) == [cancel])
    user, permissions = WHO["moderator"]
    click = await emu.click(status_id, cancel, user_id=user, permissions=permissions)
    await asyncio.wait_for(click.answered.wait(), 3)
    assert click.callback is not None and REFUSED in click.callback["data"]["content"]
    assert click.callback["data"]["flags"] & 64, "the refusal is private"
    assert (await bot.app.service.get(job.id)).status is not JobStatus.CANCELLED and server.cancels == []
    server.release.set()


@pytest.mark.parametrize("who", ["server admin", "moderator", "other"])
async def test_result_buttons_and_reactions(bot: DiscordBot, emu: DiscordEmulator, who: str) -> None:
    result, parent = await make_video(bot, emu)
    assert buttons_of(result) == [f"vb:{a}:{parent.id}" for a in ("reroll", "remix", "extend", "delete")]
    user, permissions = WHO[who]

    # Re-roll, Remix… and Extend… start new jobs for whoever clicks; the click's answer is their status message.
    reroll = await emu.click(result["id"], f"vb:reroll:{parent.id}", user_id=user, permissions=permissions)
    remix_click = await emu.click(result["id"], f"vb:remix:{parent.id}", user_id=user, permissions=permissions)
    await asyncio.wait_for(remix_click.answered.wait(), 3)
    assert remix_click.callback is not None and remix_click.callback["type"] == 9  # a modal
    remix = await emu.submit_modal(remix_click, {"New prompt": "the same kite at night"}, user_id=user)
    extend_click = await emu.click(result["id"], f"vb:extend:{parent.id}", user_id=user, permissions=permissions)
    await asyncio.wait_for(extend_click.answered.wait(), 3)
    extend = await emu.submit_modal(extend_click, {"Seconds to add": "1", "What happens next (optional)": "it lands"}, user_id=user)
    # 🔁 by reaction: no interaction behind it, so the bot posts the status message (a reply).
    await emu.react(result["id"], "🔁", user_id=user)

    made = {}
    for name, interaction in (("reroll", reroll), ("remix", remix), ("extend", extend)):
        made[name] = await job_of(bot, interaction)
        assert made[name].origin.user_id == user and made[name].parent_id == parent.id
    assert made["reroll"].kind is JobKind.VARIATION
    assert made["remix"].kind is JobKind.REMIX and made["remix"].prompt == "the same kite at night"
    assert made["extend"].kind is JobKind.EXTEND and made["extend"].params.seconds == 1 and made["extend"].prompt == "it lands"
    by_reaction = [c for c in await children(bot, parent, 4) if c.id not in {j.id for j in made.values()}]
    (reacted,) = by_reaction
    assert reacted.kind is JobKind.VARIATION and reacted.origin.user_id == user
    for job in [*made.values(), reacted]:
        done = await finished(bot, job.id)
        assert done.status is JobStatus.COMPLETED and result_post(emu, job.id) is not None
    status = emu.messages[(await bot.app.service.get(reacted.id)).origin.status_message_id or ""]
    assert status["message_reference"]["message_id"] == result["id"] and "webhook_id" not in status
    await emu.wait_for(lambda: "✅ Done" in emu.messages[status["id"]]["content"])

    # ✉️: the file, privately, for anyone.
    await emu.react(result["id"], "✉️", user_id=user)
    (dm,) = await dms(emu, user, with_file=True)
    assert dm["attachments"][0]["filename"] == f"{parent.id}.mp4"

    # Delete (button) and ❌ (reaction, on a finished job): the owner and admins only.
    delete = await emu.click(result["id"], f"vb:delete:{parent.id}", user_id=user, permissions=permissions)
    await asyncio.wait_for(delete.answered.wait(), 3)
    if who in ("other", "moderator"):  # a channel moderator is a member like any other here
        assert REFUSED in ephemeral_text(delete)
        await emu.react(result["id"], "❌", user_id=user)
        notice = await emu.wait_for(lambda: [m for m in channel_posts(emu, emu.dm_channels[user]) if REFUSED in m["content"]])
        assert notice and (await bot.app.service.get(parent.id)).deleted_at is None
        assert emu.messages[result["id"]]["attachments"], "the result is untouched"
        return
    assert delete.callback is not None and delete.callback["type"] == 7  # the clicked message, edited at once
    assert (await bot.app.service.get(parent.id)).deleted_at is not None
    assert emu.messages[result["id"]]["attachments"] == [] and buttons_of(emu.messages[result["id"]]) == []
    assert "🗑️ Deleted" in emu.messages[result["id"]]["content"]
    await emu.wait_for(lambda: "🗑️ Deleted" in emu.messages[parent.origin.status_message_id or ""]["content"])


async def test_animate_an_image_result_by_button_and_by_reaction(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    interaction = await emu.slash("image", {"prompt": "a lighthouse on a cliff", "size": "256x144"})
    image = await finished(bot, (await job_of(bot, interaction)).id)
    assert image.kind is JobKind.IMAGE and image.status is JobStatus.COMPLETED
    result = emu.messages[image.origin.result_message_id or ""]
    assert result["attachments"][0]["filename"] == f"{image.id}.png"
    assert buttons_of(result) == [f"vb:{a}:{image.id}" for a in ("animate", "reroll", "delete")]

    click = await emu.click(result["id"], f"vb:animate:{image.id}", user_id=OTHER)
    video = await job_of(bot, click)
    assert video.parent_id == image.id and video.params.image_path and video.prompt == image.prompt
    assert video.origin.user_id == OTHER and video.origin.status_message_id == click.original_id
    done = await finished(bot, video.id)
    posted = emu.messages[done.origin.result_message_id or ""]
    clip = tmp_path / "animated.mp4"
    clip.write_bytes(emu.attachment_bytes(posted["attachments"][0]))
    width, height = (int(side) for side in done.params.size.split("x"))
    assert_video(clip, width=width, height=height, seconds=done.params.seconds)

    await emu.react(result["id"], "🎬")  # the same by reaction: a status message is posted for it
    (first, second) = sorted(await children(bot, image, 2), key=lambda j: j.created_at)
    assert second.params.image_path and second.origin.user_id == OWNER
    second = await finished(bot, second.id)
    assert result_post(emu, second.id) is not None
    status = emu.messages[second.origin.status_message_id or ""]
    assert status["message_reference"]["message_id"] == result["id"]

    await emu.react(posted["id"], "🎬", user_id=OTHER)  # a video cannot be animated: told why, privately
    (notice,) = await dms(emu, OTHER)
    assert "Animate makes a video from an image" in notice["content"]
