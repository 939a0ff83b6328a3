"""What `videobot run` needs from a chat adapter."""
from __future__ import annotations

from typing import Any, Protocol

from bot.core.models import Job


class ChatAdapter(Protocol):
    #: The `Origin.platform` of the jobs it creates and delivers.
    platform: str

    async def start(self) -> None:
        """Connect and subscribe to progress events; return once serving."""

    async def wait_closed(self) -> None:
        """Return when the adapter has stopped serving (console: end of input)."""

    async def stop(self) -> None:
        """Disconnect; jobs keep their state for the next start."""

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the finished job's file; return job fields to store (result message ids)."""

    async def announce(self, job: Job) -> None:
        """Show a job started outside chat (the web gallery) at once: post its status message where
        its origin says. Chat flows do this themselves for the jobs they start."""
