"""The Runway pipelines through the real core: chaining, remix/extend, fallback, A/B, budgets.

The app is built from settings whose base URLs point at the loopback emulators; the
assertions read what the emulators recorded.
"""
from __future__ import annotations

import asyncio
import base64
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.core.budget import Ledger
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import BudgetExceeded, user_message
from bot.core.models import GenerateRequest, Job, JobStatus, Origin
from bot.config import Settings
from providers.errors import InvalidRequest
from providers.openai_common import SORA_DEPRECATION
from tests.fakes.bfl_server import KEY as BFL_KEY
from tests.fakes.bfl_server import BflServer
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.runway_server import SECRET, RunwayServer
from tests.apps import AppFactory, AppMaker
from tests.helpers import assert_video

pytestmark = pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning")

ORIGIN = Origin(platform="cli", user_id="tester")


@pytest.fixture
async def make_app(
    settings: Settings, runway_server: RunwayServer, bfl_server: BflServer, openai_server: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[AppFactory]:
    """An app on all three emulators; keyword arguments are extra env vars (None removes one)."""
    apps = AppMaker(monkeypatch, {
        "RUNWAYML_API_SECRET": SECRET, "RUNWAYML_BASE_URL": runway_server.base_url, "RUNWAYML_POLL_SECONDS": "0.01",
        "RUNWAYML_RETRY_BACKOFF_SECONDS": "0.01", "BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": bfl_server.base_url,
        "BFL_POLL_SECONDS": "0.01", "BFL_RETRY_BACKOFF_SECONDS": "0.01",
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
    })  # fmt: skip
    try:
        yield apps.make
    finally:
        await apps.close()


async def run(app: App, request: GenerateRequest, origin: Origin = ORIGIN) -> Job:
    job = await app.service.submit(request, origin)
    return await asyncio.wait_for(app.runner.wait(job.id), 20)


def prompt_jpeg(body: dict) -> Image.Image:
    header, _, payload = body["promptImage"].partition(",")
    assert header == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    assert image.format == "JPEG"
    return image


# --- chaining ---------------------------------------------------------------------------------


async def test_gpt_image_then_runway(make_app: AppFactory, runway_server: RunwayServer, openai_server: OpenAIEmulator) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red fox in fresh snow", pipeline="gpt-image+runway", seconds=5))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (image_call,) = openai_server.calls("image")
    sent = image_call.fields
    assert sent["model"] == "gpt-image-2" and sent["size"] == "1280x720"
    assert sent["prompt"].startswith("a red fox in fresh snow, cinematic composition")
    assert "clear focal point" in sent["prompt"] and "wide establishing shot" in sent["prompt"]
    (create,) = runway_server.creates()
    assert create.path == "/v1/image_to_video"
    assert create.json["model"] == "gen4_turbo" and create.json["ratio"] == "1280:720"
    assert create.json["promptText"] == "a red fox in fresh snow"  # the video prompt is the user's own
    first_frame = prompt_jpeg(create.json)
    assert first_frame.size == (1280, 720)
    assert Path(job.state["image_step_path"]).exists()
    image_cost = job.state["image_step_cost"] or 0.0
    assert job.cost_actual == pytest.approx(0.25 + image_cost, abs=1e-4)  # 5 credits/s x 5 s, plus the still
    assert job.cost_estimate is not None and job.cost_estimate >= 0.25
    assert job.provider == "runway" and job.model == "gen4_turbo"
    assert_video(job.output_path, width=128, height=72, seconds=5)  # type: ignore[arg-type]


async def test_flux_then_runway_portrait(make_app: AppFactory, runway_server: RunwayServer, bfl_server: BflServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lighthouse at dusk", pipeline="flux+runway", seconds=4, size="720x1280"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (submit,) = bfl_server.submits()
    assert (submit.json["width"], submit.json["height"]) == (720, 1280)
    assert "vertical framing" in submit.json["prompt"] and "lighting" not in submit.json["prompt"].split("dusk", 1)[1]
    assert prompt_jpeg(runway_server.creates()[0].json).size == (720, 1280)
    assert job.cost_estimate == pytest.approx(0.03 + 0.20)
    assert job.cost_actual == pytest.approx(0.03 + 0.20)
    assert_video(job.output_path, width=72, height=128, seconds=4)  # type: ignore[arg-type]


async def test_runway_text_then_remix_and_extend(make_app: AppFactory, runway_server: RunwayServer, tmp_path: Path) -> None:
    app = await make_app()
    picture = tmp_path / "pic.png"
    Image.new("RGB", (1000, 800), (20, 30, 220)).save(picture)
    text = await run(app, GenerateRequest(prompt="waves at night", pipeline="runway", seconds=5))
    assert text.status is JobStatus.COMPLETED, text.error_message
    assert runway_server.creates()[0].path == "/v1/text_to_video"
    animated = await run(app, GenerateRequest(prompt="the picture comes alive", pipeline="runway", seconds=3, image_path=picture))
    assert animated.status is JobStatus.COMPLETED, animated.error_message

    remix = await asyncio.wait_for(app.runner.wait((await app.service.remix(animated.id, "now in autumn", ORIGIN)).id), 20)
    assert remix.status is JobStatus.COMPLETED, remix.error_message
    original, again = runway_server.creates()[1].json, runway_server.creates()[2].json
    assert again["promptText"] == "now in autumn"
    assert again["promptImage"] == original["promptImage"]  # the same source image, not a frame of the clip

    remix_text = await asyncio.wait_for(app.runner.wait((await app.service.remix(text.id, "in daylight", ORIGIN)).id), 20)
    assert remix_text.status is JobStatus.COMPLETED, remix_text.error_message
    assert runway_server.creates()[3].path == "/v1/image_to_video"  # from the parent's first frame

    extended = await asyncio.wait_for(app.runner.wait((await app.service.extend(text.id, ORIGIN, seconds=2)).id), 20)
    assert extended.status is JobStatus.COMPLETED, extended.error_message
    assert runway_server.creates()[4].json["duration"] == 2
    assert_video(extended.output_path, width=128, height=72, seconds=7)  # type: ignore[arg-type]


async def test_user_errors_are_refused_before_anything_is_stored(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="runway:local")
    with pytest.raises(InvalidRequest, match="2 to 10"):
        await app.service.submit(GenerateRequest(prompt="x", pipeline="runway", seconds=12), ORIGIN)
    with pytest.raises(InvalidRequest, match="1280x720, 720x1280"):
        await app.service.submit(GenerateRequest(prompt="x", pipeline="runway", size="960x960"), ORIGIN)
    assert await app.store.list() == [] and runway_server.creates() == []


# --- fallback ---------------------------------------------------------------------------------


async def test_unconfigured_pipeline_falls_back(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(RUNWAYML_API_SECRET=None, VIDEOBOT_FALLBACKS="gpt-image+runway:runway,local")
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="gpt-image+runway", seconds=2, size="256x144"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert job.pipeline == "local" and job.provider == "local"
    assert [m["to"] for m in job.state["fallbacks"]] == ["runway", "local"]
    assert {m["reason"] for m in job.state["fallbacks"]} == {"not_configured"}
    assert "image_step_path" not in job.state  # no still was paid for on a pipeline that could not finish
    events = [e["detail"] for e in await app.store.events(job.id) if e["detail"]]
    assert any("fallback gpt-image+runway -> runway" in d for d in events)
    assert runway_server.creates() == []
    assert_video(job.output_path, width=256, height=144, seconds=2)  # type: ignore[arg-type]


async def test_outage_falls_back_but_policy_rejection_does_not(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="runway:local")
    runway_server.fail("POST", "/v1/text_to_video", 503, times=3)
    moved = await run(app, GenerateRequest(prompt="a fox", pipeline="runway", seconds=2))
    assert moved.status is JobStatus.COMPLETED and moved.pipeline == "local"
    assert moved.state["fallbacks"] == [{"from": "runway", "to": "local", "reason": "unavailable"}]
    assert len(runway_server.creates()) == 3  # 503 is a refusal: repeated with backoff, then given up

    runway_server.next_tasks.append((["RUNNING", "FAILED"], "SAFETY.INPUT.TEXT"))
    refused = await run(app, GenerateRequest(prompt="something bad", pipeline="runway", seconds=2))
    assert refused.status is JobStatus.FAILED and refused.pipeline == "runway"
    assert refused.error_code == "content_policy" and "fallbacks" not in refused.state
    assert "content policy" in (refused.error_message or "")
    assert len(runway_server.creates()) == 4  # never retried


async def test_internal_failure_is_retried_once(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app()
    runway_server.next_tasks.append((["RUNNING", "FAILED"], "INTERNAL.BAD_OUTPUT.CODE01"))
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="runway", seconds=2))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(runway_server.creates()) == 2 and job.state["remote_retries"] == 1
    assert job.state["failed_remote_ids"][0] != job.remote_id

    runway_server.next_tasks.extend([(["FAILED"], "INTERNAL"), (["FAILED"], "INTERNAL")])
    twice = await run(app, GenerateRequest(prompt="a fox", pipeline="runway", seconds=2))
    assert twice.status is JobStatus.FAILED and twice.error_code == "generation_failed"
    assert len(runway_server.creates()) == 4


# --- A/B --------------------------------------------------------------------------------------


async def test_ab_split_records_the_arm_and_stats_compare_them(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_AB_SPLITS="ab:runway=50,local=50", VIDEOBOT_MAX_QUEUED_PER_USER="50")
    jobs = [await app.service.submit(GenerateRequest(prompt=f"clip {i}", pipeline="ab", seconds=2, size="1280x720"), ORIGIN)
            for i in range(16)]  # fmt: skip
    done = await asyncio.wait_for(asyncio.gather(*(app.runner.wait(j.id) for j in jobs)), 30)
    arms = {j.pipeline for j in done}
    assert arms == {"runway", "local"}
    assert all(j.state["ab"] == {"split": "ab", "arm": j.pipeline} for j in done)
    assert all(j.status is JobStatus.COMPLETED for j in done)
    assert len(runway_server.creates()) == sum(j.pipeline == "runway" for j in done)

    stats = {s.pipeline: s for s in await Ledger(app.store).pipeline_stats()}
    assert set(stats) == {"runway", "local"}
    assert stats["runway"].jobs + stats["local"].jobs == 16
    assert stats["runway"].success_rate == 1.0 and stats["runway"].median_seconds is not None
    assert stats["runway"].cost == pytest.approx(0.24 * stats["runway"].jobs)  # gen4.5, 12 credits x 2 s
    assert stats["local"].cost == 0.0


# --- budgets ----------------------------------------------------------------------------------


async def test_user_budget_refuses_with_the_numbers(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_DAILY_BUDGET_USER_USD="1.00")
    first = await run(app, GenerateRequest(prompt="a fox", pipeline="runway", seconds=5))  # $0.60
    assert first.status is JobStatus.COMPLETED
    with pytest.raises(BudgetExceeded) as info:
        await app.service.submit(GenerateRequest(prompt="another", pipeline="runway", seconds=5), ORIGIN)
    assert user_message(info.value).startswith(
        "This job costs about $0.60; you have $0.40 left of your $1.00 daily budget."
    )
    assert len(runway_server.creates()) == 1 and len(await app.store.list()) == 1
    # A cheaper job still fits; another user has their own budget.
    assert (await run(app, GenerateRequest(prompt="short", pipeline="runway", seconds=2))).status is JobStatus.COMPLETED
    other = ORIGIN.model_copy(update={"user_id": "someone-else"})
    assert (await run(app, GenerateRequest(prompt="x", pipeline="runway", seconds=5), other)).status is JobStatus.COMPLETED

    reply = await run_command(app.service, parse_command("/usage"), ORIGIN)
    assert reply.text == "Today (UTC) you have spent $0.84 of your $1.00 daily budget ($0.16 left)."


async def test_workspace_budget_counts_running_jobs(make_app: AppFactory, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_DAILY_BUDGET_WORKSPACE_USD="1.00")
    runway_server.script = ["RUNNING"]  # stays running: its estimate is already spoken for
    alice = Origin(platform="slack", workspace_id="T1", user_id="alice")
    bob = alice.model_copy(update={"user_id": "bob"})
    await app.service.submit(GenerateRequest(prompt="x", pipeline="runway", seconds=5), alice)
    with pytest.raises(BudgetExceeded, match=r"\$0.40 left of this workspace's \$1.00 daily budget"):
        await app.service.submit(GenerateRequest(prompt="y", pipeline="runway", seconds=5), bob)
    elsewhere = bob.model_copy(update={"workspace_id": "T2", "user_id": "carol"})
    await app.service.submit(GenerateRequest(prompt="y", pipeline="runway", seconds=5), elsewhere)
    usage = await app.service.usage(bob)
    assert usage.workspace_spent == pytest.approx(0.60) and usage.user_spent == 0.0


def test_cli_usage_and_stats_print(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert main(["usage"]) == 0
    assert "no jobs today" in capsys.readouterr().out
    assert main(["stats"]) == 0
    assert "no video jobs" in capsys.readouterr().out
    assert os.environ["VIDEOBOT_DATA_DIR"]
