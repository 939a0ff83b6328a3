"""Stories: scenes as child jobs in order, continuity from the last frame, one joined MP4,
planning through the OpenAI emulator, restart mid-story, the whole story through the spend gate."""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.app import App
from bot.cli.jobs import show
from bot.config import load_settings
from bot.core.models import Actor, Job, JobKind, JobStatus, Origin
from bot.core.stories import StoryRequest, submit_story
from bot.core.story_plan import StoryPlanner, offline_plan, split_script
from providers.media import first_frame, iter_frames, last_frame, probe_video
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.scripted_provider import ScriptedServer
from tests.helpers import assert_video
from tests.core.test_core_runner import make_app

pytestmark = pytest.mark.timeout(60)

CLI = Origin(platform="cli", user_id="local")
OFFLINE = StoryPlanner()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def scenes_of(app: App, story: Job) -> list[Job]:
    children = [c for c in await app.store.children(story.id) if c.state.get("story_scene")]
    return sorted(children, key=lambda c: (c.state["story_scene"], c.state.get("story_attempt", 1)))


# --- planning -----------------------------------------------------------------------------------


def test_scripts_split_and_premises_plan_offline_deterministically() -> None:
    assert split_script("a fox wakes | it runs\nit sleeps") == ["a fox wakes", "it runs", "it sleeps"]
    assert split_script("a fox in the snow") == ["a fox in the snow"]
    plan = offline_plan("A fox wakes in the snow. It hunts at dusk.", 4)
    assert plan == offline_plan("A fox wakes in the snow. It hunts at dusk.", 4)
    assert [s.split(",")[0] for s in plan.scenes] == [f"Scene {k} of 4" for k in range(1, 5)]
    assert "A fox wakes in the snow" in plan.look
    assert plan.prompt(2).startswith(plan.look) and plan.prompt(2).endswith(plan.scenes[1])


