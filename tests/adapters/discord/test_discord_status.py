"""Status messages on Discord: paced per channel within the budget with every final state sent,
a 429 slowing the budget down, a failure shown short in public and in full to its owner
privately, the ETA once there are enough samples, and no pings from user text.
Real discord.py against the loopback Discord."""
from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import load_settings
from bot.core.models import GenerateParams, Job, JobKind, JobStatus, Origin, ProgressEvent
from providers.polling import PollPolicy
from tests.fakes.discord_api import (  # noqa: F401 (emu is a fixture)
    as_read,
    DiscordEmulator,
    buttons_of,
    channel_posts,
    discord_env,
    emu,
    ephemerals,
    job_of,
    result_post,
    start_bot,
)
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline

pytestmark = pytest.mark.timeout(60)
#: The interaction token counts as expired at once: every edit goes through the bot token.
BOT_TOKEN_ONLY = {"DISCORD_TOKEN_MARGIN_SECONDS": "900"}
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)


def with_scripted(server: ScriptedServer) -> Callable[[App], None]:
    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = FAST

    return register


def status_edits(emu: DiscordEmulator, message_ids: set[str]) -> list[Any]:
    """Bot-token edits of these messages that Discord accepted, in order of arrival."""
    return [
        c for c in emu.calls_to("PATCH", rf"^/channels/{emu.channel_id}/messages/\d+$")
        if c.status == 200 and c.path.rsplit("/", 1)[1] in message_ids
    ]  # fmt: skip


