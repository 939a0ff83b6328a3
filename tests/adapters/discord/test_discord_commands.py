"""Every slash command with its options, choices and autocomplete, through the real discord.py
client against the loopback Discord; errors come back ephemeral, in the core's words."""
from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from bot.app import App
from bot.core.models import Job, JobKind, JobStatus
from providers.polling import PollPolicy
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    as_read,
    DiscordBot,
    DiscordEmulator,
    Interaction,
    buttons_of,
    discord_env,
    emu,
    job_of,
    result_post,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu, VIDEOBOT_DAILY_BUDGET_USER_USD="5", VIDEOBOT_MAX_PROMPT_CHARS="500")

    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)

    running = await start_bot(register=register)
    try:
        yield running
    finally:
        await running.close()


async def answer(interaction: Interaction) -> str:
    """The ephemeral answer of a command that does not start a job."""
    await asyncio.wait_for(interaction.answered.wait(), 3)
    assert interaction.callback is not None and interaction.callback["type"] == 4, interaction.callback
    assert interaction.callback["data"]["flags"] & 64, "answers to one user are ephemeral"
    return as_read(str(interaction.callback["data"]["content"]))  # as the user reads it (markdown escapes resolved)


async def choices(emu: DiscordEmulator, command: str, option: str, value: str, **others: Any) -> list[dict[str, Any]]:
    interaction = await emu.autocomplete(command, option, value, others=others)
    await asyncio.wait_for(interaction.answered.wait(), 3)
    assert interaction.callback is not None and interaction.callback["type"] == 8
    return list(interaction.callback["data"]["choices"])


async def done(bot: DiscordBot, interaction: Interaction) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait((await job_of(bot, interaction)).id), 30)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 36), "orange").save(buf, "PNG")
    return buf.getvalue()


async def test_video_takes_every_option(bot: DiscordBot, emu: DiscordEmulator) -> None:
    photo = emu.add_user_attachment("start.png", png(), "image/png")
    options = {"prompt": "a kite at dawn", "pipeline": "scripted", "size": "16:9", "seconds": 2, "seed": 42, "audio": True, "image": photo["id"]}
    interaction = await emu.slash("video", options, attachments={"image": photo})
    job = await done(bot, interaction)
    assert job.status is JobStatus.COMPLETED and job.pipeline == "scripted"
    assert (job.params.size, job.params.seconds, job.params.seed) == ("1280x720", 2, 42)
    assert job.params.options == {"audio": True} and job.params.image_path
    assert result_post(emu, job.id) is not None


