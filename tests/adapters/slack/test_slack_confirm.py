"""A spend above the confirm threshold waits for its owner in Slack: an ephemeral offer with the
estimate and Confirm / Decline buttons; nothing is queued until Confirm, and Confirm posts the
new job's card like any new job."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.adapters.slack.blocks import CONFIRM_OFFER, DECLINE_OFFER
from bot.core.models import JobStatus
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)
ASK = "a pricey lighthouse --seconds 1 --size 128x72 --pipeline scripted"


@pytest.fixture
async def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    # The scripted pipeline costs $0.25 a job: above a $0.10 threshold every job waits for its owner.
    slack_env(monkeypatch, slack, VIDEOBOT_CONFIRM_ABOVE_USD="0.10")
    running = await start_slack_bot(register=lambda app: app.registry.register("scripted", lambda: scripted_pipeline(server)))
    try:
        yield running
    finally:
        await running.close()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


async def offered(bot: SlackBot, slack: SlackEmulator) -> tuple[dict[str, Any], str]:
    """Type the pricey command; the ephemeral offer and its token."""
    sent = await slack.slash(bot.url, "/video", ASK)
    assert sent.status == 200 and sent.body == ""
    offer = (await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == "cmd-U0ALICE"]))[0]
    assert offer["response_type"] == "ephemeral" and "$0.25" in offer["text"]
    buttons = buttons_of(offer)
    assert [b[0] for b in buttons] == [CONFIRM_OFFER, DECLINE_OFFER]
    token = buttons[0][1]
    assert buttons[1][1] == token
    return offer, token


def answers(slack: SlackEmulator, user: str) -> list[dict[str, Any]]:
    return [r for r in slack.responses if r["key"] == f"eph-{user}"]


async def test_confirm_starts_one_job_with_one_card(bot: SlackBot, slack: SlackEmulator, server: ScriptedServer) -> None:
    offer, token = await offered(bot, slack)
    assert await bot.app.store.list() == [] and cards(slack) == [] and server.creates == [], "nothing until Confirm"

    # Someone else's click is refused by the core, privately; still nothing.
    await slack.click_ephemeral(bot.url, offer, CONFIRM_OFFER, token, user_id="U0BOB")
    refused = await slack.wait_for(lambda: answers(slack, "U0BOB"))
    assert "Only the person who asked" in refused[0]["text"] and refused[0]["response_type"] == "ephemeral"
    assert await bot.app.store.list() == [] and cards(slack) == []

    await slack.click_ephemeral(bot.url, offer, CONFIRM_OFFER, token)
    ts = (await slack.wait_for(lambda: cards(slack)))[0]
    job = await job_of_message(bot.app, ts)
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
    assert len(cards(slack)) == 1 and len(await bot.app.store.list()) == 1
    replaced = await slack.wait_for(lambda: [r for r in answers(slack, "U0ALICE") if r.get("replace_original")])
    assert job.id in replaced[0]["text"]

    # A second Confirm of the same offer starts nothing more.
    await slack.click_ephemeral(bot.url, offer, CONFIRM_OFFER, token)
    again = await slack.wait_for(lambda: [r for r in answers(slack, "U0ALICE") if "already" in r["text"]])
    assert "already confirmed" in again[0]["text"]
    assert len(cards(slack)) == 1 and len(server.creates) == 1


async def test_decline_and_expiry_start_nothing(bot: SlackBot, slack: SlackEmulator, server: ScriptedServer) -> None:
    offer, token = await offered(bot, slack)
    await slack.click_ephemeral(bot.url, offer, DECLINE_OFFER, token)
    declined = await slack.wait_for(lambda: answers(slack, "U0ALICE"))
    assert "Declined" in declined[0]["text"] and declined[0]["replace_original"] is True

    slack.responses.clear()
    offer, token = await offered(bot, slack)
    with sqlite3.connect(bot.app.settings.core.data_dir / "videobot.sqlite3") as conn:  # ten minutes pass
        conn.execute("UPDATE pending_spends SET expires_at = ? WHERE token = ?", (time.time() - 1, token))
    await slack.click_ephemeral(bot.url, offer, CONFIRM_OFFER, token)
    expired = await slack.wait_for(lambda: answers(slack, "U0ALICE"))
    assert "expired" in expired[0]["text"]
    assert await bot.app.store.list() == [] and cards(slack) == [] and server.creates == []
