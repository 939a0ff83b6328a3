"""/video end to end: signed requests over real HTTP to the bolt app, the Web API emulated on loopback."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.models import JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)
from tests.helpers import assert_video

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(monkeypatch, slack)
    running = await start_slack_bot()
    try:
        yield running
    finally:
        await running.close()


async def status_job(bot: SlackBot, slack: SlackEmulator) -> Any:
    """The job behind the newest status message the bot posted."""
    await slack.wait_for(lambda: [c for c in slack.calls_to("chat.postMessage") if c.status == 200])
    ts = next(ts for ts, m in reversed(slack.messages.items()) if "thread_ts" not in m and not m.get("files"))
    return await job_of_message(bot.app, ts), ts


async def test_video_acks_at_once_shows_progress_and_uploads_a_playable_mp4_in_the_thread(
    bot: SlackBot, slack: SlackEmulator, tmp_path: Path
) -> None:
    slack.fail_next("chat.update")  # one 429 on the first status update: the scheduler slows down and sends again
    sent = await slack.slash(bot.url, "/video", "a teal coupe crossing a desert --seconds 1 --size 256x144")
    assert sent.status == 200 and sent.body == "" and sent.elapsed < 3

    job, ts = await status_job(bot, slack)
    done = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
    assert done.status is JobStatus.COMPLETED
    await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts), timeout=5)

    # The file: in the status message's thread, with the prompt and the job id, decodable.
    reply = next(m for m in slack.thread(ts) if m.get("files"))
    assert job.id in reply["text"] and "a teal coupe" in reply["text"]
    mp4 = slack.files[reply["files"][0]]
    assert mp4["name"] == f"{job.id}.mp4"
    video = tmp_path / "got.mp4"
    video.write_bytes(mp4["data"])
    assert_video(video, width=256, height=144, seconds=1)
    assert done.origin.result_message_id == reply["ts"] and done.origin.status_message_id == ts

    # The card: a still uploaded to Slack and shown by file id, and the four buttons.
    card = slack.messages[ts]
    image = next(b for b in card["blocks"] if b["type"] == "image")
    assert slack.files[image["slack_file"]["id"]]["data"][:3] == b"\xff\xd8\xff"  # a JPEG
    assert [a for a, _ in buttons_of(card)] == ["vb_reroll", "vb_remix", "vb_extend", "vb_delete"]
    assert {v for _, v in buttons_of(card)} == {job.id}

    updates = [c for c in slack.calls_to("chat.update") if c.status == 200]
    assert [c.status for c in slack.calls_to("chat.update")][0] == 429
    texts = [str(c.args.get("text")) for c in updates]
    assert any("▱" in t or "Queued" in t or "Starting" in t for t in texts[:-1]), texts
    # Paced by the workspace's scheduler (0.1 s apart here, 0.2 s right after the 429), never bunched.
    gaps = [b.at - a.at for a, b in zip(updates, updates[1:])]
    assert all(gap >= 0.08 for gap in gaps), gaps
