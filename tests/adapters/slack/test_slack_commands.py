"""Every /video sub-command through the core's parser and dispatcher, as a Slack user types it;
prompts show as typed (never a ping), quoted prompts may hold `--`, /video help says what this bot offers."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.core.models import Job, JobKind, JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)
CLIP = "--seconds 1 --size 128x72"


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack, VIDEOBOT_ADMIN_USER_IDS="U0ADMIN", VIDEOBOT_MAX_RUNNING_PER_USER="4")
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


async def command(bot: SlackBot, slack: SlackEmulator, text: str, user: str = "U0ALICE") -> str:
    """Type `/video text`; the private answer (response_url), once it came."""
    before = len([r for r in slack.responses if r["key"] == f"cmd-{user}"])
    sent = await slack.slash(bot.url, "/video", text, user_id=user)
    assert sent.status == 200 and sent.body == ""
    answers = await slack.wait_for(lambda: [r for r in slack.responses if r["key"] == f"cmd-{user}"][before:])
    assert answers[0]["response_type"] == "ephemeral"
    return str(answers[0]["text"])


async def started(bot: SlackBot, slack: SlackEmulator, text: str, user: str = "U0ALICE", *, done: bool = True) -> tuple[Job, str]:
    """Type a command that starts a job; the job (finished, when `done`) and its card's ts."""
    before = len(cards(slack))
    sent = await slack.slash(bot.url, "/video", text, user_id=user)
    assert sent.status == 200 and sent.body == ""
    ts = (await slack.wait_for(lambda: cards(slack)[before:]))[0]
    job = await job_of_message(bot.app, ts)
    if done:
        job = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert job.status is JobStatus.COMPLETED, job.error_message
    return job, ts


async def test_every_sub_command_means_what_it_says_whatever_follows_it(bot: SlackBot, slack: SlackEmulator) -> None:
    # A quoted prompt may hold -- and start with a command word; the flags after it still count.
    parent, ts = await started(bot, slack, f'"remix -- a sign that says --stop-- at the pond" {CLIP} --seed 7')
    assert (parent.prompt, parent.params.seed, parent.kind) == ("remix -- a sign that says --stop-- at the pond", 7, JobKind.GENERATE)

    long_prompt = "the same pond at night with paper lanterns drifting slowly across the dark water and a light rain"
    remix, _ = await started(bot, slack, f"remix {parent.id} {long_prompt}", done=False)
    assert (remix.kind, remix.parent_id, remix.prompt) == (JobKind.REMIX, parent.id, long_prompt)

    extend, _ = await started(bot, slack, f"extend {parent.id} --seconds 4 the boat drifts away past the reeds as the sun sets", done=False)
    assert (extend.kind, extend.parent_id, extend.params.seconds) == (JobKind.EXTEND, parent.id, 4)
    assert extend.prompt == "the boat drifts away past the reeds as the sun sets"

    reroll, _ = await started(bot, slack, f"reroll {parent.id}", user="U0BOB", done=False)
    assert (reroll.kind, reroll.parent_id, reroll.origin.user_id, reroll.prompt) == (JobKind.VARIATION, parent.id, "U0BOB", parent.prompt)

    image, _ = await started(bot, slack, "image a red kite over the sea --size 128x128", done=False)
    assert image.kind is JobKind.IMAGE

    shown = await command(bot, slack, f"job {parent.id}")
    assert shown.startswith("```") and parent.id in shown and "--stop--" in shown and "status: completed" in shown
    listing = await command(bot, slack, "jobs")
    assert all(j.id in listing for j in (parent, remix, extend, image))
    assert "$" in await command(bot, slack, "usage")

    for job in (remix, extend, reroll, image):
        await asyncio.wait_for(bot.app.runner.wait(job.id), 20)

    # cancel / delete: the owner or an admin; anyone else is told so, privately.
    assert "Only the person who asked" in await command(bot, slack, f"delete {parent.id}", user="U0MALLORY")
    assert ts in slack.messages
    assert "deleted" in await command(bot, slack, f"delete {parent.id}", user="U0ADMIN")
    await slack.wait_for(lambda: ts not in slack.messages)

    slow, slow_ts = await started(bot, slack, "a very slow sunrise --seconds 20 --size 640x360", done=False)
    await slack.wait_for(lambda: "vb_cancel" in dict(buttons_of(slack.messages[slow_ts])))
    assert "Only the person who asked" in await command(bot, slack, f"cancel {slow.id}", user="U0MALLORY")
    assert "cancelled" in await command(bot, slack, f"cancel {slow.id}")
    await slack.wait_for(lambda: "Cancelled" in slack.text_of(slow_ts))
    assert buttons_of(slack.messages[slow_ts]) == []


async def test_help_lists_this_bots_pipelines_and_limits(bot: SlackBot, slack: SlackEmulator) -> None:
    for text in ("help", "  HELP "):
        answer = await command(bot, slack, text)
        assert "/video remix JOB_ID PROMPT" in answer and "/video cancel JOB_ID" in answer and "/image PROMPT" in answer
        assert "/video animate JOB_ID" in answer and "/video settings" in answer and "/video story" in answer
        assert "*local* (default), 4 s at 1280x720" in answer and "*local-image* (default)" in answer
        assert "prompts up to 1000 characters" in answer and "20 jobs" in answer and "results over 1.0 GB" in answer
        assert "above $1.00 wait for your Confirm" in answer and "16:9" in answer
        assert "Cancel" in answer and "Animate" in answer and ":repeat: re-roll" in answer and "✉" not in answer
        assert "sora" not in answer, "users see what is configured here, not what is missing"
    assert not slack.messages


async def test_user_text_never_pings_anywhere_it_is_shown(bot: SlackBot, slack: SlackEmulator) -> None:
    typed = "<!channel> look at <@U0BOB> & <https://x.test|this>"
    job, ts = await started(bot, slack, f"{typed} {CLIP}")
    assert job.prompt == typed  # stored as typed (Slack's escaping undone)
    escaped = "&lt;!channel&gt; look at &lt;@U0BOB&gt; &amp; &lt;https://x.test|this&gt;"

    await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
    card = slack.text_of(ts)
    assert escaped in card and "<!channel>" not in card and "<@U0BOB>" not in card
    [result] = [m for m in slack.thread(ts) if m.get("files")]
    assert escaped in result["text"] and "<!channel>" not in result["text"]
    assert result["text"].startswith("<@U0ALICE> ")  # the bot's own mention of the owner stays a mention

    listing = await command(bot, slack, "jobs")
    assert "&lt;!channel&gt;" in listing and "<!channel>" not in listing
    shown = await command(bot, slack, f"job {job.id}")
    assert escaped in shown

    await slack.click(bot.url, ts, "vb_remix", job.id)
    modal = await slack.wait_for(lambda: slack.views[-1] if slack.views else None)
    echo = modal["blocks"][-1]["elements"][0]["text"]
    assert escaped in echo and "<!channel>" not in echo

    # An error that repeats what was typed repeats it escaped.
    answer = await command(bot, slack, "a fox --pipeline <!here>")
    assert "&lt;!here&gt;" in answer and "<!here>" not in answer

    updates = [str(c.args.get("text", "")) + str(c.args.get("blocks", "")) for c in slack.calls if c.method in ("chat.postMessage", "chat.update")]
    assert not any("<!channel>" in u or "<@U0BOB>" in u for u in updates)
