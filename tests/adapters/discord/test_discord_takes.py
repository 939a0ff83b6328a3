"""Takes on Discord end to end, through the real discord.py client against the loopback Discord
and the openai SDK against the loopback OpenAI (`sora`): `/video … takes:3` answers with one
status message (each take's state on one line), then one result post with the contact sheet and
three valid MP4s as attachments, Use N / More like N / Re-roll all under it; Use 2 posts take 2
alone with its usual buttons; the 1️⃣ reaction does what Use 1 does; More like 1 sends take 1's
first frame to the provider; a failing take is named and the others are delivered."""
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
from providers.media import first_frame
from providers.openai_common import SORA_DEPRECATION
from providers.polling import PollPolicy
from tests.fakes.discord_api import DiscordBot, DiscordEmulator, buttons_of, discord_env, emu, job_of, result_post, start_bot  # noqa: F401
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning"), pytest.mark.timeout(120)]
ASK = {"prompt": "three lighthouses at dusk", "pipeline": "sora", "seconds": 4, "size": "1280x720", "takes": 3}
TAKE_STATE = r"(?:[▓░]{5} \d+%|queued|done|failed)"
SET_LINE = re.compile(rf"1 {TAKE_STATE} · 2 {TAKE_STATE} · 3 {TAKE_STATE}")


@pytest.fixture
async def bot(settings: Any, emu: DiscordEmulator, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordBot]:
    discord_env(monkeypatch, emu)
    for key, value in {
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
        "VIDEOBOT_MAX_RUNNING_PER_USER": "4", "VIDEOBOT_CONFIRM_ABOVE_USD": "",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)

    def register(app: App) -> None:
        app.runner.poll_policy = PollPolicy(interval=0.05, min_interval=0.01, timeout=60, backoff_base=0.01, backoff_max=0.2)

    running = await start_bot(register=register)
    try:
        yield running
    finally:
        await running.close()


