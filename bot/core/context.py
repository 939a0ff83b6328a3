"""What a job driver sees of the runner that hands it a job: one small typed interface.

The runner loop (queue, leases, claims, heartbeats) picks a driver by the job's kind from the
registry built in `bot/app.py` (`{JobKind.STORY: StoryDriver}`); the driver gets this context,
never the runner object, so a new kind of job is a driver plus an admission rule and nothing
in the runner names a kind.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from bot.core.models import EventKind, Job
from providers.polling import PollPolicy
from storage.contract import Store
from storage.media import MediaStore


class JobContext(Protocol):
    store: Store
    media: MediaStore
    #: This runner's lease holder id, and how long its leases last.
    owner: str
    lease_seconds: float
    #: Polling cadence, retries and the overall deadline of remote work.
    poll_policy: PollPolicy

    async def write(self, job: Job, *, detail: str | None = None, **fields: Any) -> Job:
        """A fenced write: only while this runner still holds the job's lease."""

    def emit(self, kind: EventKind, job: Job, *, progress: int | None = None, message: str | None = None) -> None:
        """An event on the bus (adapters render it, metrics count it)."""

    def release_slot(self, job_id: str) -> None:
        """A job that only waits on its children gives its running slot back to them."""

    def cancelling(self, job_id: str) -> bool:
        """Whether the job is being cancelled on purpose (not a shutdown)."""

    @property
    def adopts_orphans(self) -> bool | None:
        """True when the runner takes over jobs nobody drives, None while start-up adoption runs."""

    def lease_for_new(self) -> tuple[str, float]:
        """The lease a child job is created with (held by this runner)."""

    async def enqueue(self, job: Job) -> bool:
        """Hand a (child) job to this runner."""

    async def cancel(self, job_id: str) -> bool:
        """Stop a job this runner drives; False when it does not drive it."""

    def owns(self, job_id: str) -> bool:
        """Whether this runner drives the job now."""

    def wait(self, job_id: str) -> asyncio.Future[Job]:
        """A future that resolves when the job ends in this runner."""


class JobDriver(Protocol):
    async def drive(self, job: Job) -> Job:
        """From any unfinished state to DELIVERING (the runner delivers) or an error."""


#: Builds the driver of one job kind for one runner.
DriverFactory = Callable[[JobContext], JobDriver]