async def test_autocomplete_offers_this_deployments_pipelines_sizes_and_jobs(bot: DiscordBot, emu: DiscordEmulator) -> None:
    video = {c["value"] for c in await choices(emu, "video", "pipeline", "")}
    assert {"local", "scripted"} <= video and "local-image" not in video
    assert all("sora" not in name for name in video), "pipelines without a key are not offered"
    assert {c["value"] for c in await choices(emu, "image", "pipeline", "")} == {"local-image"}
    sizes = await choices(emu, "video", "size", "", pipeline="scripted")
    assert sizes[0] == {"name": "128x72 (default)", "value": "128x72"}
    assert {"name": "16:9 · 1280x720", "value": "16:9"} in sizes
    assert [c["value"] for c in await choices(emu, "video", "size", "9:")] == ["9:16"]

    first = await done(bot, await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted"}))
    ids = await choices(emu, "job", "id", first.id[:3])
    assert ids[0]["value"] == first.id and "completed" in ids[0]["name"] and "a kite" in ids[0]["name"]
    assert await choices(emu, "job", "id", first.id[:3]) and not await choices(emu, "cancel", "id", "zzzz")


async def test_job_commands_run_through_the_shared_dispatcher(bot: DiscordBot, emu: DiscordEmulator, server: ScriptedServer) -> None:
    parent = await done(bot, await emu.slash("video", {"prompt": "a red kite", "pipeline": "scripted"}))

    remix = await done(bot, await emu.slash("remix", {"id": parent.id, "prompt": "the same kite -- at night"}))
    assert remix.kind is JobKind.REMIX and remix.prompt == "the same kite -- at night" and remix.parent_id == parent.id
    extend = await done(bot, await emu.slash("extend", {"id": parent.id, "seconds": 1, "prompt": "it lands"}))
    assert extend.kind is JobKind.EXTEND and extend.params.seconds == 1 and extend.prompt == "it lands"
    reroll = await done(bot, await emu.slash("reroll", {"id": parent.id}))
    assert reroll.kind is JobKind.VARIATION and reroll.params.seed != parent.params.seed
    for job in (remix, extend, reroll):
        assert job.status is JobStatus.COMPLETED and result_post(emu, job.id) is not None

    listing = await answer(await emu.slash("jobs"))
    assert listing.startswith("```") and all(j.id in listing for j in (parent, remix, extend, reroll))
    only = await answer(await emu.slash("jobs", {"status": "completed", "limit": 2}))
    assert len([line for line in only.splitlines() if "completed" in line]) == 2
    shown = await answer(await emu.slash("job", {"id": parent.id}))
    assert f"job {parent.id}" in shown and "status: completed (100%)" in shown and "prompt: a red kite" in shown
    assert f"/channels/{emu.guild_id}/{emu.channel_id}/{parent.origin.result_message_id}" in shown

    server.release.clear()
    held = await emu.slash("video", {"prompt": "a slow sunrise", "pipeline": "scripted"})
    running = await job_of(bot, held)
    assert await answer(await emu.slash("cancel", {"id": running.id})) == f"Job {running.id} is cancelled."
    assert (await asyncio.wait_for(bot.app.runner.wait(running.id), 10)).status is JobStatus.CANCELLED
    await emu.wait_for(lambda: "🚫 Cancelled" in emu.messages[held.original_id or ""]["content"])
    server.release.set()

    assert await answer(await emu.slash("delete", {"id": parent.id})) == f"Job {parent.id} deleted."
    await emu.wait_for(lambda: "🗑️ Deleted" in emu.messages[parent.origin.result_message_id or ""]["content"])
    assert emu.messages[parent.origin.result_message_id or ""]["attachments"] == []
    await emu.wait_for(lambda: "🗑️ Deleted" in emu.messages[parent.origin.status_message_id or ""]["content"])

    usage = await answer(await emu.slash("usage"))
    assert usage.startswith("Today (UTC) you have spent $") and "of your $5.00 daily budget" in usage


async def test_help_lists_this_deployments_pipelines_and_limits(bot: DiscordBot, emu: DiscordEmulator) -> None:
    text = await answer(await emu.slash("help"))
    commands = ("video", "image", "story", "jobs", "job", "remix", "extend", "reroll", "animate", "cancel", "delete", "usage", "settings", "confirm", "help")
    for command in commands:
        assert f"`/{command}`" in text
    assert "`/remix` `id` `prompt`" in text and "`seed`" in text, "each command with its options"
    assert "`local` (default)" in text and "`scripted`" in text and "`local-image` (default)" in text
    assert "✉️ the file sent to you privately" in text and "Animate" in text
    assert "sora" not in text, "only what is configured here"
    assert "prompts up to 500 characters" in text and "$5.00 a day per person" in text


@pytest.mark.parametrize(
    ("command", "options", "says"),
    [
        ("job", {"id": "nope"}, "No job 'nope'"),
        ("video", {"prompt": "a kite", "size": "2:1"}, "Aspect ratio 2:1 is not one of"),
        ("video", {"prompt": "a kite", "pipeline": "nonesuch"}, "Unknown pipeline 'nonesuch'"),
        ("video", {"prompt": "x" * 501}, "the limit is 500"),
        ("remix", {"id": "nope", "prompt": "at night"}, "No job 'nope'"),
        ("cancel", {"id": "nope"}, "No job 'nope'"),
    ],
)
async def test_errors_are_ephemeral_and_say_what_to_do(
    bot: DiscordBot, emu: DiscordEmulator, command: str, options: dict[str, Any], says: str
) -> None:
    interaction = await emu.slash(command, options)
    await asyncio.wait_for(interaction.answered.wait(), 3)
    # A job-starting command deferred first: its "thinking" message is removed and the error
    # comes as an ephemeral follow-up; the others answer ephemerally at once.
    if interaction.callback and interaction.callback["type"] == 5:
        await emu.wait_for(lambda: interaction.original_id not in emu.messages and interaction.followups)
        text = emu.messages[interaction.followups[-1]]["content"]
        assert emu.messages[interaction.followups[-1]]["flags"] & 64
    else:
        text = await answer(interaction)
    assert says in text
    assert await bot.app.service.list_jobs() == []


MANAGE_GUILD = 0x20


async def test_settings_are_shown_to_everyone_and_changed_by_the_servers_admins(bot: DiscordBot, emu: DiscordEmulator) -> None:
    shown = await answer(await emu.slash("settings"))
    assert "max_seconds" in shown
    refused = await answer(await emu.slash("settings", {"change": "set", "key": "max_seconds", "value": "2"}, user_id="2002"))
    assert "Only an admin" in refused
    changed = await answer(await emu.slash("settings", {"change": "set", "key": "max_seconds", "value": "2"}, permissions=MANAGE_GUILD))
    assert "max_seconds here: 2" in changed
    too_long = await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted", "seconds": 3})
    await emu.wait_for(lambda: too_long.followups)
    assert "at most 2 seconds" in emu.messages[too_long.followups[-1]]["content"]
    # Users set their own defaults.
    assert "seconds" in await answer(await emu.slash("settings", {"change": "me", "key": "seconds", "value": "2"}, user_id="2002"))
    mine = await done(bot, await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted"}, user_id="2002"))
    assert mine.params.seconds == 2
    assert "Pick a setting" in await answer(await emu.slash("settings", {"change": "set"}, permissions=MANAGE_GUILD))


async def test_roles_the_admins_chose_are_required_to_make_videos(bot: DiscordBot, emu: DiscordEmulator) -> None:
    await answer(await emu.slash("settings", {"change": "set", "key": "roles", "value": emu.role_id}, permissions=MANAGE_GUILD))
    refused = await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted"})
    await emu.wait_for(lambda: refused.followups)
    assert "needs one of the roles" in emu.messages[refused.followups[-1]]["content"]
    allowed = await done(bot, await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted"}, roles=[emu.role_id]))
    assert allowed.status is JobStatus.COMPLETED and emu.role_id in allowed.origin.extra["roles"]


async def test_a_costly_request_waits_for_its_owners_confirm(bot: DiscordBot, emu: DiscordEmulator) -> None:
    await answer(await emu.slash("settings", {"change": "set", "key": "confirm_above_usd", "value": "0.1"}, permissions=MANAGE_GUILD))
    asked = await emu.slash("video", {"prompt": "a costly kite", "pipeline": "scripted"})
    offer_id = await emu.wait_for(lambda: asked.original_id if "Confirm to start it" in emu.messages.get(asked.original_id or "", {}).get("content", "") else None)
    offer = emu.messages[offer_id]
    (confirm, decline) = [c for row in offer["components"] for c in row["components"]]
    assert confirm["custom_id"].startswith("vbc:confirm:") and decline["custom_id"].startswith("vbc:decline:")
    assert await bot.app.service.list_jobs() == [], "nothing queued or reserved before the Confirm"

    stranger = await emu.click(offer_id, confirm["custom_id"], user_id="2002")
    await asyncio.wait_for(stranger.answered.wait(), 3)
    assert stranger.callback is not None and "Only the person who asked" in stranger.callback["data"]["content"]
    owner = await emu.click(offer_id, confirm["custom_id"])
    await asyncio.wait_for(owner.answered.wait(), 3)
    assert owner.callback is not None and owner.callback["type"] == 6
    (job,) = await bot.app.service.list_jobs()
    assert job.origin.status_message_id == offer_id, "the offer became the job's status message"
    await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    await emu.wait_for(lambda: "✅ Done" in emu.messages[offer_id]["content"])
    assert result_post(emu, job.id) is not None

    again = await emu.slash("video", {"prompt": "another costly kite", "pipeline": "scripted"})
    await emu.wait_for(lambda: "Confirm to start it" in emu.messages.get(again.original_id or "", {}).get("content", ""))
    token = buttons_of(emu.messages[again.original_id or ""])[1].rsplit(":", 1)[1]
    no = await emu.click(again.original_id or "", f"vbc:decline:{token}")
    await asyncio.wait_for(no.answered.wait(), 3)
    assert "nothing was spent" in emu.messages[again.original_id or ""]["content"] and not emu.messages[again.original_id or ""]["components"]

    third = await emu.slash("video", {"prompt": "a third costly kite", "pipeline": "scripted"})
    await emu.wait_for(lambda: "Confirm to start it" in emu.messages.get(third.original_id or "", {}).get("content", ""))
    token = buttons_of(emu.messages[third.original_id or ""])[0].rsplit(":", 1)[1]
    queued = await answer(await emu.slash("confirm", {"token": token}))
    assert queued.startswith("Queued")
    await emu.wait_for(lambda: "✅ Done" in emu.messages[third.original_id or ""]["content"], timeout=20)


async def test_story_is_one_status_message_and_one_result(bot: DiscordBot, emu: DiscordEmulator) -> None:
    script = "a paper kite rises from a beach | the kite crosses a stormy sea | the kite lands on a lighthouse"
    asked = await emu.slash("story", {"script": script, "pipeline": "scripted", "seconds": 1, "transition": "fade"})
    # The plan comes first, privately; its Confirm's response is the story's status message.
    await asyncio.wait_for(asked.answered.wait(), 10)
    preview = await emu.wait_for(lambda: (m := emu.messages.get(asked.original_id or "")) and m["components"] and m)
    confirm = next(c for c in buttons_of(preview) if c.startswith("vbp:confirm:"))
    interaction = await emu.click(preview["id"], confirm)
    story = await done(bot, interaction)
    assert story.kind is JobKind.STORY and story.status is JobStatus.COMPLETED
    scenes = await bot.app.store.children(story.id)
    assert len(scenes) == 3 and all(s.origin.status_message_id is None for s in scenes)
    await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"])
    posted = [m for m in emu.channel_messages(emu.channel_id) if m["attachments"]]
    assert [m["id"] for m in posted] == [story.origin.result_message_id], "one result: the joined story, no scene posts"
    assert [a["filename"] for a in posted[0]["attachments"]] == [f"{story.id}.mp4", f"{story.id}-storyboard.jpg"]
