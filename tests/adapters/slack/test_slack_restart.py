"""A restart mid-job keeps updating the same status message; budgets and usage answer privately."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.core.models import JobStatus
from providers.polling import PollPolicy
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)


def with_scripted(server: ScriptedServer) -> Any:
    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST

    return register


async def test_a_restart_mid_job_keeps_updating_the_same_status_message(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()
    first = await start_slack_bot(register=with_scripted(server))
    await slack.slash(first.url, "/video", "survives a restart --seconds 1 --size 128x72 --pipeline scripted")
    ts = await slack.wait_for(lambda: next(iter(slack.messages), None))
    await slack.wait_for(lambda: "▱" in slack.text_of(ts) or "▰" in slack.text_of(ts))  # progress shown before the restart
    job = await job_of_message(first.app, ts)
    await first.close()  # the process goes away mid-job
    updates_before = len(slack.calls_to("chat.update"))

    second = await start_slack_bot(register=with_scripted(server))
    try:
        server.release.set()
        done = await asyncio.wait_for(second.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED and len(server.creates) == 1
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
        assert [c.args["ts"] for c in slack.calls_to("chat.update")[updates_before:]] == [ts] * (len(slack.calls_to("chat.update")) - updates_before)
        assert [m for m in slack.messages.values() if "thread_ts" not in m] == [slack.messages[ts]], "no second status message"
        reply = next(m for m in slack.thread(ts) if m.get("files"))
        video = tmp_path / "after-restart.mp4"
        video.write_bytes(slack.files[reply["files"][0]]["data"])
        assert_video(video, width=128, height=72, seconds=1)
    finally:
        await second.close()


async def test_over_budget_is_said_privately_and_usage_shows_the_spend(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_env(monkeypatch, slack, VIDEOBOT_DAILY_BUDGET_USER_USD="0.10")
    bot = await start_slack_bot(register=with_scripted(ScriptedServer()))
    try:
        await slack.slash(bot.url, "/video", "an expensive idea --pipeline scripted --seconds 1 --size 128x72", user_id="U0HANK")
        reply = (await slack.wait_for(lambda: slack.responses))[0]
        assert reply["response_type"] == "ephemeral" and "budget" in reply["text"].lower()
        assert not slack.messages
        slack.responses.clear()
        await slack.slash(bot.url, "/video", "usage", user_id="U0HANK")
        reply = (await slack.wait_for(lambda: slack.responses))[0]
        assert reply["response_type"] == "ephemeral" and "$0.10" in reply["text"]
    finally:
        await bot.close()
