"""/metrics, /healthz and /readyz over HTTP: on VIDEOBOT_METRICS_HOST:VIDEOBOT_METRICS_PORT, and
on the web gallery's port when the gallery runs in the process (`add_routes`)."""
from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.observability.health import Readiness
from bot.observability.metrics import Metrics

log = logging.getLogger(__name__)

OPS = web.AppKey("videobot_ops", Any)
PATHS = ("/metrics", "/healthz", "/readyz")


class Ops:
    """What the three endpoints read: the metrics, the store, the readiness checks."""

    def __init__(self, metrics: Metrics, store: Any, readiness: Readiness, *, role: str) -> None:
        self.metrics = metrics
        self.store = store
        self.readiness = readiness
        self.role = role
        self.started = time.time()


async def metrics_page(request: web.Request) -> web.Response:
    ops: Ops = request.app[OPS]
    body = await ops.metrics.exposition(ops.store)
    # prometheus-client's content type carries its own charset parameter.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    ops: Ops = request.app[OPS]
    # Answering at all proves the event loop turns; the checks that need the world are /readyz's.
    return web.json_response({"status": "ok", "role": ops.role, "uptime_seconds": round(time.time() - ops.started, 1)})


async def readyz(request: web.Request) -> web.Response:
    ops: Ops = request.app[OPS]
    ready, body = await ops.readiness.run()
    return web.json_response(body, status=200 if ready else 503)


def add_routes(app: web.Application, ops: Ops) -> None:
    app[OPS] = ops
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


class OpsServer:
    """The three endpoints on their own port (VIDEOBOT_METRICS_PORT; 0 picks a free one)."""

    def __init__(self, ops: Ops, *, host: str, port: int) -> None:
        self.ops = ops
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        add_routes(app, self.ops)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("metrics, /healthz and /readyz on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
