"""Prompts lose control characters and bidirectional overrides before they are stored, whatever
door they came through, so a chat client cannot be made to show them differently from what they say."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.models import GenerateRequest, JobStatus, clean_text
from bot.core.stories import StoryRequest
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)
from tests.cli.test_cli import videobot

pytestmark = pytest.mark.timeout(90)
DIRTY = "a\x01b\u202ec"
HIDDEN = ("\x01", "\x02", "\u202e", "\u2066", "\u200f")


def test_the_cleaning() -> None:
    assert clean_text(DIRTY) == "abc"
    assert clean_text("line one\r\nline\ttwo\u2028three\x7f\x9b\u061c") == "line one\nline two\nthree"
    assert clean_text("\u2066x\u2069 \u202ay\u202c \u200ez\u200f") == "x y z"
    assert GenerateRequest(prompt=DIRTY).prompt == "abc"
    # A story's script keeps its lines: they separate its scenes.
    assert StoryRequest(script="a fox\x01 wakes\n\u202ethe fox runs").script == "a fox wakes\nthe fox runs"


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack)
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


async def test_a_chat_prompt_is_stored_and_echoed_clean(bot: SlackBot, slack: SlackEmulator) -> None:
    await slack.slash(bot.url, "/video", f"{DIRTY} --seconds 1 --size 128x72")
    [card] = await slack.wait_for(lambda: cards(slack))
    job = await job_of_message(bot.app, card)
    assert job.prompt == "abc"
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    shown = slack.text_of(card)
    assert "abc" in shown and not any(c in shown for c in HIDDEN)

    # A remix's new prompt goes through the same cleaning.
    await slack.slash(bot.url, "/video", f"remix {job.id} d\x02e\u2066f\u200f")
    second = (await slack.wait_for(lambda: cards(slack)[1:]))[0]
    remix = await job_of_message(bot.app, second)
    assert remix.prompt == "def"
    shown = await slack.wait_for(lambda: "def" in slack.text_of(second) and slack.text_of(second))
    assert not any(c in shown for c in HIDDEN)


def test_a_cli_prompt_is_stored_and_echoed_clean(tmp_path: Path) -> None:
    queued = videobot(tmp_path, "generate", DIRTY, "--seconds", "1", "--size", "128x72", "--detach")
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    shown = videobot(tmp_path, "show", job_id)
    assert "prompt: abc\n" in shown.stdout and not any(c in shown.stdout for c in HIDDEN)
    listed = videobot(tmp_path, "jobs")
    assert "“abc”" in listed.stdout
