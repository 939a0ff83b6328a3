"""Stories in Slack end to end, through slack-bolt and slack_sdk against the loopback Slack:
the private preview (scene prompts, estimate, Confirm / Edit… / Cancel), the Edit modal, one
card that shows "scene i of N", one joined MP4 with the storyboard, then Redo scene 2 (exactly
one new create) and Add scene (N+1 scenes); Cancel and an over-budget Confirm create nothing."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.adapters.slack.stories import ADD_SCENE_BUTTON, ADD_SCENE_MODAL, REDO_SELECT, STORY_CANCEL, STORY_CONFIRM, STORY_EDIT, STORY_EDIT_MODAL
from bot.core.models import Job, JobKind, JobStatus
from providers.media import last_frame
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(90)
SCRIPT = "a lighthouse at dusk | the lamp turns on | a ship passes"
ASK = f"story {SCRIPT} --pipeline scripted --seconds 1 --size 128x72"


@pytest.fixture
async def server() -> ScriptedServer:
    return ScriptedServer()


async def start(slack: SlackEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, **env: str) -> SlackBot:
    slack_env(monkeypatch, slack, **env)
    return await start_slack_bot(register=lambda app: app.registry.register("scripted", lambda: scripted_pipeline(server)))


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    running = await start(slack, server, monkeypatch)
    try:
        yield running
    finally:
        await running.close()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


def answers(slack: SlackEmulator, key: str) -> list[dict[str, Any]]:
    return [r for r in slack.responses if r["key"] == key]


def texts(message: dict[str, Any]) -> str:
    found = [message.get("text", "")]
    for block in message.get("blocks") or []:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [e.get("text", "") for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return "\n".join(found)


async def previewed(bot: SlackBot, slack: SlackEmulator) -> tuple[dict[str, Any], str]:
    sent = await slack.slash(bot.url, "/video", ASK)
    assert sent.status == 200 and sent.body == ""
    preview = (await slack.wait_for(lambda: answers(slack, "cmd-U0ALICE")))[0]
    assert preview["response_type"] == "ephemeral"
    buttons = buttons_of(preview)
    assert [a for a, _ in buttons] == [STORY_CONFIRM, STORY_EDIT, STORY_CANCEL]
    return preview, buttons[0][1]


async def finished(bot: SlackBot, job_id: str) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait(job_id), 40)


def posted_mp4(slack: SlackEmulator, job: Job, tmp_path: Path) -> Path:
    """The story's MP4 as posted in Slack, written out for decoding."""
    reply = slack.messages[job.origin.result_message_id or ""]
    files = [slack.files[f] for f in reply["files"]]
    assert [f["name"] for f in files] == [f"{job.id}.mp4"]
    path = tmp_path / f"{job.id}.mp4"
    path.write_bytes(files[0]["data"])
    return path


