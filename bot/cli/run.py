"""`videobot run`: serve the configured chat platforms (the console when none is).

`--role` (or VIDEOBOT_ROLE) splits the bot over several processes on one database:

- `all` (default): one process does everything, as it always has: chat connections, a
  fair queue in memory, jobs it creates leased to itself at once (no claim round trip).
- `gateway`: the chat connections only. Commands are answered and jobs stored queued and
  unleased; progress made by workers elsewhere is rendered from their signals (bot/core/relay.py).
- `worker`: no chat connection. Claims queued jobs from the store (fair order, caps across all
  workers: bot/core/claims.py), runs them, posts results through the platforms' REST APIs with
  the bot tokens, and publishes every event it emits as a signal for the gateways.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import TYPE_CHECKING

from bot.adapters.base import ChatAdapter
from bot.app import App, open_app
from bot.cli.common import deliver_to_out, stop_on_signals
from bot.config import Settings
from bot.core.claims import Claimer
from bot.core.errors import ConfigError
from bot.core.grants import base_url, secret
from bot.core.heartbeat import Heartbeat
from bot.core.relay import Relay, SignalPublisher
from bot.core.retention import sweep_forever
from bot.heap import HeapKeeper
from bot.observability.wiring import start_ops

if TYPE_CHECKING:
    from bot.observability.server import OpsServer
    from bot.web.server import WebServer

log = logging.getLogger(__name__)

ROLES = ("all", "gateway", "worker")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the bot: Slack and/or Discord if configured, else a console chat")
    p.add_argument(
        "--role", choices=ROLES, default=None,
        help="all: one process does everything (default, or VIDEOBOT_ROLE); gateway: chat connections only; "
        "worker: runs queued jobs and posts results",
    )  # fmt: skip
    p.set_defaults(handler=run)


def configured_adapters(app: App, *, delivery_only: bool = False) -> list[ChatAdapter]:
    settings = app.settings
    adapters: list[ChatAdapter] = []
    if settings.slack.configured:
        from bot.adapters.slack.app import SlackAdapter

        adapters.append(SlackAdapter(app, delivery_only=delivery_only))
    if settings.discord.configured:
        from bot.adapters.discord_bot.client import DiscordAdapter

        adapters.append(DiscordAdapter(app, delivery_only=delivery_only))
    if not adapters and not delivery_only:
        from bot.adapters.console import ConsoleAdapter

        adapters.append(ConsoleAdapter(app))
    return adapters


async def start_web(app: App) -> WebServer:
    """The web gallery in this process (VIDEOBOT_WEB_PORT): its buttons' jobs run here at once
    (role all), or are stored for the workers (role gateway)."""
    from bot.web.server import WebServer

    core = app.settings.core
    server = WebServer(app, host=core.web_host, port=core.web_port or 0)
    await server.start()
    print(f"videobot: web gallery on http://{core.web_host}:{server.port}", flush=True)
    return server


async def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.getLogger().setLevel(settings.core.log_level.upper())
    role = (getattr(args, "role", None) or settings.core.role).lower()
    if role == "gateway" and not (settings.slack.configured or settings.discord.configured):
        raise ConfigError("A gateway serves Slack or Discord: set SLACK_BOT_TOKEN or DISCORD_TOKEN (the console chat is role all).")
    if base_url(settings.core) is not None:
        secret(settings.core)  # /gallery signs links with it: a weak key stops the start (one line), not a chat command
    app = await open_app(settings, metrics_role=role)
    if role == "gateway":
        return await _gateway(app)
    if role == "worker":
        return await _worker(app)
    return await _all(app)


async def _all(app: App) -> int:
    adapters = configured_adapters(app)
    for adapter in adapters:
        app.runner.deliverers[adapter.platform] = adapter.deliver
    app.runner.deliverers.setdefault("cli", deliver_to_out)
    stop = asyncio.Event()
    sweeper: asyncio.Task[None] | None = None
    stop_on_signals(stop)
    heartbeat = _heartbeat(app, "all", held=lambda: len(app.runner.held()))
    heap = HeapKeeper()
    web: WebServer | None = None
    ops: OpsServer | None = None
    try:
        ops = await start_ops(app, runs_jobs=True, adapters=adapters, worker_id=app.runner.owner)
        # Adapters first: a resumed job that ends at once (an interrupted create that cannot be
        # settled) must find its platform listening, or its status message would never show the end.
        for adapter in adapters:
            await adapter.start()
        if app.settings.core.web_port is not None:
            web = await start_web(app)
        resumed = await app.runner.start(resume=True)
        if resumed:
            print(f"videobot: resumed {resumed} unfinished job{'s' if resumed != 1 else ''}", flush=True)
        await heartbeat.start()
        heap.start()
        if app.settings.core.retention_days:
            sweeper = asyncio.create_task(sweep_forever(app.store, app.media, app.settings.core.retention_days))
        await _serve(adapters, stop)
    finally:
        if web is not None:
            await web.stop()
        if ops is not None:
            await ops.stop()
        await heap.stop()
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        for adapter in adapters:
            await adapter.stop()
        await heartbeat.stop()
        await app.close()
    return 0


class Gateway:
    """A gateway's parts: the chat adapters, the relay of workers' signals, its heartbeat."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.adapters = configured_adapters(app)
        app.service.runner = None  # jobs are stored queued and unleased: a worker claims them
        self.relay = Relay(app.store, app.bus, platforms={a.platform for a in self.adapters})
        self.heartbeat = _heartbeat(app, "gateway", held=lambda: 0)

    async def start(self) -> None:
        for adapter in self.adapters:
            await adapter.start()
        await self.relay.start()
        await self.heartbeat.start()

    async def stop(self) -> None:
        await self.relay.stop()
        for adapter in self.adapters:
            await adapter.stop()
        await self.heartbeat.stop()


