"""The status card over a job's life: one chat.update budget per workspace shared by every card,
every job's final state, the ETA once there are samples, a failure told short in public and in full
to its owner alone."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.app import App
from bot.core.models import GenerateParams, Job, JobKind, JobStatus, Origin
from providers.polling import PollPolicy
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import TEAM_ID, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.01, min_interval=0.01, backoff_base=0.01)


def with_scripted(server: ScriptedServer) -> Any:
    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST

    return register


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


async def test_eight_concurrent_jobs_share_one_workspace_budget_and_every_final_arrives(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack's 50 a minute with budget and window cut tenfold (5 per 6 s): the same pace, one update
    # every 1.2 s, so the sliding-window check needs seconds of run rather than minutes.
    budget, window = 5, 6.0
    slack_env(
        monkeypatch, slack, SLACK_UPDATE_BUDGET=str(budget), SLACK_UPDATE_WINDOW_SECONDS=str(window),
        VIDEOBOT_MAX_CONCURRENT_JOBS="8", VIDEOBOT_MAX_RUNNING_PER_USER="8",
    )  # fmt: skip
    server = ScriptedServer(polls_to_finish=40)  # ~40 progress ticks each: far more than the budget allows
    bot = await start_slack_bot(register=with_scripted(server))
    try:
        await asyncio.gather(*(
            slack.slash(bot.url, "/video", f"clip {i} --pipeline scripted --seconds 1 --size 128x72", user_id=f"U0USER{i % 3}")
            for i in range(8)
        ))  # fmt: skip
        posted = await slack.wait_for(lambda: cards(slack) if len(cards(slack)) == 8 else None)
        jobs = [await job_of_message(bot.app, ts) for ts in posted]
        done = await asyncio.wait_for(asyncio.gather(*(bot.app.runner.wait(j.id) for j in jobs)), 30)
        assert all(j.status is JobStatus.COMPLETED for j in done)
        # Every job's final state arrives: each card says done, with the result's buttons.
        await slack.wait_for(lambda: all("✅ Done" in slack.text_of(ts) and "vb_reroll" in dict(buttons_of(slack.messages[ts])) for ts in posted), timeout=30)

        scheduler = bot.adapter.surface.scheduler_for(TEAM_ID)
        assert (scheduler.max_rate, scheduler.per) == (budget, window)  # the budget it was given
        updates = sorted(c.at for c in slack.calls_to("chat.update"))
        # Measured at Slack's end over the whole run: never more than the budget in any window
        # (the window 5 % short of the budget's, for request latency jitter).
        busiest = max(sum(1 for u in updates if t <= u < t + window * 0.95) for t in updates)
        assert busiest <= budget, f"{busiest} chat.update calls within {window}s against a budget of {budget}"
        assert len(updates) < 8 * 40, "progress was coalesced, newest state first"
        span = updates[-1] - updates[0]
        assert len(updates) <= budget * (span / window) + budget, "within 50 a minute over the whole run"
        assert {c.args["ts"] for c in slack.calls_to("chat.update")} == set(posted)
    finally:
        await bot.close()


def sample(pipeline: str, seconds: int, size: str, took: float) -> Job:
    """A finished job like the ones the ETA is computed from."""
    now = time.time()
    return Job(
        id=f"s{int(now * 1e6) % 10**7:07d}", kind=JobKind.GENERATE, origin=Origin(platform="slack"), prompt="sample",
        params=GenerateParams(seconds=seconds, size=size, seed=1), pipeline=pipeline, status=JobStatus.COMPLETED,
        created_at=now - took - 1, started_at=now - took, finished_at=now,
    )  # fmt: skip


async def test_the_eta_appears_once_there_are_enough_samples(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()  # jobs stay running: their cards keep updating
    bot = await start_slack_bot(register=with_scripted(server))
    try:
        for _ in range(2):
            bot.app.runner.eta.observe(sample("scripted", 1, "128x72", took=90))
        await slack.slash(bot.url, "/video", "not enough samples yet --pipeline scripted --seconds 1 --size 128x72")
        first = await slack.wait_for(lambda: cards(slack))
        await slack.wait_for(lambda: "🎬" in slack.text_of(first[0]))
        assert "ETA" not in slack.text_of(first[0])

        bot.app.runner.eta.observe(sample("scripted", 1, "128x72", took=90))  # the third sample
        await slack.slash(bot.url, "/video", "now there are --pipeline scripted --seconds 1 --size 128x72")
        second = (await slack.wait_for(lambda: cards(slack)[1:]))[0]
        await slack.wait_for(lambda: "🎬" in slack.text_of(second) and "ETA 1:2" in slack.text_of(second))  # about 1:29 left
    finally:
        server.release.set()
        await bot.close()


async def test_a_failure_after_the_start_is_short_in_public_and_whole_to_the_owner(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack_env(monkeypatch, slack)
    server = ScriptedServer()
    server.release.clear()
    bot = await start_slack_bot(register=with_scripted(server))
    reason = (
        "The scene shows a trademarked character. Remove the character's name and describe the costume instead; "
        "then try again with /video."
    )
    try:
        async def fail(user: str) -> tuple[str, Job]:
            before = len(cards(slack))
            await slack.slash(bot.url, "/video", "a caped hero over the city --pipeline scripted --seconds 1 --size 128x72", user_id=user)
            ts = (await slack.wait_for(lambda: cards(slack)[before:]))[0]
            job = await job_of_message(bot.app, ts)
            await slack.wait_for(lambda: "🎬" in slack.text_of(ts))  # started, running
            server.fail_job = ("moderation_blocked", reason)
            done = await asyncio.wait_for(bot.app.runner.wait(job.id), 10)
            server.fail_job = None
            assert done.status is JobStatus.FAILED and done.started_at is not None
            return ts, done

        ts, job = await fail("U0ALICE")
        await slack.wait_for(lambda: "❌ Failed" in slack.text_of(ts))
        card = slack.messages[ts]["blocks"][0]["text"]["text"]
        line = card.splitlines()[-1]
        assert line.startswith("❌ Failed: ") and "moderation_blocked" in line and len(line) <= 110, line
        assert "describe the costume" not in slack.text_of(ts), "the whole note is the owner's, not the channel's"
        assert [a for a, _ in buttons_of(slack.messages[ts])] == ["vb_reroll"]
        [note] = await slack.wait_for(lambda: [e for e in slack.ephemerals if e["user"] == "U0ALICE"])
        assert note["channel"] == slack.channel_id and job.id in note["text"] and "describe the costume instead" in note["text"]

        # The owner is not in the channel any more (no ephemeral possible): the note goes to the app's DM.
        slack.absent.add("U0BOB")
        ts, job = await fail("U0BOB")
        dm = await slack.wait_for(lambda: [m for m in slack.messages.values() if m["channel"] == slack.dm_channel("U0BOB")])
        assert job.id in dm[0]["text"] and "describe the costume instead" in dm[0]["text"]
        assert not [e for e in slack.ephemerals if e["user"] == "U0BOB"]
    finally:
        server.release.set()
        await bot.close()


async def test_an_ending_not_yet_on_the_card_at_a_stop_is_shown_by_the_next_start(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.adapters.slack.status as surface

    monkeypatch.setattr(surface, "CLOSE_FLUSH_SECONDS", 0.1)  # the stop does not wait for the next slot
    # One update per 30 s: the first progress goes out, the ending has to wait for a slot.
    slack_env(monkeypatch, slack, SLACK_UPDATE_BUDGET="1", SLACK_UPDATE_WINDOW_SECONDS="30")
    first = await start_slack_bot()
    try:
        await slack.slash(first.url, "/video", "a quick one --seconds 1 --size 128x72")
        [ts] = await slack.wait_for(lambda: cards(slack))
        job = await job_of_message(first.app, ts)
        done = await asyncio.wait_for(first.app.runner.wait(job.id), 20)
        assert done.status is JobStatus.COMPLETED
        await first.app.bus.drain()
    finally:
        await first.close()
    assert "✅ Done" not in slack.text_of(ts)  # the process stopped before the card's turn came

    slack_env(monkeypatch, slack)
    second = await start_slack_bot()
    try:
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts) and "vb_reroll" in dict(buttons_of(slack.messages[ts])))
        marked = await job_of_message(second.app, ts)
        deadline = time.monotonic() + 5
        while marked.origin.extra.get("card_shown") != done.finished_at:
            assert time.monotonic() < deadline, marked.origin.extra
            await asyncio.sleep(0.02)
            marked = await second.app.service.get(job.id)
    finally:
        await second.close()

    updates = len(slack.calls_to("chat.update"))
    third = await start_slack_bot()  # noted as shown: nothing to make good
    try:
        await asyncio.wait_for(third.adapter.surface.reconciled.wait(), 5)
        await third.adapter.surface.flush()
        assert len(slack.calls_to("chat.update")) == updates
    finally:
        await third.close()