def diff(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def test_preview_edit_confirm_progress_result_redo_and_add_scene(
    bot: SlackBot, slack: SlackEmulator, server: ScriptedServer, tmp_path: Path
) -> None:
    preview, token = await previewed(bot, slack)
    shown = texts(preview)
    assert all(scene in shown for scene in SCRIPT.split(" | ")) and "$0.75" in shown, shown
    assert await bot.app.store.list() == [] and server.creates == [] and cards(slack) == [], "nothing before Confirm"

    # Edit…: a modal with the scenes one per line; the submission replaces the preview.
    await slack.click_ephemeral(bot.url, preview, STORY_EDIT, token)
    modal = (await slack.wait_for(lambda: [v for v in slack.views if v["callback_id"] == STORY_EDIT_MODAL]))[0]
    field = modal["blocks"][0]["element"]
    assert field["initial_value"] == "\n".join(SCRIPT.split(" | "))
    sent = await slack.submit_view(bot.url, modal, {"scenes": "a lighthouse at dusk\nthe lamp turns green\na ship passes"})
    assert sent.status == 200
    edited = (await slack.wait_for(lambda: [r for r in answers(slack, "eph-U0ALICE") if r.get("replace_original")]))[0]
    assert "the lamp turns green" in texts(edited) and "$0.75" in texts(edited)
    new_token = buttons_of(edited)[0][1]
    assert new_token != token and await bot.app.store.list() == []

    # The old preview's Confirm is spent; the edited one starts the story with one card.
    await slack.click_ephemeral(bot.url, preview, STORY_CONFIRM, token)
    await slack.wait_for(lambda: [r for r in answers(slack, "eph-U0ALICE") if "already edited" in r.get("text", "")])
    assert await bot.app.store.list() == []
    # Scene 2 is held until the card shows it (the workspace's update budget may otherwise skip
    # a state that passes in milliseconds).
    scene_2 = server.hold[2] = asyncio.Event()
    await slack.click_ephemeral(bot.url, edited, STORY_CONFIRM, new_token)
    ts = (await slack.wait_for(lambda: cards(slack)))[0]
    story = await job_of_message(bot.app, ts)
    assert story.kind is JobKind.STORY and story.state["plan"]["scenes"][1] == "the lamp turns green"

    def updates() -> list[str]:
        return [str(c.args.get("text")) for c in slack.calls_to("chat.update") if c.args.get("ts") == ts]

    await slack.wait_for(lambda: any("scene 2 of 3" in t for t in updates()))
    scene_2.set()
    done = await finished(bot, story.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(server.creates) == 3 and cards(slack) == [ts], "one status message for the whole story"

    # One MP4 (the three scenes joined), and the storyboard on the card.
    await slack.wait_for(lambda: done.id and "✅" in slack.text_of(ts), timeout=10)
    done = await bot.app.service.get(story.id)
    assert_video(posted_mp4(slack, done, tmp_path), width=128, height=72, seconds=3.0)
    card = slack.messages[ts]
    board = next(b for b in card["blocks"] if b["type"] == "image")
    assert slack.files[board["slack_file"]["id"]]["data"][:3] == b"\xff\xd8\xff"
    menu = next(e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"] if e.get("action_id") == REDO_SELECT)
    assert [o["value"] for o in menu["options"]] == [f"{story.id}:{k}" for k in (1, 2, 3)]
    assert [a for a, _ in buttons_of(card)] == [ADD_SCENE_BUTTON, "vb_reroll", "vb_delete"]

    # Redo scene 2: exactly one new create, from scene 1's last frame; a new joined MP4.
    first_scenes = done.state["scene_jobs"]
    await slack.select(bot.url, ts, REDO_SELECT, f"{story.id}:2")
    redo_ts = (await slack.wait_for(lambda: [t for t in cards(slack) if t != ts]))[0]
    redo = await finished(bot, (await job_of_message(bot.app, redo_ts)).id)
    assert redo.status is JobStatus.COMPLETED, redo.error_message
    assert len(server.creates) == 4 and redo.parent_id == story.id
    scene1 = await bot.app.service.get(first_scenes[0])
    start_image = server.creates[3].input_image
    assert start_image is not None and diff(Image.open(start_image), last_frame(Path(scene1.output_path or ""))) < 3
    assert redo.state["scene_jobs"][0] == first_scenes[0] and redo.state["scene_jobs"][2] == first_scenes[2]
    assert redo.state["scene_jobs"][1] != first_scenes[1]
    await slack.wait_for(lambda: "✅" in slack.text_of(redo_ts), timeout=10)
    assert_video(posted_mp4(slack, await bot.app.service.get(redo.id), tmp_path), width=128, height=72, seconds=3.0)
    # Only the new scene is paid for again.
    assert redo.cost_actual == pytest.approx(0.25)

    # Add scene: a modal with a prompt; four scenes, one more create, from the last frame.
    await slack.click(bot.url, ts, ADD_SCENE_BUTTON, story.id)
    add_modal = (await slack.wait_for(lambda: [v for v in slack.views if v["callback_id"] == ADD_SCENE_MODAL]))[0]
    await slack.submit_view(bot.url, add_modal, {"prompt": "the ship reaches the harbour"})
    add_ts = (await slack.wait_for(lambda: [t for t in cards(slack) if t not in (ts, redo_ts)]))[0]
    longer = await finished(bot, (await job_of_message(bot.app, add_ts)).id)
    assert longer.status is JobStatus.COMPLETED, longer.error_message
    assert len(longer.state["plan"]["scenes"]) == 4 and longer.state["scene_jobs"][:3] == first_scenes
    assert len(server.creates) == 5 and server.creates[4].prompt.endswith("the ship reaches the harbour")
    await slack.wait_for(lambda: "✅" in slack.text_of(add_ts), timeout=10)
    assert_video(posted_mp4(slack, await bot.app.service.get(longer.id), tmp_path), width=128, height=72, seconds=4.0)


async def test_cancel_from_the_preview_creates_nothing(bot: SlackBot, slack: SlackEmulator, server: ScriptedServer) -> None:
    preview, token = await previewed(bot, slack)
    await slack.click_ephemeral(bot.url, preview, STORY_CANCEL, token)
    said = (await slack.wait_for(lambda: answers(slack, "eph-U0ALICE")))[0]
    assert "nothing" in said["text"] and said["replace_original"] is True
    await slack.click_ephemeral(bot.url, preview, STORY_CONFIRM, token)
    await slack.wait_for(lambda: [r for r in answers(slack, "eph-U0ALICE") if "already cancelled" in r.get("text", "")])
    assert await bot.app.store.list() == [] and server.creates == [] and cards(slack) == []


async def test_over_budget_confirm_creates_nothing(settings: Any, slack: SlackEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bot = await start(slack, server, monkeypatch, VIDEOBOT_DAILY_BUDGET_USER_USD="0.5")
    try:
        preview, token = await previewed(bot, slack)  # three scenes of $0.25 > $0.50
        await slack.click_ephemeral(bot.url, preview, STORY_CONFIRM, token)
        said = (await slack.wait_for(lambda: answers(slack, "eph-U0ALICE")))[0]
        assert "budget" in said["text"].lower()
        assert await bot.app.store.list() == [] and server.creates == [] and cards(slack) == []
    finally:
        await bot.close()
