"""Turning observability on in a `videobot run` or `videobot web` process (called from bot/cli)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.core.models import EventKind, ProgressEvent
from bot.core.runner import RATE_LIMIT_NOTE
from bot.observability.health import adapters_check, heartbeat_check
from bot.observability.server import Ops, OpsServer

if TYPE_CHECKING:
    from bot.app import App


def ops_for(app: App) -> Ops | None:
    if app.metrics is None:
        return None
    return Ops(app.metrics, app.store, app.readiness, role=app.metrics.role)


async def start_ops(
    app: App, *, runs_jobs: bool, adapters: Sequence[Any] = (), worker_id: str | None = None
) -> OpsServer | None:
    """Readiness checks for this role, the bus subscription, and the metrics port if one is set.

    Returns the server on VIDEOBOT_METRICS_PORT (None when only the web port serves them)."""
    ops = ops_for(app)
    if ops is None:
        return None
    chat = [a for a in adapters if a.platform not in ("console", "cli")]
    if chat:
        app.readiness.add("chat", adapters_check(chat))
    if runs_jobs:
        if worker_id is not None:
            app.readiness.add("heartbeat", heartbeat_check(app.store, worker_id, app.settings.core.heartbeat_seconds))
        watch_bus(app)
    core = app.settings.core
    if core.metrics_port is None:
        return None
    server = OpsServer(ops, host=core.metrics_host, port=core.metrics_port)
    await server.start()
    print(f"videobot: metrics on http://{core.metrics_host}:{server.port}/metrics", flush=True)
    return server


def watch_bus(app: App) -> None:
    """Counts from the runner's own events (a process that runs jobs: no relayed events here)."""
    metrics = app.metrics
    assert metrics is not None

    async def on_event(event: ProgressEvent) -> None:
        if event.job.provider:
            metrics.rate_limit_wait(event.job.provider)

    app.bus.subscribe(on_event, lambda e: e.kind is EventKind.PROGRESS and e.message == RATE_LIMIT_NOTE)
