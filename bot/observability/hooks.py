"""Points only an adapter can measure (a command's acknowledgement), reported to the metrics.

Adapters call these; with metrics off (no VIDEOBOT_METRICS_PORT, no web port) they do nothing.
"""
from __future__ import annotations

import time
from typing import Protocol


class AckSink(Protocol):
    """What the hooks report to (bot.observability.metrics.Metrics implements it)."""

    def ack(self, platform: str, seconds: float) -> None: ...


_metrics: AckSink | None = None


def set_metrics(metrics: AckSink | None) -> None:
    global _metrics
    _metrics = metrics


def acked(platform: str, received: float) -> None:
    """A command received at `received` (time.monotonic()) was acknowledged just now."""
    if _metrics is not None:
        _metrics.ack(platform, time.monotonic() - received)


def acked_since(platform: str, received_at: float) -> None:
    """As `acked`, from a wall-clock time the platform stamped (a Discord interaction's snowflake)."""
    if _metrics is not None:
        _metrics.ack(platform, time.time() - received_at)
