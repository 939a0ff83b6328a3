"""Stories on the Google pipelines through the real core and google-genai, against the emulator.

Where the core lets a provider that `continues_source` extend each scene from the previous one,
Omni's scenes continue the previous interaction (`previous_interaction_id`) and Veo's continue
the previous clip; otherwise each scene starts from the previous one's last frame. Either way
the story is one clip of every scene's seconds."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.app import App
from bot.core.models import JobStatus, Origin
from bot.core.stories import StoryRequest, submit_story
from bot.core.story_plan import StoryPlanner
from providers.media import probe_video
from tests.fakes.google_server import GoogleServer, google_server  # noqa: F401
from tests.helpers import assert_video
from tests.providers.test_google_e2e import AppFactory, make_app  # noqa: F401

CLI = Origin(platform="cli", user_id="local")


@pytest.fixture
async def story_app(make_app: AppFactory) -> AsyncIterator[App]:  # noqa: F811
    yield await make_app(VIDEOBOT_MODERATION="off")


@pytest.mark.parametrize("pipeline", ["gemini-video", "veo"])
async def test_a_story_is_one_clip_of_every_scene(story_app: App, google_server: GoogleServer, pipeline: str) -> None:  # noqa: F811
    request = StoryRequest(script="a glacier calves | the wave rolls | the sea calms", pipeline=pipeline, seconds=4, size="1280x720")
    story = await submit_story(story_app.service, request, CLI, planner=StoryPlanner())
    done = await asyncio.wait_for(story_app.runner.wait(story.id), 60)
    assert done.status is JobStatus.COMPLETED, done.error_message
    creates = google_server.creates()
    assert len(creates) == 3  # one create per scene
    if story.state.get("continuity") == "extend":
        scene_ids = [c for c in google_server.jobs]
        if pipeline == "gemini-video":
            assert [c.json.get("previous_interaction_id") for c in creates] == [None, scene_ids[0], scene_ids[1]]
    else:
        assert all("image" in _first_instance(c.json) for c in creates[1:])  # each later scene starts from the last frame
    # Joined scenes are fitted to the story's size; an extension chain's last scene is the story as made.
    info = probe_video(done.output_path)  # type: ignore[arg-type]
    assert (info.width, info.height) in ((1280, 720), (128, 72))
    assert_video(done.output_path, width=info.width, height=info.height, seconds=12)  # type: ignore[arg-type]


def _first_instance(body: dict[str, Any]) -> dict[str, Any]:
    if "instances" in body:
        return body["instances"][0]
    return {c["type"]: c for step in body["input"] for c in step["content"]}