def diff(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


async def finished(bot: DiscordBot, job_id: str) -> Job:
    return await asyncio.wait_for(bot.app.runner.wait(job_id), 60)


def files_of(emu: DiscordEmulator, post: dict[str, Any], tmp_path: Path) -> dict[str, Path]:
    found = {}
    for attachment in post["attachments"]:
        path = tmp_path / attachment["filename"]
        path.write_bytes(emu.attachment_bytes(attachment))
        found[attachment["filename"]] = path
    return found


async def test_three_takes_one_status_one_post_use_react_and_more_like(
    bot: DiscordBot, emu: DiscordEmulator, openai_server: OpenAIEmulator, tmp_path: Path
) -> None:
    asked = await emu.slash("video", ASK)
    job = await job_of(bot, asked)
    assert job.kind is JobKind.TAKES and job.state["takes"] == 3
    done = await finished(bot, job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(openai_server.creates) == 3

    edits = [str((c.json or {}).get("content")) for c in emu.calls if c.method == "PATCH" and asked.token in c.path]
    assert any(SET_LINE.search(e) for e in edits), edits
    post = await emu.wait_for(lambda: result_post(emu, job.id))
    files = files_of(emu, post, tmp_path)
    assert list(files) == [f"{job.id}.png", *(f"{job.id}-take{k}.mp4" for k in (1, 2, 3))]
    for k, seed in enumerate(done.state["seeds"], 1):
        assert_video(files[f"{job.id}-take{k}.mp4"], width=128, height=72, seconds=4)
        assert f"Take {k} · seed {seed}" in post["content"]
    assert Image.open(files[f"{job.id}.png"]).format == "PNG"
    # Takes have no messages of their own: one status message and one result post for the set.
    takes = done.state["take_jobs"]
    assert not any(t in m["content"] for m in emu.messages.values() for t in takes)
    assert buttons_of(post) == [
        *(f"vb:use:{job.id}:{k}" for k in (1, 2, 3)), *(f"vb:more:{job.id}:{k}" for k in (1, 2, 3)), f"vb:reroll:{job.id}", f"vb:delete:{job.id}",
    ]  # fmt: skip

    # Use 2: the click's response is the take's status message; its result post has the usual buttons.
    used = await emu.click(post["id"], f"vb:use:{job.id}:2")
    take = await job_of(bot, used)
    assert take.id == takes[1] and take.state["take"] == 2
    take_post = await emu.wait_for(lambda: result_post(emu, take.id))
    assert buttons_of(take_post) == [f"vb:{a}:{take.id}" for a in ("reroll", "remix", "extend", "delete")]
    assert emu.attachment_bytes(take_post["attachments"][0]) == files[f"{job.id}-take2.mp4"].read_bytes()
    await emu.wait_for(lambda: "Done" in emu.messages[used.original_id or ""]["content"] or None)

    # 1️⃣ on the set's result: Use 1 (the take posted alone, nothing made).
    await emu.react(post["id"], "1️⃣")
    first_post = await emu.wait_for(lambda: result_post(emu, takes[0]))
    assert emu.attachment_bytes(first_post["attachments"][0]) == files[f"{job.id}-take1.mp4"].read_bytes()
    assert len(openai_server.creates) == 3

    # More like 1: three new takes from take 1's first frame (pixels as the provider received them).
    more_click = await emu.click(post["id"], f"vb:more:{job.id}:1")
    more = await finished(bot, (await job_of(bot, more_click)).id)
    assert more.status is JobStatus.COMPLETED and more.parent_id == job.id, more.error_message
    wanted, other = first_frame(files[f"{job.id}-take1.mp4"]), first_frame(files[f"{job.id}-take3.mp4"])
    for create in openai_server.creates[3:]:
        sent = Image.open(io.BytesIO(create.files["input_reference"]["data"]))
        assert diff(sent, wanted) < 8 and diff(sent, wanted) * 3 < diff(sent, other)
    assert len(openai_server.creates) == 6


async def test_a_failing_take_is_named_and_the_others_posted(bot: DiscordBot, emu: DiscordEmulator, openai_server: OpenAIEmulator, tmp_path: Path) -> None:
    openai_server.fail("create", 400, code="invalid_value", message="the emulator refuses this take")
    asked = await emu.slash("video", ASK)
    done = await finished(bot, (await job_of(bot, asked)).id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    post = await emu.wait_for(lambda: result_post(emu, done.id))
    files = files_of(emu, post, tmp_path)
    assert len([n for n in files if n.endswith(".mp4")]) == 2
    failed = next(r for r in done.state["take_results"] if r["status"] == "failed")
    assert f"Take {failed['take']} failed:" in post["content"] and "refuses this take" in post["content"]
    assert f"vb:use:{done.id}:{failed['take']}" not in buttons_of(post)


async def test_the_takes_share_the_upload_limit_and_one_that_cannot_fit_is_a_still(bot: DiscordBot, emu: DiscordEmulator, tmp_path: Path) -> None:
    """Three 640x360 takes (18-37 KB each) and the contact sheet (~50 KB) under a 120 KB limit:
    each take gets a third of what the sheet leaves, so the bigger ones are re-encoded to fit."""
    emu.attachment_size_limit = 120_000
    ask = {"prompt": "a red kite over green hills", "pipeline": "local", "seconds": 2, "size": "640x360", "takes": 3, "seed": 7}
    asked = await emu.slash("video", ask)
    done = await finished(bot, (await job_of(bot, asked)).id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    post = await emu.wait_for(lambda: result_post(emu, done.id))
    assert sum(a["size"] for a in post["attachments"]) <= 120_000, [a["size"] for a in post["attachments"]]
    sources = {r["take"]: Path(r["output_path"]).stat().st_size for r in done.state["take_results"]}
    assert max(sources.values()) > (120_000 - Path(done.output_path or "").stat().st_size) // 3, "the test needs a take over its share"
    assert "Re-encoded to fit" in post["content"]
    files = files_of(emu, post, tmp_path)
    for k in (1, 2, 3):
        video = files[f"{done.id}-take{k}.mp4"]
        assert_video(video, width=_width(video), height=_height(video), seconds=2)

    # Nothing playable fits beside the sheet (the same seed: the same sheet): a note says so.
    limit = Path(done.output_path or "").stat().st_size + 4096 + 600
    emu.attachment_size_limit = limit
    asked = await emu.slash("video", ask)
    done = await finished(bot, (await job_of(bot, asked)).id)
    post = await emu.wait_for(lambda: result_post(emu, done.id))
    assert sum(a["size"] for a in post["attachments"]) <= limit
    assert "could not be shrunk" in post["content"] and all(not a["filename"].endswith(".mp4") for a in post["attachments"])


def _width(path: Path) -> int:
    from providers.media import probe_video

    return probe_video(path).width


def _height(path: Path) -> int:
    from providers.media import probe_video

    return probe_video(path).height