class Worker:
    """A worker's parts: delivery-only adapters, the claim loop, the signal publisher, its heartbeat."""

    def __init__(self, app: App) -> None:
        core = app.settings.core
        self.app = app
        self.adapters = configured_adapters(app, delivery_only=True)
        for adapter in self.adapters:
            app.runner.deliverers[adapter.platform] = adapter.deliver
        app.runner.deliverers.setdefault("cli", deliver_to_out)
        app.runner.claiming = True
        if core.worker_slots is not None:
            app.runner.set_capacity(core.worker_slots)
        self.publisher = SignalPublisher(app.store, app.bus)
        self.claimer = Claimer(
            app.runner, app.store, max_running=core.max_concurrent_jobs, max_running_per_user=core.max_running_per_user,
            interval=core.claim_interval_seconds,
        )  # fmt: skip
        self.heartbeat = _heartbeat(app, "worker", held=lambda: len(app.runner.held()))
        self.resumed = 0

    async def start(self) -> None:
        for adapter in self.adapters:
            await adapter.start()
        self.publisher.start()  # before the runner: the events of resumed jobs are signalled too
        self.resumed = await self.app.runner.start(resume=True)
        self.claimer.start()
        await self.heartbeat.start()

    async def stop(self) -> None:
        await self.claimer.stop()
        # The runner first: its last events (a job ending as we stop) still become signals.
        await self.app.runner.stop()
        await self.publisher.stop()
        for adapter in self.adapters:
            await adapter.stop()
        await self.heartbeat.stop()


async def _gateway(app: App) -> int:
    """Chat connections; jobs are stored for the workers, their progress relayed back."""
    gateway = Gateway(app)
    heap = HeapKeeper()  # a burst of commands must not wait behind a full collection
    web: WebServer | None = None
    ops: OpsServer | None = None
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        ops = await start_ops(app, runs_jobs=False, adapters=gateway.adapters)
        await gateway.start()
        if app.settings.core.web_port is not None:
            web = await start_web(app)
        heap.start()
        platforms = ", ".join(a.platform for a in gateway.adapters)
        print(f"videobot: gateway ready (pid {os.getpid()}; {platforms})", flush=True)
        await _serve(gateway.adapters, stop)
    finally:
        if web is not None:
            await web.stop()
        if ops is not None:
            await ops.stop()
        await heap.stop()
        await gateway.stop()
        await app.close()
    return 0


async def _worker(app: App) -> int:
    """Jobs only: claimed from the store, results posted with the bot tokens, events signalled."""
    worker = Worker(app)
    heap = HeapKeeper()
    sweeper: asyncio.Task[None] | None = None
    ops: OpsServer | None = None
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        ops = await start_ops(app, runs_jobs=True, worker_id=app.runner.owner)
        await worker.start()
        heap.start()
        if app.settings.core.retention_days:
            sweeper = asyncio.create_task(sweep_forever(app.store, app.media, app.settings.core.retention_days))
        platforms = ", ".join(sorted(app.runner.platforms))
        print(f"videobot: worker ready (pid {os.getpid()}; delivers {platforms}; resumed {worker.resumed})", flush=True)
        await stop.wait()
        log.info("stopping: no new claims; in-flight writes finish, jobs resume on another worker")
    finally:
        if ops is not None:
            await ops.stop()
        await heap.stop()
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        await worker.stop()
        await app.close()
    return 0


def _heartbeat(app: App, role: str, *, held) -> Heartbeat:  # type: ignore[no-untyped-def]
    return Heartbeat(app.store, worker_id=app.runner.owner, role=role, held=held, interval=app.settings.core.heartbeat_seconds)


async def _serve(adapters: list[ChatAdapter], stop: asyncio.Event) -> None:
    """Until a signal, or until every adapter is done (the console at end of input)."""
    closed = asyncio.gather(*(a.wait_closed() for a in adapters))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, closed], return_when=asyncio.FIRST_COMPLETED)
    for waiter in (stopper, closed):
        waiter.cancel()
    await asyncio.gather(stopper, closed, return_exceptions=True)
    if stop.is_set():
        log.info("stopping: no new work; in-flight writes finish, jobs resume on the next start")
