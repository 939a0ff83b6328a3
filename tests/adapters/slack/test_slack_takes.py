"""Takes in Slack end to end: slack-bolt and slack_sdk against the loopback Slack, the openai SDK
against the loopback OpenAI (the `sora` pipeline). `/video … --takes 3` gives one card (each
take's state on one line), then one message in its thread with the contact sheet and three valid
MP4s; Use 2 posts take 2 alone with its own card and buttons (nothing is made); More like 1 makes
three takes whose image-to-video requests carry take 1's first frame (pixels at the emulator);
a failing take leaves the other two delivered and the failure named."""
from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.app import App
from bot.core.models import Job, JobKind, JobStatus
from bot.core.take_set import middle_frame
from providers.media import first_frame
from providers.openai_common import SORA_DEPRECATION
from providers.polling import PollPolicy
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.slack_api import SlackBot, SlackEmulator, buttons_of, job_of_message, slack, slack_env, start_slack_bot  # noqa: F401
from tests.helpers import assert_video

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning"), pytest.mark.timeout(120)]
ASK = "three lighthouses at dusk --pipeline sora --seconds 4 --size 1280x720 --takes 3"
#: The set's line: each take's state (`1 ▓▓▓▓░ 80% · 2 ▓▓░░░ 40% · 3 queued`).
TAKE_STATE = r"(?:[▓░]{5} \d+%|queued|done|failed)"
SET_LINE = re.compile(rf"1 {TAKE_STATE} · 2 {TAKE_STATE} · 3 {TAKE_STATE}")


@pytest.fixture
async def bot(settings: Any, slack: SlackEmulator, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackBot]:
    slack_env(
        monkeypatch, slack, OPENAI_API_KEY=openai_server.api_key, OPENAI_BASE_URL=openai_server.base_url,
        VIDEOBOT_MAX_RUNNING_PER_USER="4", VIDEOBOT_CONFIRM_ABOVE_USD="",
    )  # fmt: skip

    def register(app: App) -> None:
        app.runner.poll_policy = PollPolicy(interval=0.05, min_interval=0.01, timeout=60, backoff_base=0.01, backoff_max=0.2)

    running = await start_slack_bot(register=register)
    try:
        yield running
    finally:
        await running.close()


def cards(slack: SlackEmulator) -> list[str]:
    return [ts for ts, m in slack.messages.items() if m.get("metadata", {}).get("event_type") == "videobot_job"]


def diff(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def finished(bot: SlackBot, job_id: str) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait(job_id), 60)


async def ask(bot: SlackBot, slack: SlackEmulator, text: str = ASK) -> tuple[str, Job]:
    before = set(cards(slack))
    sent = await slack.slash(bot.url, "/video", text)
    assert sent.status == 200
    ts = (await slack.wait_for(lambda: [t for t in cards(slack) if t not in before]))[0]
    job = await job_of_message(bot.app, ts)
    assert job.kind is JobKind.TAKES
    return ts, job


def result_files(slack: SlackEmulator, job: Job, tmp_path: Path) -> dict[str, Path]:
    """The set's result message as posted: its files by name, written out for decoding."""
    message = slack.messages[job.origin.result_message_id or ""]
    found = {}
    for file_id in message["files"]:
        file = slack.files[file_id]
        path = tmp_path / file["name"]
        path.write_bytes(file["data"])
        found[file["name"]] = path
    return found