async def test_premise_is_planned_by_the_text_model_with_json_output(
    openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_TEXT_MODEL", "gpt-5-mini")
    monkeypatch.setenv("VIDEOBOT_MODERATION", "off")
    app = await make_app(ScriptedServer())
    try:
        story = await submit_story(app.service, StoryRequest(script="a paper boat sails down a rainy street", scenes=3, pipeline="scripted", seconds=1, size="128x72"), CLI)
        chats = openai_server.calls("chat")
        assert len(chats) == 1
        body = chats[0].fields
        assert body["model"] == "gpt-5-mini"
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["strict"] is True
        assert "a paper boat sails down a rainy street" in body["messages"][-1]["content"]
        plan = story.state["plan"]
        assert plan["planner"].startswith("gpt-5-mini")
        assert len(plan["scenes"]) == 3 and plan["look"].startswith("Planned look for:")
        done = await asyncio.wait_for(app.runner.wait(story.id), 30)
        assert done.status is JobStatus.COMPLETED, done.error_message
        # The look is in front of every scene's prompt.
        for k, scene in enumerate(await scenes_of(app, story), 1):
            assert scene.prompt.startswith(plan["look"]) and scene.prompt.endswith(plan["scenes"][k - 1])
    finally:
        await app.close()


# --- a story on the local renderer ----------------------------------------------------------------


async def test_three_scene_story_on_local_is_one_continuous_mp4(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    request = StoryRequest(script="a red kite rises | the kite loops over the sea | the kite lands on the sand",
                           pipeline="local", seconds=2, size="320x180")  # fmt: skip
    story = await submit_story(app.service, request, CLI, planner=OFFLINE)
    assert story.kind is JobKind.STORY and story.state["continuity"] == "last_frame"
    done = await asyncio.wait_for(app.runner.wait(story.id), 40)
    assert done.status is JobStatus.COMPLETED, done.error_message
    scenes = await scenes_of(app, story)
    assert [s.state["story_scene"] for s in scenes] == [1, 2, 3]
    assert all(s.status is JobStatus.COMPLETED and s.parent_id == story.id for s in scenes)
    durations = [probe_video(s.output_path).duration for s in scenes]  # type: ignore[arg-type]
    assert_video(done.output_path, width=320, height=180, seconds=sum(durations))  # type: ignore[arg-type]
    assert abs(sum(durations) - 6) < 0.3
    # Scene k+1 starts from scene k's last frame: its first frame continues it...
    for before, after in zip(scenes, scenes[1:]):
        assert after.params.image_path and Path(after.params.image_path).exists()
        assert diff(last_frame(Path(before.output_path)), first_frame(Path(after.output_path))) < 12  # type: ignore[arg-type]
    # ...and in the joined video the frames either side of each cut are nearly the same,
    # unlike two unrelated scenes' opening frames.
    frames = list(iter_frames(Path(done.output_path)))  # type: ignore[arg-type]
    fps = probe_video(done.output_path).fps  # type: ignore[arg-type]
    cuts = [round(sum(durations[: i + 1]) * fps) for i in range(2)]
    for cut in cuts:
        assert diff(frames[cut - 1], frames[cut]) < 12
    assert diff(first_frame(Path(scenes[0].output_path)), first_frame(Path(scenes[2].output_path))) > diff(frames[cuts[0] - 1], frames[cuts[0]])  # type: ignore[arg-type]
    # The storyboard sits beside the video; the story paid what its scenes did.
    assert done.thumbnail_path and Path(done.thumbnail_path).name == "storyboard.jpg"
    with Image.open(done.thumbnail_path) as board:
        assert board.width > board.height
    assert done.cost_actual == 0.0
    # `videobot show STORY --json` lists the scenes with their jobs.
    capsys.readouterr()
    assert await show(argparse.Namespace(job_id=story.id, json=True), load_settings()) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(s["scene"], s["job_id"], s["status"]) for s in shown["scenes"]] == [(s.state["story_scene"], s.id, "completed") for s in scenes]


async def test_story_limits_are_settings(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="at most 60 s"):
        await submit_story(app.service, StoryRequest(script="a fox", scenes=7, seconds=10, pipeline="local"), CLI, planner=OFFLINE)
    with pytest.raises(InvalidRequest, match="at most 12"):
        await submit_story(app.service, StoryRequest(script=" | ".join(f"s{i}" for i in range(13)), seconds=1, pipeline="local"), CLI, planner=OFFLINE)
    assert await app.store.list(limit=5) == []


# --- crash safety, money, cancel ----------------------------------------------------------------


def _scripted(seconds: int = 1) -> StoryRequest:
    return StoryRequest(script="a lighthouse at dusk | the lamp turns on | a ship passes", pipeline="scripted", seconds=seconds, size="128x72")


async def test_restart_mid_story_makes_each_scene_exactly_once(settings: Any) -> None:
    server = ScriptedServer()
    server.release.clear()  # scenes stay in progress until released
    first = await make_app(server)
    story = await submit_story(first.service, _scripted(), CLI, planner=OFFLINE)
    await until(lambda: asyncio.sleep(0, len(server.creates) == 1), what="scene 1 to be created")
    server.release.set()
    await until(lambda: asyncio.sleep(0, len(server.creates) == 2), what="scene 2 to be created")
    server.release.clear()
    await first.close()  # the app stops while scene 2 runs

    second = await make_app(server)
    try:
        server.release.set()
        done = await until(lambda: _terminal(second, story.id), what="the story to finish after the restart")
        assert done.status is JobStatus.COMPLETED, done.error_message
        assert len(server.creates) == 3, "one create per scene, none again after the restart"
        scenes = await scenes_of(second, story)
        assert [s.state["story_scene"] for s in scenes] == [1, 2, 3]
        # Scenes 2 and 3 were image-to-video from the previous scene's last frame.
        assert server.creates[0].input_image is None
        for k in (1, 2):
            start = server.creates[k].input_image
            assert start is not None and start.exists()
            assert diff(Image.open(start), last_frame(Path(scenes[k - 1].output_path))) < 3  # type: ignore[arg-type]
        assert_video(done.output_path, width=128, height=72, seconds=3.0)  # type: ignore[arg-type]
        assert done.cost_actual == pytest.approx(0.75)
        spent = await second.service.usage(CLI)
        assert spent.user_spent == pytest.approx(0.75), "scenes are not counted on top of their story"
    finally:
        await second.close()


async def _terminal(app: App, job_id: str) -> Job | None:
    job = await app.store.get(job_id)
    return job if job is not None and job.terminal else None


async def test_over_budget_story_creates_nothing(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "0.5")
    server = ScriptedServer()
    app = await make_app(server)
    try:
        with pytest.raises(Exception, match="(?i)budget"):
            await submit_story(app.service, _scripted(), CLI, planner=OFFLINE)  # 3 × 0.25 > 0.5
        assert await app.store.list(limit=5) == []
        assert server.creates == []
        # Two scenes fit: the whole story is reserved at once.
        story = await submit_story(app.service, StoryRequest(script="a | b", pipeline="scripted", seconds=1, size="128x72"), CLI, planner=OFFLINE)
        assert story.cost_estimate == pytest.approx(0.5)
        done = await asyncio.wait_for(app.runner.wait(story.id), 30)
        assert done.status is JobStatus.COMPLETED
        assert (await app.service.usage(CLI)).user_spent == pytest.approx(0.5)
    finally:
        await app.close()


async def test_cancel_stops_the_remaining_scenes(settings: Any) -> None:
    server = ScriptedServer()
    server.release.clear()
    app = await make_app(server)
    try:
        story = await submit_story(app.service, _scripted(), CLI, planner=OFFLINE)
        await until(lambda: asyncio.sleep(0, len(server.creates) == 1), what="scene 1 to be created")
        scene1 = (await scenes_of(app, story))[0]
        await until(lambda: _status(app, scene1.id, JobStatus.RUNNING), what="scene 1 running")
        await app.service.cancel(story.id, Actor(user_id="local", is_admin=True))
        assert (await app.store.get(story.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
        await until(lambda: _status(app, scene1.id, JobStatus.CANCELLED), what="scene 1 cancelled")
        assert server.cancels, "the running scene's remote job was cancelled"
        server.release.set()
        await asyncio.sleep(0)
        assert len(server.creates) == 1 and len(await scenes_of(app, story)) == 1
        # The reservation of the scenes never made is released: nothing was billed.
        assert (await app.service.usage(CLI)).user_spent == 0.0
    finally:
        await app.close()


async def _status(app: App, job_id: str, status: JobStatus) -> bool:
    job = await app.store.get(job_id)
    return job is not None and job.status is status


async def test_a_failed_scene_is_retried_once_then_the_story_fails_keeping_finished_scenes(settings: Any) -> None:
    server = ScriptedServer()
    server.hold[2] = asyncio.Event()  # scene 2 cannot finish before the provider starts failing
    app = await make_app(server)
    try:
        story = await submit_story(app.service, _scripted(), CLI, planner=OFFLINE)
        await until(lambda: _scene_done(app, story, 1), what="scene 1 done")
        server.fail_job = ("internal_error", "the renderer broke")
        done = await asyncio.wait_for(app.runner.wait(story.id), 30)
        assert done.status is JobStatus.FAILED
        assert "Scene 2 of 3" in (done.error_message or "") and "kept" in (done.error_message or "")
        scenes = await scenes_of(app, story)
        assert [(s.state["story_scene"], s.status) for s in scenes] == [
            (1, JobStatus.COMPLETED), (2, JobStatus.FAILED), (2, JobStatus.FAILED),
        ]  # fmt: skip
        assert Path(scenes[0].output_path).exists()  # type: ignore[arg-type]
        # The story now counts what was billed (scene 1), not its whole reservation.
        assert done.cost_actual == pytest.approx(0.25)
        assert (await app.service.usage(CLI)).user_spent == pytest.approx(0.25)
    finally:
        await app.close()


async def _scene_done(app: App, story: Job, k: int) -> bool:
    return any(s.state["story_scene"] == k and s.status is JobStatus.COMPLETED for s in await scenes_of(app, story))


# --- on the Runway emulator ---------------------------------------------------------------------


async def test_runway_scenes_after_the_first_are_image_to_video_from_the_last_frame(
    settings: Any, runway_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64
    import io

    from bot.app import open_app
    from providers.polling import PollPolicy
    from tests.fakes.runway_server import SECRET

    for key, value in {"RUNWAYML_API_SECRET": SECRET, "RUNWAYML_BASE_URL": runway_server.base_url,
                       "RUNWAYML_POLL_SECONDS": "0.01", "RUNWAYML_RETRY_BACKOFF_SECONDS": "0.01"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    app = await open_app(load_settings())
    app.runner.poll_policy = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.05)

    async def nowhere(job: Job) -> None:
        return None

    app.runner.deliverers["cli"] = nowhere
    await app.runner.start()
    try:
        story = await submit_story(app.service, StoryRequest(script="a harbour at dawn | boats leave | gulls follow", pipeline="runway", seconds=2), CLI, planner=OFFLINE)
        assert story.cost_estimate and story.cost_estimate > 0
        done = await asyncio.wait_for(app.runner.wait(story.id), 40)
        assert done.status is JobStatus.COMPLETED, done.error_message
        creates = runway_server.creates()
        assert [c.path for c in creates] == ["/v1/text_to_video", "/v1/image_to_video", "/v1/image_to_video"]
        scenes = await scenes_of(app, story)
        for k in (1, 2):
            header, _, payload = creates[k].json["promptImage"].partition(",")
            assert header.startswith("data:image/")
            sent = Image.open(io.BytesIO(base64.b64decode(payload)))
            assert diff(sent, last_frame(Path(scenes[k - 1].output_path))) < 8  # type: ignore[arg-type]
        assert done.cost_actual == pytest.approx(sum(s.cost_actual or 0 for s in scenes))
        spent = await app.service.usage(CLI)
        assert spent.user_spent == pytest.approx(done.cost_actual)
    finally:
        await app.close()


async def test_console_story_command_queues_a_story_and_shows_its_plan(app: App) -> None:
    from bot.core.commands import parse_command
    from bot.core.dispatch import run_command

    command = parse_command("/story a fox wakes | the fox runs --seconds 1 --size 320x180 --transition fade")
    assert command.name == "story" and command.flags["transition"] == "fade"
    reply = await run_command(app.service, command, Origin(platform="cli", user_id="local"))
    assert reply.started and reply.job is not None and reply.job.kind is JobKind.STORY
    assert "scene 1: a fox wakes" in reply.text and "scene 2: the fox runs" in reply.text
    done = await asyncio.wait_for(app.runner.wait(reply.job.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert_video(done.output_path, width=320, height=180, seconds=1.5)  # type: ignore[arg-type]  (a 0.5 s crossfade)
    # Other commands parse as before; `/video story ...` on Slack is the story command.
    assert parse_command("/video a story about a fox").name == "video"
    assert parse_command("story a | b", default="video").name == "story"


# --- on the OpenAI Videos emulator -----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_openai_videos_scenes_after_the_first_extend_the_previous_scene(
    settings: Any, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.app import open_app
    from providers.polling import PollPolicy

    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("VIDEOBOT_MODERATION", "off")
    app = await open_app(load_settings())
    app.runner.poll_policy = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01, backoff_max=0.2)

    async def nowhere(job: Job) -> None:
        return None

    app.runner.deliverers["cli"] = nowhere
    await app.runner.start()
    try:
        story = await submit_story(app.service, StoryRequest(script="a glacier calves | the wave rolls | the sea calms", pipeline="sora", seconds=4, size="1280x720"), CLI, planner=OFFLINE)
        assert story.state["continuity"] == "extend"
        assert story.cost_estimate == pytest.approx(3 * 4 * 0.10)
        done = await asyncio.wait_for(app.runner.wait(story.id), 40)
        assert done.status is JobStatus.COMPLETED, done.error_message
        assert [c.op for c in openai_server.creates] == ["create", "extend", "extend"]
        scenes = await scenes_of(app, story)
        for k in (1, 2):
            assert openai_server.creates[k].fields["video"] == {"id": scenes[k - 1].remote_id}
        assert_video(done.output_path, width=128, height=72, seconds=12)  # type: ignore[arg-type]  (the emulator renders at 1/10)
        assert (await app.service.usage(CLI)).user_spent == pytest.approx(done.cost_actual)
    finally:
        await app.close()


# --- a real kill -9 ---------------------------------------------------------------------------------


def test_kill_9_mid_story_then_run_finishes_it_with_one_job_per_scene(tmp_path: Path) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.system.test_crash_e2e import _env, _wait_db

    env = _env(tmp_path)
    env.pop("VIDEOBOT_LOCAL_FPS")  # 24 fps: renders long enough to be killed in the middle
    db = tmp_path / "data" / "videobot.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "story", "a lake at dawn | mist rises | a heron lands", "--seconds", "3", "--size", "640x360", "--pipeline", "local"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_db(db, "SELECT 1 FROM jobs WHERE json_extract(state_json, '$.story_scene') = 2 AND status = 'running'")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    with sqlite3.connect(db) as conn:
        story_id, status, path = conn.execute("SELECT id, status, output_path FROM jobs WHERE kind = 'story'").fetchone()
        scenes = conn.execute(
            "SELECT json_extract(state_json, '$.story_scene'), status FROM jobs WHERE parent_id = ? ORDER BY created_at", (story_id,)
        ).fetchall()
        scene2 = conn.execute("SELECT id FROM jobs WHERE parent_id = ? AND json_extract(state_json, '$.story_scene') = 2", (story_id,)).fetchone()[0]
        submits = conn.execute("SELECT COUNT(*) FROM job_events WHERE job_id = ? AND status = 'running' AND detail LIKE 'remote %'", (scene2,)).fetchone()[0]
    assert status == "completed", resumed.stdout + resumed.stderr
    assert scenes == [(1, "completed"), (2, "completed"), (3, "completed")], "one job per scene, none made again"
    assert submits == 1, "scene 2 was polled again after the restart, not created again"
    assert_video(tmp_path / "data" / "media" / path, width=640, height=360, seconds=9)  # stored relative to the media dir


async def test_scene_one_starts_from_the_users_image(app: App, tmp_path: Path) -> None:
    picture = tmp_path / "start.png"
    Image.new("RGB", (320, 180), (30, 140, 220)).save(picture)
    story = await submit_story(app.service, StoryRequest(script="the sky clears | a plane crosses", pipeline="local", seconds=1, size="320x180", image_path=picture), CLI, planner=OFFLINE)
    done = await asyncio.wait_for(app.runner.wait(story.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    scene1 = (await scenes_of(app, story))[0]
    assert scene1.params.image_path == story.params.image_path
    # The renderer draws its moving shapes over the image: the picture's colour still fills the frame.
    r, g, b = ImageStat.Stat(first_frame(Path(scene1.output_path)).convert("RGB")).mean  # type: ignore[arg-type]
    assert b > r + 100 and abs(r - 30) < 40 and abs(b - 220) < 40, (r, g, b)
