"""Results reach Slack through the core's delivery policy, streamed from disk.

The upload is files.getUploadURLExternal, the bytes POSTed with their length declared and read
from the file a chunk at a time, then files.completeUploadExternal: no whole video in memory.
Over Slack's file limit (a setting) the core decides: a re-encode that fits, else a still and a
note, else the note alone.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.adapters.slack.upload import upload_file
from bot.core.models import Job, JobStatus
from tests.fakes.slack_api import SlackBot, SlackEmulator, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401 (slack is a fixture)

pytestmark = pytest.mark.timeout(60)


async def make_bot(slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch, **env: str) -> SlackBot:
    slack_env(monkeypatch, slack, **env)
    return await start_slack_bot()


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    running = await make_bot(slack, monkeypatch)
    try:
        yield running
    finally:
        await running.close()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def test_a_large_file_is_streamed_never_held_whole(bot: SlackBot, slack: SlackEmulator, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        for _ in range(48):
            out.write(os.urandom(1 << 20))
    slack.spool = tmp_path / "spool"
    slack.spool.mkdir()

    tracemalloc.start()
    try:
        file_id = await upload_file(bot.adapter.client, big, filename="big.mp4", title="Video · job abcd2345 · big", channel=slack.channel_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 48 MB went through this process twice (the bot's side and the emulator's) with a few MB at most held.
    assert peak < 8 * (1 << 20), f"peak {peak / (1 << 20):.1f} MB while uploading 48 MB"

    [sent] = slack.calls_to("upload")
    assert sent.args["content_length"] == str(big.stat().st_size) and not sent.args["chunked"]
    assert sha256(slack.files[file_id]["path"]) == sha256(big)
    [asked] = slack.calls_to("files.getUploadURLExternal")
    assert asked.args["length"] == str(big.stat().st_size)
    [shared] = [m for m in slack.messages.values() if m.get("files") == [file_id]]
    assert shared["channel"] == slack.channel_id


async def finished(bot: SlackBot, slack: SlackEmulator, text: str) -> tuple[Job, str]:
    await slack.slash(bot.url, "/video", text)
    ts = await slack.wait_for(lambda: next((t for t, m in slack.messages.items() if m.get("metadata")), None))
    job = await asyncio.wait_for(bot.app.runner.wait((await job_of_message(bot.app, ts)).id), 30)
    assert job.status is JobStatus.COMPLETED and job.error_code is None, job.error_message
    return job, ts


def outcome(result: dict[str, Any], posted: list[dict[str, Any]], job: Job) -> str:
    """What the user got, from what reached the channel: the video as it was, a re-encode that
    fits, a still with the note, or the note alone."""
    if not posted:
        return "note alone" if "could not be shrunk to fit" in result["text"] else f"nothing: {result['text']!r}"
    [file] = posted
    assert job.output_path is not None
    if file["name"].endswith(".jpg"):
        return "still" if "here is a still" in result["text"] else f"an unexplained still: {result['text']!r}"
    if file["data"] == Path(job.output_path).read_bytes():
        return "as is" if "Re-encoded" not in result["text"] else "as is, yet said to be re-encoded"
    return "re-encoded" if "Re-encoded to fit" in result["text"] else f"an unexplained other video: {result['text']!r}"


#: The clip below (640x360, seed 11): 3 s make about 25 KB, re-encoded down to about 6 KB at best;
#: 20 s make about 129 KB, whose re-encode cannot get under 21 KB; the still is about 14 KB.
#: Each limit lies well inside one outcome's band (the size check below says when it no longer does).
@pytest.mark.parametrize(
    ("seconds", "limit_mb", "expected"),
    [(3, "1", "as is"), (3, "0.012", "re-encoded"), (20, "0.02", "still"), (3, "0.0005", "note alone")],
)
async def test_over_the_slack_file_limit_the_core_decides_what_is_posted(
    settings: Any, slack: SlackEmulator, monkeypatch: pytest.MonkeyPatch, seconds: int, limit_mb: str, expected: str
) -> None:
    bot = await make_bot(slack, monkeypatch, SLACK_FILE_LIMIT_MB=limit_mb)
    limit = int(float(limit_mb) * 1_048_576)
    try:
        job, ts = await finished(bot, slack, f"a busy harbour full of boats --seconds {seconds} --size 640x360 --seed 11")
        assert job.output_path
        size = Path(job.output_path).stat().st_size
        assert (size <= limit) == (expected == "as is"), f"the clip is {size} bytes: the limit {limit} no longer picks {expected!r}"
        [result] = [m for m in slack.thread(ts) if m["user"] == "U0BOT"]
        assert job.origin.result_message_id == result["ts"]
        posted = [slack.files[f] for f in result.get("files", [])]
        assert all(len(f["data"]) <= limit for f in posted)
        thumb = Path(job.thumbnail_path).stat().st_size if job.thumbnail_path else None
        assert outcome(result, posted, job) == expected, f"clip {size} bytes, still {thumb}, limit {limit}: {[len(f['data']) for f in posted]} posted"
        assert Path(job.output_path).stat().st_size == size, "the original stays as it was"
        if expected == "note alone":  # marked, so a retry finds it instead of posting again
            assert result["metadata"]["event_type"] == "videobot_result"
            again = await bot.adapter.deliver(job.model_copy(update={"state": {**job.state, "delivery": {"attempt": 2}}}))
            assert again is not None and again["result_message_id"] == result["ts"]
            assert len([m for m in slack.thread(ts) if m["user"] == "U0BOT"]) == 1
        await slack.wait_for(lambda: "✅ Done" in slack.text_of(ts))
    finally:
        await bot.close()
