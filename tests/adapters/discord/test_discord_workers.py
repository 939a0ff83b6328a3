"""Discord past one process: shards split across gateways, results posted by a worker.

In-process (two apps on one database, like two processes): the Discord emulator speaks the
gateway and REST protocols to the real discord.py client. It routes the guild's events only
to the shard Discord would, (guild_id >> 22) % shard count, and records every IDENTIFY.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from bot.app import open_app
from bot.cli.run import Gateway, Worker
from bot.config import load_settings
from bot.core.models import JobStatus
from providers.polling import PollPolicy
from tests.fakes.discord_api import DiscordEmulator, discord_env, emu, result_post  # noqa: F401 (emu is a fixture)

pytestmark = pytest.mark.timeout(60)
FAST = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_two_gateways_each_run_their_shard_and_only_the_guilds_shard_answers(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISCORD_SHARD_COUNT=2 over two gateways (DISCORD_SHARD_IDS 0 and 1): both identify as
    their shard, and a command in the guild is handled once, by the gateway of its shard."""
    discord_env(monkeypatch, emu, DISCORD_SHARD_COUNT="2")
    gateways = []
    try:
        for shard in ("0", "1"):
            monkeypatch.setenv("DISCORD_SHARD_IDS", shard)
            app = await open_app(load_settings())
            gateway = Gateway(app)
            await gateway.start()
            gateways.append(gateway)
        assert sorted(emu.identifies) == [[0, 2], [1, 2]]
        mine = (int(emu.guild_id) >> 22) % 2
        interaction = await emu.slash("video", {"prompt": "a lighthouse at dusk", "seconds": 1, "size": "320x180"})
        await asyncio.wait_for(interaction.answered.wait(), 5)
        jobs = await until(lambda: gateways[0].app.store.list(limit=10), 5, "the job to be stored")
        assert len(jobs) == 1 and jobs[0].status is JobStatus.QUEUED and jobs[0].lease_owner is None
        assert interaction.callback is not None
        # The other shard's gateway never saw the guild.
        other = gateways[1 - mine].adapters[0].client
        assert other.get_guild(int(emu.guild_id)) is None
        assert gateways[mine].adapters[0].client.get_guild(int(emu.guild_id)) is not None
    finally:
        for gateway in gateways:
            await gateway.stop()
            await gateway.app.close()


async def test_a_worker_posts_the_result_with_the_bot_token_and_the_gateway_shows_progress(
    settings: Any, emu: DiscordEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stores the job queued; a worker with no gateway connection claims it, makes
    it and posts the file over REST (nonce, reply to the status message); the gateway's status
    message follows the worker's signals to Done."""
    discord_env(monkeypatch, emu, VIDEOBOT_DEFAULT_PIPELINE="local")
    gateway_app = await open_app(load_settings())
    worker_app = await open_app(load_settings())
    worker_app.runner.poll_policy = FAST
    gateway, worker = Gateway(gateway_app), Worker(worker_app)
    try:
        await gateway.start()
        await worker.start()
        assert emu.sessions == 1, "the worker must not open a gateway connection"
        interaction = await emu.slash("video", {"prompt": "a red kite over green hills", "seconds": 1, "size": "320x180"})
        await asyncio.wait_for(interaction.answered.wait(), 5)

        async def finished() -> Any:
            jobs = await gateway_app.store.list(limit=5)
            return jobs[0] if jobs and jobs[0].status is JobStatus.COMPLETED and jobs[0].origin.result_message_id else None

        job = await until(finished, 30, "the worker to finish and deliver the job")
        events = await worker_app.store.events(job.id)
        assert {e["runner"] for e in events if e["runner"]} == {worker_app.runner.owner}
        post = result_post(emu, job.id)
        assert post is not None and post["id"] == job.origin.result_message_id and post["attachments"]
        status_id = job.origin.status_message_id or interaction.original_id
        await until(lambda: "Done" in str(emu.messages.get(status_id or "", {}).get("content", "")), 10, "the status message to show Done")
        assert worker.publisher.published > 0 and gateway.relay.relayed > 0
    finally:
        await worker.stop()
        await gateway.stop()
        await worker_app.close()
        await gateway_app.close()
