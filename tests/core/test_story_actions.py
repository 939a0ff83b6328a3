"""A story's actions in the core: the preview before spending (text flow, Edit, who may answer),
Redo of a failed story (finished scenes kept, the rest made), and the buttons each state offers."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.cli.jobs import story_scenes
from bot.core.actions import perform
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import JobStateError, NotAllowed
from bot.core.models import Actor, Job, JobStatus, Origin
from bot.core.stories import StoryRequest, confirm_story, edit_preview, pending_preview, submit_story
from bot.core.story_plan import StoryPlanner
from bot.core.views import Action, status_view
from providers.errors import InvalidRequest
from tests.fakes.scripted_provider import ScriptedServer
from tests.core.test_core_runner import make_app

pytestmark = pytest.mark.timeout(60)
CHAT = Origin(platform="console", user_id="ann", channel_id="console")
ANN, BOB = Actor.of(CHAT), Actor(user_id="bob", platform="console")


async def test_text_preview_then_edit_then_confirm(settings: Any) -> None:
    server = ScriptedServer()
    app = await make_app(server, deliver=None)
    app.runner.deliverers["console"] = app.runner.deliverers.pop("cli")
    try:
        reply = await run_command(app.service, parse_command("/story a fox wakes | it runs | it sleeps --pipeline scripted --seconds 1"), CHAT)
        assert reply.preview is not None and not reply.started and reply.job is None
        token = reply.preview.token
        assert "2. it runs" in reply.text and "$0.75" in reply.text and f"confirm {token}" in reply.text
        assert await app.store.list() == []

        # Only the owner may look at it, change it or confirm it; a form slip changes nothing.
        with pytest.raises(NotAllowed):
            await pending_preview(app.service, token, BOB)
        with pytest.raises(InvalidRequest, match="at least 2"):
            await edit_preview(app.service, token, "just one scene", ANN)
        edited = await edit_preview(app.service, token, "a fox wakes\nit runs far\nit sleeps\nit dreams", ANN)
        assert edited.plan.scenes[-1] == "it dreams" and edited.estimate == pytest.approx(1.0)
        with pytest.raises(JobStateError, match="already edited"):
            await confirm_story(app.service, token, ANN)
        with pytest.raises(NotAllowed):
            await confirm_story(app.service, edited.token, BOB)

        started = await run_command(app.service, parse_command(f"confirm {edited.token}", default="video"), CHAT)
        assert started.started and started.job is not None
        done = await asyncio.wait_for(app.runner.wait(started.job.id), 30)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 4
        assert status_view(done).actions == (Action.REDO_SCENE, Action.ADD_SCENE, Action.REROLL, Action.DELETE)
        assert [k for k, _ in status_view(done).scenes] == [1, 2, 3, 4]
    finally:
        await app.close()


class _FailFromScene2(list):  # type: ignore[type-arg]
    """The provider breaks as scene 2 is created (before any poll of it): deterministic."""

    def __init__(self, server: ScriptedServer) -> None:
        super().__init__()
        self.server = server

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) == 2:
            self.server.fail_job = ("internal_error", "the renderer broke")


async def test_a_failed_story_offers_redo_which_keeps_the_finished_scenes(settings: Any) -> None:
    server = ScriptedServer()
    server.creates = _FailFromScene2(server)
    app = await make_app(server)
    cli = Origin(platform="cli", user_id="local")
    try:
        request = StoryRequest(script="a lighthouse at dusk | the lamp turns on | a ship passes", pipeline="scripted", seconds=1, size="128x72")
        story = await submit_story(app.service, request, cli, planner=StoryPlanner())
        failed = await asyncio.wait_for(app.runner.wait(story.id), 30)
        assert failed.status is JobStatus.FAILED and len(failed.state["scene_jobs"]) == 1
        assert status_view(failed).actions == (Action.REDO_SCENE, Action.REROLL)
        with pytest.raises(JobStateError, match="finished story"):
            await perform(app.service, Action.ADD_SCENE, story.id, actor=Actor.of(cli), origin=cli, prompt="more")

        server.fail_job = None
        outcome = await perform(app.service, Action.REDO_SCENE, story.id, actor=Actor.of(cli), origin=cli, scene=2)
        assert outcome.started and outcome.job.cost_estimate == pytest.approx(0.5), "scenes 2 and 3 are made, scene 1 is kept"
        redo: Job = await asyncio.wait_for(app.runner.wait(outcome.job.id), 30)
        assert redo.status is JobStatus.COMPLETED, redo.error_message
        assert redo.state["scene_jobs"][0] == failed.state["scene_jobs"][0]
        assert len(server.creates) == 5  # scene 1, scene 2 twice (failed), then scenes 2 and 3
        assert redo.cost_actual == pytest.approx(0.5)
        assert (await app.service.usage(cli)).user_spent == pytest.approx(0.75), "the kept scene is not paid twice"
        # `videobot show REDO --json` lists all three scenes, the kept one marked as reused.
        scenes = await story_scenes(app, redo)
        assert [(s["scene"], s["reused"]) for s in scenes or []] == [(1, True), (2, False), (3, False)]
        assert scenes and scenes[0]["job_id"] == failed.state["scene_jobs"][0]
    finally:
        await app.close()
