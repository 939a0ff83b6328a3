"""Moderation before spend, through the core: a flagged prompt or image reaches no paid endpoint."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from bot.config import Settings
from bot.core.models import GenerateRequest, Job, JobStatus, Origin
from providers.openai_common import SORA_DEPRECATION
from tests.fakes.bfl_server import KEY as BFL_KEY, BflServer
from tests.fakes.openai_server import OpenAIEmulator
from tests.apps import AppFactory, AppMaker
from tests.fakes.runway_server import SECRET, RunwayServer

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning"), pytest.mark.timeout(60)]
ORIGIN = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="U1")

@pytest.fixture
async def make_app(
    settings: Settings, openai_server: OpenAIEmulator, runway_server: RunwayServer, bfl_server: BflServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[AppFactory]:
    apps = AppMaker(monkeypatch, {
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
        "RUNWAYML_API_SECRET": SECRET, "RUNWAYML_BASE_URL": runway_server.base_url, "RUNWAYML_POLL_SECONDS": "0.01",
        "BFL_API_KEY": BFL_KEY, "BFL_BASE_URL": bfl_server.base_url, "BFL_POLL_SECONDS": "0.01",
        "VIDEOBOT_CONFIRM_ABOVE_USD": "",
    }, platforms=("slack",))  # fmt: skip
    try:
        yield apps.make
    finally:
        await apps.close()


async def run(app: App, request: GenerateRequest) -> Job:
    job = await app.service.submit(request, ORIGIN)
    return await asyncio.wait_for(app.runner.wait(job.id), 20)


def paid_calls(openai_server: OpenAIEmulator, runway_server: RunwayServer, bfl_server: BflServer) -> int:
    return len(openai_server.creates) + len(openai_server.calls("image")) + len(runway_server.creates()) + len(bfl_server.submits())


async def test_a_flagged_prompt_reaches_no_paid_endpoint(make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer, bfl_server: BflServer) -> None:
    app = await make_app()
    for pipeline in ("gpt-image+runway", "flux+runway", "sora", "runway"):
        job = await run(app, GenerateRequest(prompt="a gore scene in an alley", pipeline=pipeline, seconds=4 if pipeline == "sora" else 5))
        assert job.status is JobStatus.FAILED and job.error_code == "moderated"
        assert "violence" in (job.error_message or "") and "Nothing was made or spent" in (job.error_message or "")
        events = await app.store.events(job.id)
        assert any("rejected by moderation" in (e["detail"] or "") for e in events)
    assert paid_calls(openai_server, runway_server, bfl_server) == 0
    assert len(openai_server.calls("moderations")) == 4
    usage = await app.service.usage(ORIGIN)
    assert usage.user_spent == 0.0


async def test_a_flagged_input_image_is_caught_with_clean_text(make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer, bfl_server: BflServer, tmp_path: Path) -> None:
    app = await make_app()
    picture = tmp_path / "magenta.png"
    Image.new("RGB", (320, 180), (255, 0, 255)).save(picture)
    job = await run(app, GenerateRequest(prompt="make it move", pipeline="runway", seconds=5, image_path=picture))
    assert job.status is JobStatus.FAILED and "sexual" in (job.error_message or "")
    assert paid_calls(openai_server, runway_server, bfl_server) == 0
    (check,) = openai_server.moderations
    assert [i["type"] for i in check.inputs] == ["text", "image"] and check.flagged == [["sexual"]]


async def test_clean_prompts_pass_and_are_checked_once(make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a quiet harbour at dawn", pipeline="runway", seconds=5))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(openai_server.calls("moderations")) == 1 and len(runway_server.creates()) == 1
    assert job.state["moderated"].startswith("openai:")


async def test_an_outage_fails_closed_for_paid_and_open_for_local(make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer) -> None:
    app = await make_app()
    openai_server.fail("moderations", 500, times=100)
    paid = await run(app, GenerateRequest(prompt="a harbour", pipeline="runway", seconds=5))
    assert paid.status is JobStatus.FAILED and paid.error_code == "moderation_unavailable"
    assert "nothing was sent or spent" in (paid.error_message or "") and runway_server.creates() == []
    free = await run(app, GenerateRequest(prompt="a harbour", pipeline="local", seconds=1, size="128x72"))
    assert free.status is JobStatus.COMPLETED


async def test_the_blocklist_applies_without_openai(make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer) -> None:
    app = await make_app(VIDEOBOT_MODERATION="blocklist", VIDEOBOT_BLOCKLIST="spider venom, glorp")
    job = await run(app, GenerateRequest(prompt="a Spider-Venom close up", pipeline="runway", seconds=5))
    assert job.status is JobStatus.FAILED and "blocklist: spider venom" in (job.error_message or "")
    assert runway_server.creates() == [] and openai_server.calls("moderations") == []


async def test_a_free_hop_that_skipped_moderation_is_moderated_before_a_paid_fallback(
    make_app: AppFactory, openai_server: OpenAIEmulator, runway_server: RunwayServer
) -> None:
    """Finding 4 of the one-door read: a free first hop (priced 0) goes on through a moderation
    outage; when it fails over to a paid pipeline, the paid hop is moderated again and fails closed."""
    from providers.errors import ModelUnavailable
    from providers.pipeline import Pipeline
    from tests.fakes.scripted_provider import ScriptedProvider, ScriptedServer

    app = await make_app()
    down = ScriptedServer(fail_submit=ModelUnavailable("the free GPU box is off"))
    app.registry.register("free-box", lambda: Pipeline(name="free-box", video=ScriptedProvider(down, cost=0.0), fallbacks=("runway",)))
    openai_server.fail("moderations", 500, times=100)
    job = await run(app, GenerateRequest(prompt="a harbour", pipeline="free-box", seconds=5, size="1280x720"))
    assert job.status is JobStatus.FAILED and job.error_code == "moderation_unavailable", (job.status, job.error_code, job.error_message)
    assert runway_server.creates() == [], "the paid hop ran unmoderated"
    assert job.pipeline == "runway" and (job.cost_estimate or 0) > 0

    openai_server.faults.clear()
    passed = await run(app, GenerateRequest(prompt="a harbour", pipeline="free-box", seconds=5, size="1280x720"))
    assert passed.status is JobStatus.COMPLETED and len(runway_server.creates()) == 1