async def test_eight_jobs_in_one_channel_stay_within_the_channels_budget_and_every_final_arrives(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 edits per 0.5 s for the whole channel (Discord's 5 per 5 s, ten times quicker).
    discord_env(
        monkeypatch, emu, **BOT_TOKEN_ONLY, DISCORD_STATUS_EDIT_WINDOW_SECONDS="0.5",
        VIDEOBOT_MAX_CONCURRENT_JOBS="8", VIDEOBOT_MAX_RUNNING_PER_USER="8",
    )  # fmt: skip
    server = ScriptedServer(polls_to_finish=40)  # ~1 s of progress ticks each
    bot = await start_bot(register=with_scripted(server))
    states: list[ProgressEvent] = []

    async def seen(event: ProgressEvent) -> None:
        states.append(event)

    bot.app.bus.subscribe(seen)
    try:
        interactions = await asyncio.gather(
            *(emu.slash("video", {"prompt": f"kite number {i}", "pipeline": "scripted"}, user_id=str(1001 + i)) for i in range(8))
        )
        jobs = [await job_of(bot, i) for i in interactions]
        done = await asyncio.gather(*(asyncio.wait_for(bot.app.runner.wait(j.id), 30) for j in jobs))
        assert all(j.status is JobStatus.COMPLETED for j in done)
        statuses = {j.origin.status_message_id or "" for j in done}
        await emu.wait_for(lambda: all("✅ Done" in emu.messages[m]["content"] for m in statuses), timeout=20)
        await bot.adapter.surface.flush()
        edits = status_edits(emu, statuses)
        times = [c.at for c in edits]
        for t in times:
            in_window = [u for u in times if t <= u < t + 0.5]
            assert len(in_window) <= 6, f"{len(in_window)} edits in 0.5 s against a budget of 5"
        # Every job's last edit is its final state; progress in between was coalesced.
        last = {c.path.rsplit("/", 1)[1]: c.json["content"] for c in edits}
        assert set(last) == statuses and all("✅ Done" in text for text in last.values())
        assert len(edits) < len(states) / 2, f"coalesced: {len(edits)} edits for {len(states)} states"
        assert all(result_post(emu, j.id) is not None for j in done)
    finally:
        await bot.close()


async def test_a_429_discord_py_gives_up_on_slows_the_budget_down(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_env(monkeypatch, emu, **BOT_TOKEN_ONLY, DISCORD_STATUS_EDIT_WINDOW_SECONDS="0.25")
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a slow sunrise", "pipeline": "scripted"})
        job = await job_of(bot, interaction)
        status_id = interaction.original_id or ""
        await emu.wait_for(lambda: status_edits(emu, {status_id}))
        # Five 429s in a row: discord.py's own tries are used up, the edit fails as a 429.
        emu.fail_next("PATCH", rf"/messages/{status_id}$", count=5, retry_after=0.01)
        server.release.set()
        await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        await emu.wait_for(lambda: "✅ Done" in emu.messages[status_id]["content"])
        calls = emu.calls_to("PATCH", rf"/messages/{status_id}$")
        limited = [i for i, c in enumerate(calls) if c.status == 429]
        assert len(limited) == 5
        after = calls[limited[-1] + 1]
        assert after.status == 200 and after.at - calls[limited[-1]].at >= 0.09, "the budget slowed down (0.05 s → 0.1 s)"
        budget = bot.adapter.surface.pool.find(("channel", int(emu.channel_id)))
        assert budget is not None and budget.rate < budget.max_rate
    finally:
        await bot.close()


@pytest.mark.parametrize("token", ["alive", "expired"])
async def test_a_failure_after_start_is_short_in_public_and_full_in_private(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    discord_env(monkeypatch, emu, **(BOT_TOKEN_ONLY if token == "expired" else {}))
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "pipeline": "scripted"})
        job = await job_of(bot, interaction)
        status_id = interaction.original_id or ""
        await emu.wait_for(lambda: "▱" in emu.messages[status_id]["content"])
        server.fail_job = ("output_moderation", "The output was flagged by the safety system")
        failed = await asyncio.wait_for(bot.app.runner.wait(job.id), 20)
        assert failed.status is JobStatus.FAILED and failed.error_message
        # Public: the view's one line, and a Re-roll button.
        await emu.wait_for(lambda: "❌" in emu.messages[status_id]["content"])
        status = emu.messages[status_id]
        assert status["content"].splitlines()[-1].startswith("❌ ")
        assert buttons_of(status) == [f"vbs:reroll:{job.id}"]
        # Private: the full explanation, only for the owner.
        if token == "alive":
            (note,) = await emu.wait_for(lambda: ephemerals(emu, interaction.token))
        else:
            (note,) = await emu.wait_for(lambda: emu.dm_channels.get("1001") and channel_posts(emu, emu.dm_channels["1001"]))
            assert not ephemerals(emu, interaction.token)
        assert failed.error_message in as_read(note["content"]) and f"job {job.id}" in note["content"]
        assert "flagged by the safety system" in note["content"]

        server.fail_job = None
        server.release.set()
        again = await emu.click(status_id, f"vbs:reroll:{job.id}")
        child = await job_of(bot, again)
        assert child.parent_id == job.id and (await asyncio.wait_for(bot.app.runner.wait(child.id), 20)).status is JobStatus.COMPLETED
    finally:
        await bot.close()


async def seed_runs(count: int, *, seconds: float) -> None:
    """Finished jobs of the scripted pipeline that each ran `seconds` (what the ETA learns from)."""
    app = await open_app(load_settings())
    try:
        now = time.time()
        for i in range(count):
            await app.store.create(Job(
                id=f"seed{i}aaa", kind=JobKind.GENERATE, origin=Origin(platform="cli"), prompt="earlier",
                params=GenerateParams(seconds=1, size="128x72", seed=i), pipeline="scripted", status=JobStatus.COMPLETED,
                progress=100, created_at=now - 200, started_at=now - 100 - seconds, finished_at=now - 100,
            ))  # fmt: skip
    finally:
        await app.close()


async def test_the_eta_shows_once_there_are_enough_samples(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu)
    await seed_runs(2, seconds=40)  # two samples: not enough for an ETA
    server = ScriptedServer()
    server.release.clear()
    bot = await start_bot(register=with_scripted(server))
    try:
        first = await emu.slash("video", {"prompt": "a kite", "pipeline": "scripted"})
        job = await job_of(bot, first)
        await emu.wait_for(lambda: "▱" in emu.messages[first.original_id or ""]["content"])
        assert "ETA" not in emu.messages[first.original_id or ""]["content"]
        server.release.set()
        await asyncio.wait_for(bot.app.runner.wait(job.id), 20)  # the third sample (a quick one)

        server.release.clear()
        second = await emu.slash("video", {"prompt": "another kite", "pipeline": "scripted"})
        await job_of(bot, second)
        # The median of 40 s, 40 s and the quick one: about 40 s to go.
        await emu.wait_for(lambda: "ETA 0:" in emu.messages[second.original_id or ""]["content"])
        line = emu.messages[second.original_id or ""]["content"].splitlines()[-1]
        assert "ETA 0:3" in line or "ETA 0:4" in line, line
        server.release.set()
    finally:
        await bot.close()


async def test_user_text_never_pings(settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    discord_env(monkeypatch, emu)
    bot = await start_bot(register=with_scripted(ScriptedServer()))
    try:
        prompt = "@everyone look <@&777> and <@2002> a kite"
        interaction = await emu.slash("video", {"prompt": prompt, "pipeline": "scripted"})
        job = await asyncio.wait_for(bot.app.runner.wait((await job_of(bot, interaction)).id), 20)
        await emu.wait_for(lambda: "✅ Done" in emu.messages[interaction.original_id or ""]["content"])
        await bot.adapter.surface.flush()
        carrying = [c for c in emu.calls if isinstance(c.json, dict) and "look" in str(c.json.get("content", ""))]
        assert len(carrying) >= 3  # status edits and the result post
        for call in carrying:
            mentions = call.json.get("allowed_mentions")
            assert mentions is not None and mentions["parse"] == [], call.path
            # The result post names its requester, and only them.
            assert [str(u) for u in mentions.get("users", [])] in ([], [job.origin.user_id]), call.path
            assert not mentions.get("roles") and not mentions.get("replied_user")
    finally:
        await bot.close()


def test_listener_modules_do_not_import_the_adapter_back() -> None:
    """No import cycles inside the adapter package: the adapter registers its listeners."""
    package = Path(__file__).resolve().parents[3] / "bot" / "adapters" / "discord_bot"
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        runtime: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []  # type-only imports do not run
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("bot.adapters.discord_bot"):
                    names = [node.module.rsplit(".", 1)[1]] if node.module != "bot.adapters.discord_bot" else [a.name for a in node.names]
                    runtime.update(names)
        graph[path.stem] = runtime - {path.stem}
    for listener in ("commands", "buttons", "reactions", "flows", "status", "delivery", "render", "marks", "errors"):
        assert "client" not in graph[listener], f"{listener} imports the adapter module"

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, "import cycle: " + " → ".join((*trail, node))
        for nxt in graph.get(node, ()):
            visit(nxt, (*trail, node))

    for module in graph:
        visit(module, ())
