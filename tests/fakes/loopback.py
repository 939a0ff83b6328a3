"""Serving an emulator on a free loopback port (every emulator in tests/fakes starts this way)."""
from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, **runner: Any) -> tuple[web.AppRunner, int]:
    """`app` served on 127.0.0.1 at a port the system picks: the runner (its `cleanup()` stops it) and the port."""
    started = web.AppRunner(app, **runner)
    await started.setup()
    site = web.TCPSite(started, "127.0.0.1", 0)
    await site.start()
    return started, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
