"""The security read's findings, each as an attack that must fail (issue: one door for every job)."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.adapters.discord_bot.flows import actor_for, place_of
from bot.adapters.slack.app import slack_place
from bot.app import App
from bot.config import Settings
from bot.core.actions import perform
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import BudgetExceeded, JobNotFound, LimitReached, NotAllowed
from bot.core.grants import Grant
from bot.core.models import PLACE, Actor, GenerateRequest, JobStatus, Origin
from bot.core.stories import StoryRequest, redo_scene, submit_story
from bot.core.views import Action
from bot.web.pages import web_origin
from providers.errors import InvalidRequest
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.scripted_provider import ScriptedServer
from tests.core.test_core_runner import make_app

ALICE_DM = Origin(platform="discord", workspace_id=None, channel_id="D-alice", user_id="alice", extra={PLACE: "direct"})
BOB_DM = Origin(platform="discord", workspace_id=None, channel_id="D-bob", user_id="bob", extra={PLACE: "direct"})
PRIVATE = Origin(platform="slack", workspace_id="T1", channel_id="G-secret", user_id="alice", extra={PLACE: "private"})
PUBLIC = Origin(platform="slack", workspace_id="T1", channel_id="C-general", user_id="alice")
BOB_PUBLIC = PUBLIC.model_copy(update={"user_id": "bob"})


async def _done(app: App, origin: Origin, prompt: str = "a lighthouse", **kw: Any) -> str:
    job = await app.service.submit(GenerateRequest(prompt=prompt, pipeline="scripted", seconds=1, size="128x72", **kw), origin)
    done = await asyncio.wait_for(app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED, done.error_message
    return job.id


@pytest.fixture
async def core(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "")
    server = ScriptedServer(polls_to_finish=1)
    app = await make_app(server)
    for platform in ("slack", "discord"):
        app.runner.deliverers[platform] = app.runner.deliverers["cli"]
    try:
        yield app, server
    finally:
        await app.close()


# --- 1. a DM is its own tenant --------------------------------------------------------------------


async def test_a_direct_message_is_its_own_tenant(core: Any) -> None:
    app, _ = core
    job_id = await _done(app, ALICE_DM, "alice's secret birthday video")
    for key in (job_id, job_id[:4]):
        with pytest.raises(JobNotFound):
            await app.service.get_for(key, BOB_DM)
        with pytest.raises(JobNotFound):
            await run_command(app.service, parse_command(f"/job {key}"), BOB_DM)
        for action in (Action.REROLL, Action.REMIX, Action.DM, Action.CANCEL):
            with pytest.raises(JobNotFound):
                await perform(app.service, action, key, actor=Actor.of(BOB_DM, is_admin=True), origin=BOB_DM, prompt="x")
    assert (await app.service.get_for(job_id, ALICE_DM)).id == job_id
    listed = await run_command(app.service, parse_command("/jobs"), BOB_DM)
    assert job_id not in listed.text
    # The gallery: a session from bob's DM sees nothing of alice's; alice's own does.
    job = await app.service.get(job_id)
    bob = Grant(kind="session", user_id="bob", platform="discord", workspace_id=None, direct=True, expires_at=2e9)
    alice = bob.model_copy(update={"user_id": "alice"})
    assert not bob.can_see(job) and alice.can_see(job)
    # Nobody is an admin of someone else's DM (a DM "admin" grant cannot see it either).
    assert not bob.model_copy(update={"is_admin": True}).can_see(job)
    assert len(await app.store.list(limit=50)) == 1


def test_adapters_mark_direct_and_private_places() -> None:
    assert place_of(None, None) == "direct"
    assert place_of(123, None) == "private", "an unknown channel is not assumed public"
    assert slack_place("D0123") == "direct" and slack_place("C1", "directmessage") == "direct"
    assert slack_place("G0123") == "private" and slack_place("C1", "privategroup") == "private"
    assert slack_place("C1", "mpdm-alice--bob-1") == "private" and slack_place("C1", "general") == "public"


# --- 2. the operator's limits are ceilings; channel moderators are not admins ----------------------


async def test_tenant_admins_cannot_lift_the_operators_ceilings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "1")
    monkeypatch.setenv("VIDEOBOT_MAX_SECONDS", "4")
    monkeypatch.setenv("VIDEOBOT_MODERATION", "auto")
    monkeypatch.setenv("VIDEOBOT_ALLOWED_PIPELINES", "scripted,local")
    app = await make_app(ScriptedServer())
    try:
        admin = Actor.of(PUBLIC, is_admin=True)
        for key, value, ceiling in (
            ("user_budget_usd", "100000", "1"), ("max_seconds", "120", "4"), ("moderation", "off", "auto"),
            ("moderation", "blocklist", "auto"), ("pipelines", "scripted,sora", "scripted"),
        ):  # fmt: skip
            for scope in ("tenant", "channel"):
                with pytest.raises(NotAllowed, match=f"operator's {ceiling}"):
                    await app.service.change_setting(PUBLIC, admin, scope, key, value)
        # Tightening is fine.
        assert "0.5" in await app.service.change_setting(PUBLIC, admin, "tenant", "user_budget_usd", "0.5")
        # A value stored before the operator lowered the ceiling is held to it.
        await app.store.put_setting("slack", "T1", "channel", "C-general", "user_budget_usd", 100000.0, by="old")
        await app.store.put_setting("slack", "T1", "tenant", "", "moderation", "off", by="old")
        here = await app.service.admission.rules(PUBLIC)
        assert here.get("user_budget_usd") == 1.0 and here.get("moderation") == "auto"
        text = await app.service.settings_text(PUBLIC)
        assert "ceiling 4 (operator, VIDEOBOT_MAX_SECONDS)" in text or "max_seconds: 4 (env)" in text
        # And the job itself is held to the ceiling: 5 s where the operator allows 4.
        with pytest.raises(InvalidRequest, match="at most 4 seconds"):
            await app.service.submit(GenerateRequest(prompt="x", pipeline="scripted", seconds=5), PUBLIC)
    finally:
        await app.close()


def test_a_channel_permission_does_not_make_a_discord_admin() -> None:
    origin = Origin(platform="discord", workspace_id="1", channel_id="2", user_id="3")
    moderator = discord.Permissions(manage_messages=True, manage_channels=True, manage_roles=True)
    assert not actor_for(origin, moderator).is_admin
    assert actor_for(origin, discord.Permissions(manage_guild=True)).is_admin
    assert actor_for(origin, discord.Permissions(administrator=True)).is_admin
    assert not actor_for(ALICE_DM, discord.Permissions(administrator=True)).is_admin, "nobody is an admin in a DM"


# --- 5. reused story scenes are never made unreserved ------------------------------------------------


async def test_deleting_reused_scenes_mid_redo_makes_nothing_unreserved(core: Any) -> None:
    app, server = core
    story = await submit_story(app.service, StoryRequest(script="dawn | noon | dusk", pipeline="scripted", seconds=1, size="128x72"), PUBLIC)
    story = await asyncio.wait_for(app.runner.wait(story.id), 30)
    assert story.status is JobStatus.COMPLETED
    old_scenes = list(story.state["scene_jobs"])
    creates = len(server.creates)
    server.release.clear()  # the redone scene 1 stays in progress while the old scenes are deleted
    redo = await redo_scene(app.service, story.id, 1, PUBLIC)
    assert redo.cost_estimate == pytest.approx(0.25), "one scene made, one priced"
    owner = Actor.of(PUBLIC)
    for scene_id in old_scenes[1:]:
        await app.service.delete(scene_id, owner)
        assert not any(Path(p).exists() for p in [app.media.video_path(scene_id)])
    server.release.set()
    done = await asyncio.wait_for(app.runner.wait(redo.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(server.creates) == creates + 1, "only the redone scene reached the provider"
    assert done.cost_actual == pytest.approx(0.25)


# --- 6. the web posts only where the asker can see ----------------------------------------------


async def test_a_web_action_on_a_private_job_shows_on_the_web_alone(core: Any) -> None:
    app, _ = core
    private_id = await _done(app, PRIVATE, "the launch plan")
    private = await app.service.get(private_id)
    bob = Grant(kind="session", user_id="bob", platform="slack", workspace_id="T1", expires_at=2e9)
    assert not bob.can_see(private), "a member who is not in the private channel does not see its job"
    admin = bob.model_copy(update={"is_admin": True})
    assert admin.can_see(private)
    rules = await app.service.admission.rules(PRIVATE)
    origin = await web_origin(private, admin, rules)
    assert origin.channel_id is None and origin.user_id == "bob", "nothing of bob's is posted into alice's private channel"
    delivered: list[str] = []

    async def deliver(job: Any) -> None:
        delivered.append(job.id)

    app.runner.deliverers["slack"] = deliver
    outcome = await perform(app.service, Action.REROLL, private_id, actor=admin.actor(), origin=origin)
    done = await asyncio.wait_for(app.runner.wait(outcome.job.id), 20)
    assert done.status is JobStatus.COMPLETED and delivered == []
    # A public job reused from the web goes to its channel, as a button there would.
    public = await app.service.get(await _done(app, PUBLIC, "a harbour"))
    assert (await web_origin(public, bob, rules)).channel_id == "C-general"
    # Lookups from chat follow the same rule: from another channel, bob does not find the private job.
    with pytest.raises(JobNotFound):
        await app.service.get_for(private_id, BOB_PUBLIC)
    assert (await app.service.get_for(private_id, BOB_PUBLIC.model_copy(update={"channel_id": "G-secret"}))).id == private_id


# --- 10. the paid planner runs last, and not without limit ------------------------------------------


async def test_the_story_planner_is_called_only_after_the_free_checks(
    openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("VIDEOBOT_MODERATION", "off")
    monkeypatch.setenv("VIDEOBOT_MAX_PROMPT_CHARS", "40")
    monkeypatch.setenv("VIDEOBOT_PLANNER_CALLS_PER_HOUR", "1")
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "")
    app = await make_app(ScriptedServer())
    try:
        request = StoryRequest(script="a paper boat on a rainy street " * 3, pipeline="scripted", seconds=1, size="128x72")
        with pytest.raises(InvalidRequest, match="the limit is 40"):
            await submit_story(app.service, request, PUBLIC)
        await app.store.put_setting("slack", "T1", "tenant", "", "channels", ["C-other"], by="admin")
        with pytest.raises(NotAllowed):
            await submit_story(app.service, request.model_copy(update={"script": "a paper boat"}), PUBLIC)
        await app.store.put_setting("slack", "T1", "tenant", "", "channels", None, by="admin")
        await app.store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", 0.0, by="admin")
        with pytest.raises(BudgetExceeded):
            await submit_story(app.service, request.model_copy(update={"script": "a paper boat"}), PUBLIC)
        await app.store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", None, by="admin")
        assert openai_server.calls("chat") == [], "the planner was called before free checks"
        await submit_story(app.service, request.model_copy(update={"script": "a paper boat"}), PUBLIC)
        with pytest.raises(LimitReached, match="planned 1 stories"):
            await submit_story(app.service, request.model_copy(update={"script": "a kite"}), PUBLIC)
        assert len(openai_server.calls("chat")) == 1
    finally:
        await app.close()


async def test_the_gallery_hides_private_jobs_and_others_direct_ones_even_from_admins(core: Any) -> None:
    from storage.gallery import GalleryQuery

    app, _ = core
    im = PUBLIC.model_copy(update={"channel_id": "D-alice", "extra": {PLACE: "direct"}})
    ids = {name: await _done(app, origin, name) for name, origin in (("im", im), ("private", PRIVATE), ("public", PUBLIC))}

    async def shown(user: str, admin: bool) -> set[str]:
        query = GalleryQuery(platform="slack", workspace_id="T1", viewer_user=user, viewer_admin=admin)
        return {j.prompt for j in await app.store.gallery(query)}

    assert await shown("bob", admin=False) == {"public"}
    assert await shown("bob", admin=True) == {"public", "private"}, "a workspace admin never sees someone's IM"
    assert await shown("alice", admin=False) == {"public", "private", "im"}
    assert ids


async def test_a_job_made_from_a_private_one_in_its_conversation_is_private_too(core: Any) -> None:
    """A Slack button's payload does not say its channel is private (a C… id without a channel
    name): the re-roll inherits the original's place, so it is not listed to the workspace."""
    app, _ = core
    original = await app.service.get(await _done(app, PRIVATE.model_copy(update={"channel_id": "C-secret"}), "the plan"))
    from_button = Origin(platform="slack", workspace_id="T1", channel_id="C-secret", user_id="alice")
    child = await app.service.reroll(original.id, from_button)
    stored = await app.service.get(child.id)
    assert child.origin.place == "private" and stored.private and stored.origin.place == "private"
    bob = Grant(kind="session", user_id="bob", platform="slack", workspace_id="T1", expires_at=2e9)
    assert not bob.can_see(await app.service.get(child.id))