async def test_three_takes_one_card_one_message_use_and_more_like(bot: SlackBot, slack: SlackEmulator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    ts, job = await ask(bot, slack)
    done = await finished(bot, job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(openai_server.creates) == 3 and cards(slack) == [ts], "one card for the whole set"
    updates = [str(c.args.get("text")) for c in slack.calls_to("chat.update") if c.args.get("ts") == ts]
    assert any(SET_LINE.search(t) for t in updates), updates
    await slack.wait_for(lambda: "✅" in slack.text_of(ts), timeout=10)
    done = await bot.app.service.get(job.id)

    # One message in the card's thread: the contact sheet and the three takes, numbered with their seeds.
    files = result_files(slack, done, tmp_path)
    assert list(files) == [f"{job.id}.png", *(f"{job.id}-take{k}.mp4" for k in (1, 2, 3))]
    result = slack.messages[done.origin.result_message_id or ""]
    assert result.get("thread_ts") == ts
    for k, seed in enumerate(done.state["seeds"], 1):
        assert f"Take {k} · seed {seed}" in result["text"]
        assert_video(files[f"{job.id}-take{k}.mp4"], width=128, height=72, seconds=4)
    sheet = Image.open(files[f"{job.id}.png"]).convert("RGB")
    for k in (1, 2, 3):
        tile = sheet.crop((6 + (k - 1) * 366, 6, 6 + (k - 1) * 366 + 360, sheet.height - 24))
        own = diff(tile, middle_frame(files[f"{job.id}-take{k}.mp4"]))
        others = [diff(tile, middle_frame(files[f"{job.id}-take{j}.mp4"])) for j in (1, 2, 3) if j != k]
        assert own < 8 and all(own * 3 < o for o in others), (k, own, others)
    # The card: the sheet as its still, Use N and More like N per take, Re-roll all, Delete.
    card = slack.messages[ts]
    assert next(b for b in card["blocks"] if b["type"] == "image")["slack_file"]["id"] == result["files"][0]
    shown = buttons_of(card)
    assert [a for a, _ in shown] == [*(f"vb_use_{k}" for k in (1, 2, 3)), *(f"vb_more_{k}" for k in (1, 2, 3)), "vb_reroll", "vb_delete"]
    labels = [e["text"]["text"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels[:2] == ["Use 1", "Use 2"] and "🔁 Re-roll all" in labels

    # Use 2: take 2 alone, its own card and its usual buttons; the same file, nothing made.
    await slack.click(bot.url, ts, "vb_use_2", job.id)
    take_ts = (await slack.wait_for(lambda: [t for t in cards(slack) if t != ts]))[0]
    take = await job_of_message(bot.app, take_ts)
    assert take.parent_id == job.id and take.state["take"] == 2 and take.kind is JobKind.GENERATE
    await slack.wait_for(lambda: "✅" in slack.text_of(take_ts) and [a for a, _ in buttons_of(slack.messages[take_ts])] == [
        "vb_reroll", "vb_remix", "vb_extend", "vb_delete"], timeout=15)  # fmt: skip
    take = await bot.app.service.get(take.id)
    posted = slack.messages[take.origin.result_message_id or ""]
    assert [slack.files[f]["data"] for f in posted["files"]] == [files[f"{job.id}-take2.mp4"].read_bytes()]
    assert len(openai_server.creates) == 3

    # More like 1: three new takes, each image-to-video request carrying take 1's first frame.
    await slack.click(bot.url, ts, "vb_more_1", job.id)
    more_ts = (await slack.wait_for(lambda: [t for t in cards(slack) if t not in (ts, take_ts)]))[0]
    more = await finished(bot, (await job_of_message(bot.app, more_ts)).id)
    assert more.status is JobStatus.COMPLETED and more.parent_id == job.id, more.error_message
    creates = openai_server.creates[3:]
    assert len(creates) == 3
    wanted = first_frame(files[f"{job.id}-take1.mp4"])
    other = first_frame(files[f"{job.id}-take2.mp4"])
    for create in creates:
        sent = Image.open(io.BytesIO(create.files["input_reference"]["data"]))
        assert diff(sent, wanted) < 8 and diff(sent, wanted) * 3 < diff(sent, other)


async def test_a_failing_take_leaves_the_others_delivered_and_is_named(bot: SlackBot, slack: SlackEmulator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    openai_server.fail("create", 400, code="invalid_value", message="the emulator refuses this take")
    ts, job = await ask(bot, slack)
    done = await finished(bot, job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    files = result_files(slack, done, tmp_path)
    videos = [name for name in files if name.endswith(".mp4")]
    assert len(videos) == 2 and f"{job.id}.png" in files
    for name in videos:
        assert_video(files[name], width=128, height=72, seconds=4)
    text = slack.messages[done.origin.result_message_id or ""]["text"]
    failed = next(r for r in done.state["take_results"] if r["status"] == "failed")
    assert f"Take {failed['take']} failed:" in text and "the emulator refuses this take" in text
    # Only what reached the provider is paid: two takes of three.
    assert done.cost_actual == pytest.approx(2 * (done.cost_estimate or 0) / 3)
    # The failed take has no Use button; the others do.
    await slack.wait_for(lambda: "✅" in slack.text_of(ts), timeout=10)
    uses = [a for a, _ in buttons_of(slack.messages[ts]) if a.startswith("vb_use_")]
    assert uses == [f"vb_use_{k}" for k in (1, 2, 3) if k != failed["take"]]


async def test_a_restart_mid_set_makes_each_take_once_and_posts_the_set_once(
    settings: Any, slack: SlackEmulator, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bot goes away while the takes run at the provider; the next one adopts them (no new
    create), keeps one card, and posts the set's one message."""
    slack_env(
        monkeypatch, slack, OPENAI_API_KEY=openai_server.api_key, OPENAI_BASE_URL=openai_server.base_url,
        VIDEOBOT_MAX_RUNNING_PER_USER="4", VIDEOBOT_CONFIRM_ABOVE_USD="",
    )  # fmt: skip

    def register(app: App) -> None:
        app.runner.poll_policy = PollPolicy(interval=0.05, min_interval=0.01, timeout=60, backoff_base=0.01, backoff_max=0.2)

    openai_server.hold = True  # every take stays at 50 % until the restart
    first = await start_slack_bot(register=register)
    try:
        ts, job = await ask(first, slack)
        running = re.compile(r"1 [▓░]{5} [1-9]\d*% · 2 [▓░]{5} [1-9]\d*% · 3 [▓░]{5} [1-9]\d*%")
        await slack.wait_for(lambda: len(openai_server.creates) == 3 and running.search(slack.text_of(ts)), timeout=20)
    finally:
        await first.close()  # mid-set: three remote jobs running, nothing posted
    second = await start_slack_bot(register=register)
    try:
        openai_server.hold = False
        done = await finished(second, job.id)
        assert done.status is JobStatus.COMPLETED, done.error_message
        assert len(openai_server.creates) == 3, "each take created once"
        await slack.wait_for(lambda: "✅" in slack.text_of(ts), timeout=10)
        assert cards(slack) == [ts], "one card for the set, none for its takes"
        results = [m for m in slack.messages.values() if m.get("files") and any(slack.files[f]["name"] == f"{job.id}.png" for f in m["files"])]
        assert len(results) == 1 and len(results[0]["files"]) == 4, "the set posted once"
    finally:
        await second.close()
