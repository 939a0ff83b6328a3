"""Socket Mode: with SLACK_APP_TOKEN the bot opens a WebSocket (apps.connections.open) and needs no HTTP port."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.slack_api import APP_TOKEN, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)


async def test_socket_mode_acks_the_envelope_and_runs_the_job(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    slack_env(monkeypatch, slack, SLACK_APP_TOKEN=APP_TOKEN)
    monkeypatch.delenv("SLACK_SIGNING_SECRET")  # not needed: the socket is authenticated by the app token
    bot = await start_slack_bot()
    try:
        assert bot.adapter.http_url is None
        await slack.wait_for(lambda: slack.sockets)
        sent = time.monotonic()
        envelope = await slack.socket_send("slash_commands", slack.command_form("/video", "a kite over dunes --seconds 1 --size 256x144"))
        await slack.wait_for(lambda: envelope in slack.socket_acks, timeout=3)
        assert time.monotonic() - sent < 3
        ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
        job = await job_of_message(bot.app, ts)
        done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED
        await slack.wait_for(lambda: [m for m in slack.thread(ts) if m.get("files")])
    finally:
        await bot.close()
