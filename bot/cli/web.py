"""`videobot web [--host H] [--port P] [--link]`: the web gallery on its own.
`videobot web --rotate-secret`: a new signing key; every session and personal link ends.

It stores what its buttons ask (re-roll, remix, extend) as queued jobs; a running `videobot run`
takes them up within seconds and posts their results where the originals were asked. With
VIDEOBOT_WEB_PORT set, `videobot run` serves the same gallery itself.
"""
from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import cli_app, stop_on_signals
from bot.config import Settings
from bot.core import signing_key
from bot.core.grants import link_grant, secret, sign
from bot.core.models import Actor, Origin
from bot.observability.wiring import start_ops

OPERATOR = Origin(platform="cli", user_id="operator", user_name="operator")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("web", help="serve the web gallery (videos, lineage, usage, diagnostics)")
    p.add_argument("--host", help="address to listen on (VIDEOBOT_WEB_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (VIDEOBOT_WEB_PORT, default 8080)")
    p.add_argument("--link", action="store_true", help="print an operator link (every workspace, admin pages) and serve")
    p.add_argument("--link-only", action="store_true", help="print the operator link and exit (the gallery runs elsewhere)")
    p.add_argument(
        "--rotate-secret", action="store_true",
        help="replace the signing key in the data dir and exit: every gallery session and personal link stops working",
    )  # fmt: skip
    p.set_defaults(handler=web_command)


def operator_link(settings: Settings, base: str) -> str:
    grant = link_grant(OPERATOR, Actor.of(OPERATOR, is_admin=True), settings.core, operator=True)
    return f"{base}/g/{sign(grant, secret(settings.core))}"


async def web_command(args: argparse.Namespace, settings: Settings) -> int:
    from bot.web.server import WebServer

    core = settings.core
    host = args.host or core.web_host
    port = args.port if args.port is not None else (core.web_port or 8080)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = core.public_url or f"http://{shown}:{port}"
    if args.rotate_secret:
        path = signing_key.rotate(core)
        print(f"videobot: new signing key in {path}: every gallery session and personal link made before now is refused (running galleries too); ask /gallery for a new link.")
        return 0
    if args.link_only:
        print(operator_link(settings, base))
        return 0
    async with cli_app(settings, run_jobs=False, metrics_role="web") as app:
        server = WebServer(app, host=host, port=port)
        await server.start()
        ops = await start_ops(app, runs_jobs=False)
        base = core.public_url or f"http://{shown}:{server.port}"
        print(f"videobot: web gallery on http://{host}:{server.port} (Ctrl-C stops it)", flush=True)
        if args.link:
            minutes = core.web_link_minutes
            print(f"operator link (every workspace; opens for {minutes:g} minutes):\n{operator_link(settings, base)}", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        try:
            await stop.wait()
        finally:
            if ops is not None:
                await ops.stop()
            await server.stop()
    return 0
