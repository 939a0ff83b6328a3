"""/healthz and /readyz of real `videobot run` processes: ready, a stale heartbeat, the database down."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.observability.support import OpsWorld, wait_until
from tests.pg import PgCluster, find_bindir, unavailable


async def test_worker_ready_then_not_ready_when_its_heartbeat_goes_stale(tmp_path: Path) -> None:
    async with OpsWorld(tmp_path) as world:
        # One beat at start, the next only after 300 s: the row's age is ours to set.
        bot = await world.bot(role="worker", VIDEOBOT_HEARTBEAT_SECONDS="300")
        health = await bot.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["role"] == "worker"
        ready = await bot.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["failing"] == [] and set(ready.json()["checks"]) == {"database", "heartbeat"}
        with sqlite3.connect(tmp_path / "data" / "videobot.sqlite3") as conn:
            changed = conn.execute("UPDATE workers SET last_seen = last_seen - 3600").rowcount
        assert changed == 1
        stale = await bot.get("/readyz")
        assert stale.status_code == 503
        body = stale.json()
        assert body["failing"] == ["heartbeat"] and body["checks"]["database"]["ok"] is True
        assert "last heartbeat" in body["checks"]["heartbeat"]["detail"]
        assert (await bot.get("/healthz")).status_code == 200  # alive, just not ready


async def test_readyz_names_the_database_when_postgresql_stops(tmp_path: Path) -> None:
    bindir = find_bindir()
    if bindir is None:
        unavailable("no PostgreSQL server binaries")
    cluster = PgCluster(bindir)  # its own cluster: this test stops it
    cluster.start()
    try:
        url = await cluster.fresh_database()
        async with OpsWorld(tmp_path) as world:
            bot = await world.bot(role="worker", VIDEOBOT_DATABASE_URL=url)
            assert (await bot.get("/readyz")).status_code == 200
            subprocess.run([*cluster._as, str(cluster.bindir / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "-w", "stop"],
                           check=True, capture_output=True)  # fmt: skip
            down = await wait_until(lambda: _not_ready(bot), what="/readyz to fail")
            body = down.json()
            assert "database" in body["failing"] and body["checks"]["database"]["ok"] is False
            assert body["status"] == "not ready"
            # The check names what failed, never where it points (socket path, port, user).
            assert str(cluster.sockets) not in down.text and url not in down.text
            assert (await bot.get("/healthz")).status_code == 200
            scrape = await bot.scrape()
            assert scrape.value("videobot_store_up") == 0
    finally:
        subprocess.run(["rm", "-rf", str(cluster.root)], check=False)


async def _not_ready(bot):  # type: ignore[no-untyped-def]
    response = await bot.get("/readyz")
    return response if response.status_code == 503 else None


def test_readyz_body_is_small_json() -> None:
    # The body shape operators and probes rely on, from the code that builds it.
    import asyncio

    from bot.observability.health import Readiness

    async def ok() -> tuple[bool, str]:
        return True, "answers"

    async def broken() -> tuple[bool, str]:
        raise ConnectionRefusedError("postgresql://user:secret@db/videobot refused")

    readiness = Readiness({"database": broken, "chat": ok})
    ready, body = asyncio.run(readiness.run())
    assert not ready and body["failing"] == ["database"]
    assert body["checks"]["database"] == {"ok": False, "detail": "ConnectionRefusedError"}
    assert "secret" not in json.dumps(body)


async def test_gateway_not_ready_when_its_discord_connection_drops(tmp_path: Path) -> None:
    from tests.fakes.discord_api import DiscordEmulator

    emu = DiscordEmulator()
    await emu.start()
    try:
        async with OpsWorld(tmp_path) as world:
            bot = await world.bot(
                role="gateway", DISCORD_TOKEN="test-bot-token", DISCORD_API_BASE_URL=emu.api_base,
                DISCORD_GATEWAY_URL=emu.gateway_url, DISCORD_GUILD_IDS=emu.guild_id, DISCORD_GUILD_READY_TIMEOUT="0.2",
            )  # fmt: skip
            ready = await wait_until(lambda: _status(bot, 200), what="/readyz 200")
            assert set(ready.json()["checks"]) == {"database", "chat"}  # a gateway runs no jobs: no heartbeat check
            assert ready.json()["checks"]["chat"]["detail"] == "connected: slack, discord"
            await emu.stop()  # Discord's gateway goes away
            down = await wait_until(lambda: _status(bot, 503), what="/readyz 503")
            assert down.json()["failing"] == ["chat"]
            assert down.json()["checks"]["chat"]["detail"] == "not connected: discord"
    finally:
        await emu.stop()


async def _status(bot, code: int):  # type: ignore[no-untyped-def]
    response = await bot.get("/readyz")
    return response if response.status_code == code else None
