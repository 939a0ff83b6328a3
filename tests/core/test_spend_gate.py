"""One spend gate: every paid path reserves its estimate atomically; unpriced models are refused."""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from bot.app import open_app
from bot.config import Settings, load_settings
from bot.core.errors import BudgetExceeded
from bot.core.models import GenerateRequest, JobStatus, Origin
from providers.errors import InvalidRequest
from providers.openai_common import SORA_DEPRECATION
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.stores import BACKENDS, backend_url, raw_sql
from tests.core.test_core_runner import make_app, req

pytestmark = pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning")
ALICE = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="alice")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The spend gate holds on SQLite and on PostgreSQL."""
    return backend_url(request)


async def test_two_processes_racing_for_the_last_dollar_run_exactly_one_job(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "1.00")
    server = ScriptedServer()
    # Two apps on one database: two connections and two writer threads, as two processes have.
    first = await make_app(server, cost=0.6)
    second = await make_app(server, cost=0.6)
    try:
        for _ in range(5):  # several rounds: the race must hold every time, not once by luck
            results = await asyncio.gather(
                first.service.submit(req("mine"), ALICE), second.service.submit(req("no, mine"), ALICE), return_exceptions=True,
            )  # fmt: skip
            accepted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, BudgetExceeded)]
            assert len(accepted) == 1 and len(refused) == 1, results
            job = accepted[0]
            app = first if first.runner.owns(job.id) else second
            await asyncio.wait_for(app.runner.wait(job.id), 10)
            # Free the dollar again for the next round (a new day, as far as the gate can tell).
            await raw_sql(first.settings.core.database_url, first.settings.core.data_dir, "UPDATE jobs SET created_at = 0 WHERE id = ?", job.id)
    finally:
        await second.close()
        await first.close()
    assert len(server.creates) == 5


async def test_image_reroll_and_remix_pay_through_the_gate(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "0.60")
    server = ScriptedServer()
    app = await make_app(server, cost=0.25)
    try:
        first = await app.service.submit(req("a fox"), ALICE)
        first = await asyncio.wait_for(app.runner.wait(first.id), 10)
        remix = await app.service.remix(first.id, "a fox at night", ALICE)
        await asyncio.wait_for(app.runner.wait(remix.id), 10)
        with pytest.raises(BudgetExceeded, match=r"\$0.10 left of your \$0.60"):
            await app.service.reroll(first.id, ALICE)
        with pytest.raises(BudgetExceeded):
            await app.service.extend(first.id, ALICE)
    finally:
        await app.close()
    assert len(server.creates) == 2


async def test_an_image_reroll_is_priced_and_counted(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "0.50")
    app = await open_app(load_settings())
    stills = app.registry.get("local-image").image
    assert stills is not None
    monkeypatch.setattr(stills, "estimate_cost", lambda request: 0.30)  # as a paid image API would price it
    app.runner.deliverers["slack"] = _nowhere
    await app.runner.start()
    try:
        image = await app.service.submit(GenerateRequest(prompt="a still", kind="image", pipeline="local-image", size="256x256"), ALICE)
        assert image.cost_estimate == pytest.approx(0.30)
        # While the first still counts at its estimate, a re-roll of it is a second 0.30.
        with pytest.raises(BudgetExceeded):
            await app.service.reroll(image.id, ALICE)
        await asyncio.wait_for(app.runner.wait(image.id), 10)
    finally:
        await app.close()


async def _nowhere(job: Any) -> None:
    return None


async def test_an_unpriced_model_is_refused_until_priced_or_marked_free(
    settings: Settings, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.video_models.add("sora-2-pro-2025-10-06")
    request = GenerateRequest(prompt="a gateway model", pipeline="sora", model="sora-2-pro-2025-10-06", seconds=4)
    app = await open_app(load_settings())
    try:
        with pytest.raises(InvalidRequest, match="VIDEOBOT_PRICES=sora-2-pro-2025-10-06=USD"):
            await app.service.submit(request, ALICE)
        assert await app.store.list() == [] and openai_server.creates == []
    finally:
        await app.close()
    monkeypatch.setenv("VIDEOBOT_PRICES", "sora-2-pro-2025-10-06=0.50")
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "")
    app = await open_app(load_settings())
    try:
        job = await app.service.submit(request, ALICE)
        assert job.cost_estimate == pytest.approx(2.0)
    finally:
        await app.close()
    monkeypatch.delenv("VIDEOBOT_PRICES")
    monkeypatch.setenv("VIDEOBOT_FREE_MODELS", "sora-2-pro-2025-10-06")
    app = await open_app(load_settings())
    try:
        assert (await app.service.submit(request, ALICE)).cost_estimate == 0.0
    finally:
        await app.close()


async def test_a_fallback_hop_is_checked_against_the_budget(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.errors import Unavailable

    monkeypatch.setenv("VIDEOBOT_DAILY_BUDGET_USER_USD", "1.00")
    monkeypatch.setenv("VIDEOBOT_FALLBACKS", "scripted:pricey")
    cheap, dear = ScriptedServer(), ScriptedServer()
    cheap.fail_submit = Unavailable("down", provider="scripted")
    app = await make_app(cheap, start=False, cost=0.2)
    app.registry.register("pricey", lambda: dataclasses.replace(scripted_pipeline(dear, cost=5.0), name="pricey"))
    await app.runner.start()
    try:
        job = await app.service.submit(req("falls over"), ALICE)
        done = await asyncio.wait_for(app.runner.wait(job.id), 10)
    finally:
        await app.close()
    assert done.status is JobStatus.FAILED and done.error_code == "budget_exceeded"
    assert dear.creates == [], "the dearer fallback was never sent"
