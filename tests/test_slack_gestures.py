"""Every button and reaction, for the job's owner, someone else and an admin: one scenario table.

Each gesture is what a Slack user does (a block_actions click, a reaction_added event) and
each outcome is what they would see: the card cancelled or gone, a new job with its own
card, a modal, or a private refusal. What a gesture means is the core's (`perform`); the
table pins that Slack maps every one of them there.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import App
from bot.core.models import Job, JobKind, JobStatus
from providers.polling import PollPolicy
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(90)
OWNER, OTHER, ADMIN = "U0ALICE", "U0MALLORY", "U0ADMIN"


@dataclass(frozen=True)
class Gesture:
    kind: str  # "button" or "reaction"
    name: str  # the action id or the reaction's name
    target: str  # "running", "video" or "image"
    #: What the owner/admin get: "cancelled", "deleted", "started:<kind>", "modal:<callback id>".
    outcome: str
    #: Whether someone else is refused (owner-only gestures).
    owner_only: bool = False


GESTURES = [
    Gesture("button", "vb_cancel", "running", "cancelled", owner_only=True),
    Gesture("reaction", "x", "running", "cancelled", owner_only=True),
    Gesture("button", "vb_reroll", "video", "started:variation"),
    Gesture("reaction", "repeat", "video", "started:variation"),
    Gesture("button", "vb_remix", "video", "modal:vb_remix_modal"),
    Gesture("button", "vb_extend", "video", "modal:vb_extend_modal"),
    Gesture("button", "vb_delete", "video", "deleted", owner_only=True),
    Gesture("reaction", "x", "video", "deleted", owner_only=True),
    Gesture("button", "vb_animate", "image", "started:generate"),
    Gesture("reaction", "clapper", "image", "started:generate"),
    Gesture("button", "vb_reroll", "image", "started:image"),
    Gesture("button", "vb_delete", "image", "deleted", owner_only=True),
]


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, VIDEOBOT_ADMIN_USER_IDS=ADMIN, VIDEOBOT_MAX_CONCURRENT_JOBS="12", VIDEOBOT_MAX_RUNNING_PER_USER="12")
    held = ScriptedServer()
    held.release.clear()  # "running" jobs stay running until the test ends

    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(held))
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)

    running = await start_slack_bot(register=register)
    try:
        yield running
    finally:
        held.release.set()
        await running.close()


async def target(bot: SlackBot, slack: SlackEmulator, kind: str) -> tuple[Job, str]:
    """A job of the owner's in the state the gesture needs, and its card."""
    command, text = {
        "running": ("/video", "a long wait --pipeline scripted --seconds 1 --size 128x72"),
        "video": ("/video", "a paper boat on a pond --seconds 1 --size 128x72"),
        "image": ("/image", "a lighthouse at dusk --size 128x128"),
    }[kind]
    before = len(cards(slack))
    await slack.slash(bot.url, command, text, user_id=OWNER)
    ts = (await slack.wait_for(lambda: cards(slack)[before:]))[0]
    job = await job_of_message(bot.app, ts)
    if kind == "running":
        await slack.wait_for(lambda: "vb_cancel" in dict(buttons_of(slack.messages[ts])) and "🎬" in slack.text_of(ts))
        job = await bot.app.service.get(job.id)
    else:
        job = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        await slack.wait_for(lambda: "vb_reroll" in dict(buttons_of(slack.messages[ts])))
    return job, ts


async def gesture(bot: SlackBot, slack: SlackEmulator, g: Gesture, job: Job, ts: str, actor: str) -> None:
    if g.kind == "button":
        assert g.name in dict(buttons_of(slack.messages[ts])), f"{g.name} is not on the card"
        sent = await slack.click(bot.url, ts, g.name, job.id, user_id=actor)
    else:
        sent = await slack.react(bot.url, ts, g.name, user_id=actor)
    assert sent.status == 200 and sent.elapsed < 3


def refusals(slack: SlackEmulator, actor: str) -> list[str]:
    """What the actor was told privately (button answers by response_url, reaction answers by chat.postEphemeral)."""
    return [r["text"] for r in slack.responses if r["key"] == f"act-{actor}"] + [e["text"] for e in slack.ephemerals if e["user"] == actor]


async def children(bot: SlackBot, parent: Job) -> list[Job]:
    return [j for j in await bot.app.service.list_jobs(limit=200) if j.parent_id == parent.id]


@pytest.mark.parametrize("actor", [OWNER, OTHER, ADMIN])
async def test_every_gesture_for_owner_other_and_admin(bot: SlackBot, slack: SlackEmulator, actor: str) -> None:
    shared: dict[str, tuple[Job, str]] = {}  # harmless gestures share one target per kind
    for g in GESTURES:
        destructive = g.outcome in ("cancelled", "deleted")
        if destructive or g.target not in shared:
            made = await target(bot, slack, g.target)
            if not destructive:
                shared[g.target] = made
        job, ts = made if destructive else shared[g.target]
        told, views, kids = len(refusals(slack, actor)), len(slack.views), {c.id for c in await children(bot, job)}
        await gesture(bot, slack, g, job, ts, actor)
        where = f"{g.kind} {g.name} on a {g.target} job by {actor}"

        if g.owner_only and actor == OTHER:
            note = (await slack.wait_for(lambda: refusals(slack, actor)[told:]))[0]
            assert "Only the person who asked" in note, where
            current = await bot.app.service.get(job.id)
            assert current.deleted_at is None and current.status is not JobStatus.CANCELLED and ts in slack.messages, where
        elif g.outcome == "cancelled":
            done = await asyncio.wait_for(bot.app.runner.wait(job.id), 10)
            assert done.status is JobStatus.CANCELLED, where
            await slack.wait_for(lambda: "Cancelled" in slack.text_of(ts))
            assert buttons_of(slack.messages[ts]) == [], where
        elif g.outcome == "deleted":
            await slack.wait_for(lambda: ts not in slack.messages)
            assert (await bot.app.service.get(job.id)).deleted_at is not None, where
            assert not any(f in slack.files for f in job.origin.extra.get("file_ids", [])), where
        elif g.outcome.startswith("started:"):
            async def new_child() -> list[Job]:
                return [c for c in await children(bot, job) if c.id not in kids]

            deadline = asyncio.get_running_loop().time() + 10
            while not (found := await new_child()):
                assert asyncio.get_running_loop().time() < deadline, where
                await asyncio.sleep(0.02)
            child = found[0]
            assert (child.kind, child.origin.user_id) == (JobKind(g.outcome.split(":")[1]), actor), where
            if g.target == "image" and child.kind is not JobKind.IMAGE:
                assert child.prompt == job.prompt and child.params.image_path, where  # animated: the image is its first frame
            card = await slack.wait_for(lambda: [t for t in cards(slack) if slack.messages[t]["metadata"]["event_payload"]["job_id"] == child.id])
            assert card[0] != ts, where
        else:
            modal = (await slack.wait_for(lambda: slack.views[views:]))[0]
            assert modal["callback_id"] == g.outcome.split(":")[1] and job.id in modal["private_metadata"], where
        assert not [t for t in refusals(slack, actor)[told:] if "Only the person" not in t], where
