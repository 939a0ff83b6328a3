"""`videobot run`: serve the configured chat platforms (the console when none is)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from bot.adapters.base import ChatAdapter
from bot.app import App, open_app
from bot.cli.common import deliver_to_out
from bot.config import Settings
from bot.core.retention import sweep_forever
from bot.heap import HeapKeeper

if TYPE_CHECKING:
    from bot.web.server import WebServer

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run the bot: Slack and/or Discord if configured, else a console chat")
    p.set_defaults(handler=run)


def configured_adapters(app: App) -> list[ChatAdapter]:
    settings = app.settings
    adapters: list[ChatAdapter] = []
    if settings.slack.configured:
        from bot.adapters.slack.app import SlackAdapter

        adapters.append(SlackAdapter(app))
    if settings.discord.configured:
        from bot.adapters.discord_bot.client import DiscordAdapter

        adapters.append(DiscordAdapter(app))
    if not adapters:
        from bot.adapters.console import ConsoleAdapter

        adapters.append(ConsoleAdapter(app))
    return adapters


async def start_web(app: App) -> WebServer:
    """The web gallery in this process (VIDEOBOT_WEB_PORT): its buttons' jobs run here at once."""
    from bot.web.server import WebServer

    core = app.settings.core
    server = WebServer(app, host=core.web_host, port=core.web_port or 0)
    await server.start()
    print(f"videobot: web gallery on http://{core.web_host}:{server.port}", flush=True)
    return server


async def run(args: argparse.Namespace, settings: Settings) -> int:
    logging.getLogger().setLevel(settings.core.log_level.upper())
    app = await open_app(settings)
    adapters = configured_adapters(app)
    for adapter in adapters:
        app.runner.deliverers[adapter.platform] = adapter.deliver
    app.runner.deliverers.setdefault("cli", deliver_to_out)
    stop = asyncio.Event()
    sweeper: asyncio.Task[None] | None = None
    web: WebServer | None = None
    heap = HeapKeeper()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        # Adapters first: a resumed job that ends at once (an interrupted create that cannot be
        # settled) must find its platform listening, or its status message would never show the end.
        for adapter in adapters:
            await adapter.start()
        if app.settings.core.web_port is not None:
            web = await start_web(app)
        resumed = await app.runner.start(resume=True)
        if resumed:
            print(f"videobot: resumed {resumed} unfinished job{'s' if resumed != 1 else ''}", flush=True)
        heap.start()
        if app.settings.core.retention_days:
            sweeper = asyncio.create_task(sweep_forever(app.store, app.media, app.settings.core.retention_days))
        closed = asyncio.gather(*(a.wait_closed() for a in adapters))
        stopper = asyncio.create_task(stop.wait())
        # Runs until a signal, or until every adapter is done (the console at end of input).
        await asyncio.wait([stopper, closed], return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stopper, closed):
            waiter.cancel()
        await asyncio.gather(stopper, closed, return_exceptions=True)
        if stop.is_set():
            log.info("stopping: no new work; in-flight writes finish, jobs resume on the next start")
    finally:
        if web is not None:
            await web.stop()
        await heap.stop()
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        for adapter in adapters:
            await adapter.stop()
        await app.close()
    return 0
