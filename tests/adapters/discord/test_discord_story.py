"""Stories in Discord end to end, through the real discord.py client against the loopback
Discord: `/story` answers with an ephemeral preview (scene prompts, estimate, Confirm / Edit… /
Cancel), the Edit modal changes a scene in place, Confirm's response is the one status message
("scene i of N"), the result is one MP4 with the storyboard; Redo scene 2 (a select) makes
exactly one new create and a new MP4; Add scene makes N+1 scenes; Cancel makes nothing."""
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
    EPHEMERAL,
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
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(90)
SCENES = ["a lighthouse at dusk", "the lamp turns on", "a ship passes"]
ASK = {"script": " | ".join(SCENES), "pipeline": "scripted", "seconds": 1, "size": "128x72"}


@pytest.fixture
async def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu)

    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)

    running = await start_bot(register=register)
    try:
        yield running
    finally:
        await running.close()


async def answered(emu: DiscordEmulator, interaction: Interaction, check: Any = None) -> dict[str, Any]:
    """The interaction's original response once it shows what `check` wants."""
    await asyncio.wait_for(interaction.answered.wait(), 10)

    def ready() -> dict[str, Any] | None:
        message = emu.messages.get(interaction.original_id or "")
        return message if message is not None and (check is None or check(message)) else None

    return await emu.wait_for(ready)


async def previewed(emu: DiscordEmulator) -> tuple[dict[str, Any], str]:
    asked = await emu.slash("story", ASK)
    preview = await answered(emu, asked, lambda m: "Story preview" in m["content"])
    assert preview["flags"] & EPHEMERAL, "only the asker sees the preview"
    token = buttons_of(preview)[0].rsplit(":", 1)[1]
    assert buttons_of(preview) == [f"vbp:{verb}:{token}" for verb in ("confirm", "edit", "cancel")]
    return preview, token


async def finished(bot: DiscordBot, job_id: str) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait(job_id), 40)


async def posted(emu: DiscordEmulator, job: Job, tmp_path: Path) -> tuple[Path, list[str]]:
    """The story's result post: its MP4 written out for decoding, and every file name."""
    post = await emu.wait_for(lambda: result_post(emu, job.id))
    names = [a["filename"] for a in post["attachments"]]
    video = next(a for a in post["attachments"] if a["filename"] == f"{job.id}.mp4")
    path = tmp_path / video["filename"]
    path.write_bytes(emu.attachment_bytes(video))
    return path, names


async def test_preview_edit_confirm_progress_result_redo_and_add_scene(
    bot: DiscordBot, emu: DiscordEmulator, server: ScriptedServer, tmp_path: Path
) -> None:
    preview, token = await previewed(emu)
    assert all(scene in preview["content"] for scene in SCENES) and "$0.75" in preview["content"]
    assert await bot.app.store.list() == [] and server.creates == []

    # Edit…: a modal with one scene per line; the preview is updated in place, with a new token.
    opened = await emu.click(preview["id"], f"vbp:edit:{token}")
    await asyncio.wait_for(opened.answered.wait(), 10)
    assert opened.callback and opened.callback["type"] == 9
    field = opened.callback["data"]["components"][0]["components"][0]
    assert field["value"] == "\n".join(SCENES)
    await emu.submit_modal(opened, {"Scenes, one per line": "a lighthouse at dusk\nthe lamp turns green\na ship passes"})
    preview = await emu.wait_for(lambda: (m := emu.messages[preview["id"]]) and "turns green" in m["content"] and m)
    new_token = buttons_of(preview)[0].rsplit(":", 1)[1]
    assert new_token != token and "$0.75" in preview["content"] and await bot.app.store.list() == []

    # Confirm: its response is the story's one public status message. Scene 2 is held until the
    # status shows it (the edit budget may otherwise skip a state that passes in milliseconds).
    scene_2 = server.hold[2] = asyncio.Event()
    confirmed = await emu.click(preview["id"], f"vbp:confirm:{new_token}")
    story = await job_of(bot, confirmed)
    status = emu.messages[confirmed.original_id or ""]
    assert not status["flags"] & EPHEMERAL
    assert story.kind is JobKind.STORY and story.state["plan"]["scenes"][1] == "the lamp turns green"

    def edits() -> list[str]:
        return [str((c.json or {}).get("content")) for c in emu.calls if c.method == "PATCH" and confirmed.token in c.path]

    await emu.wait_for(lambda: any("scene 2 of 3" in e for e in edits()))
    scene_2.set()
    done = await finished(bot, story.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(server.creates) == 3
    assert not any(job_of_scene in m["content"] for m in emu.messages.values() for job_of_scene in done.state["scene_jobs"]), \
        "scenes have no messages of their own"

    video, names = await posted(emu, done, tmp_path)
    assert names == [f"{story.id}.mp4", f"{story.id}-storyboard.jpg"]
    assert_video(video, width=128, height=72, seconds=3.0)
    result = result_post(emu, story.id)
    assert result is not None
    assert buttons_of(result) == [f"vb:{a}:{story.id}" for a in ("redo", "add-scene", "reroll", "delete")]

    # Redo scene…: a private select of the scenes; scene 2 is made again, once, and joined again.
    picker_click = await emu.click(result["id"], f"vb:redo:{story.id}")
    picker = await answered(emu, picker_click)
    assert picker["flags"] & EPHEMERAL
    options = [o["value"] for row in picker["components"] for c in row["components"] for o in c["options"]]
    assert options == ["1", "2", "3"]
    picked = await emu.select(picker["id"], f"vbr:{story.id}", ["2"])
    redo = await finished(bot, (await job_of(bot, picked)).id)
    assert redo.status is JobStatus.COMPLETED, redo.error_message
    assert len(server.creates) == 4 and redo.parent_id == story.id
    assert [redo.state["scene_jobs"][i] == done.state["scene_jobs"][i] for i in range(3)] == [True, False, True]
    video, _ = await posted(emu, redo, tmp_path)
    assert_video(video, width=128, height=72, seconds=3.0)

    # Add scene…: a modal with a prompt; four scenes, one more create.
    add_click = await emu.click(result["id"], f"vb:add-scene:{story.id}")
    await asyncio.wait_for(add_click.answered.wait(), 10)
    added = await emu.submit_modal(add_click, {"What happens next": "the ship reaches the harbour"})
    longer = await finished(bot, (await job_of(bot, added)).id)
    assert longer.status is JobStatus.COMPLETED, longer.error_message
    assert len(longer.state["plan"]["scenes"]) == 4 and longer.state["scene_jobs"][:3] == done.state["scene_jobs"]
    assert len(server.creates) == 5
    video, _ = await posted(emu, longer, tmp_path)
    assert_video(video, width=128, height=72, seconds=4.0)

    # Re-roll (🔁, as for videos): the same script again, every scene new.
    await emu.react(result["id"], "🔁")
    rerolled = await emu.wait_for(lambda: len(server.creates) == 8 or None, timeout=30)
    assert rerolled


async def test_cancel_from_the_preview_creates_nothing(bot: DiscordBot, emu: DiscordEmulator, server: ScriptedServer) -> None:
    preview, token = await previewed(emu)
    await emu.click(preview["id"], f"vbp:cancel:{token}")
    await emu.wait_for(lambda: "Cancelled" in emu.messages[preview["id"]]["content"] or None)
    assert buttons_of(emu.messages[preview["id"]]) == []
    assert await bot.app.store.list() == [] and server.creates == []
