"""Delivery: the runner's last step, the result posted exactly once.

Each attempt is recorded before the adapter is called, so after a crash the adapter knows to look
for an earlier post before posting again. Transient failures are retried with backoff while the
job stays `delivering`; a permanent one (or six hours of transient ones) ends the attempt, and the
runner completes the job undelivered, its file kept for `videobot redeliver`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bot.core.context import JobContext
from bot.core.errors import DeliveryFailed
from bot.core.models import EventKind, Job, in_chat
from bot.core.take_set import suppressed
from providers.polling import PollPolicy, backoff_delay

log = logging.getLogger(__name__)

#: Posts the finished job where it belongs; returns job fields to store (result message ids...).
Deliverer = Callable[[Job], Awaitable[dict[str, Any] | None]]

#: Delivery retries back off up to this many seconds between attempts...
DELIVERY_BACKOFF_MAX = 300.0
#: ...and give up (completed, undelivered; `videobot redeliver` later) after this long.
DELIVERY_GIVE_UP_SECONDS = 6 * 3600.0
_TRANSIENT = (aiohttp.ClientError, OSError, TimeoutError, ConnectionError)


def posted_alone(job: Job) -> bool:
    """Whether a finished job is posted on its own: a story's scene is posted as part of its story, a
    take as part of its set (unless Use N posts it), and a job shown on the web alone nowhere."""
    return not job.state.get("story_scene") and not suppressed(job) and in_chat(job)


async def post_once(ctx: JobContext, job: Job, deliverer: Deliverer, policy: PollPolicy) -> tuple[Job, DeliveryFailed | None]:
    """The job once posted (with the fields the adapter returned stored), or the failure that ends it."""
    while True:
        previous = job.state.get("delivery", {})
        first_at = previous.get("first_at") or time.time()
        attempt = int(previous.get("attempt", 0)) + 1
        job = await ctx.write(job, state={**job.state, "delivery": {"attempt": attempt, "first_at": first_at}})
        try:
            updates = await deliverer(job) or {}
        except Exception as exc:
            failure = as_delivery_failure(exc)
            if not failure.transient or time.time() - first_at > DELIVERY_GIVE_UP_SECONDS:
                return job, failure
            delay = backoff_delay(attempt, policy, failure.retry_after)
            log.warning("job %s: delivery attempt %d failed (%s); retrying in %.1fs", job.id, attempt, failure.detail or failure, delay)
            ctx.emit(EventKind.DELIVERING, job, progress=100, message="posting failed; retrying")
            await asyncio.sleep(delay)
            job = await ctx.store.get(job.id) or job
            continue
        if updates:
            job = await ctx.write(job, **updates)
        return job, None


def as_delivery_failure(exc: Exception) -> DeliveryFailed:
    if isinstance(exc, DeliveryFailed):
        return exc
    if isinstance(exc, _TRANSIENT):
        return DeliveryFailed("Posting the result failed; retrying.", transient=True, detail=repr(exc))
    log.error("delivery raised an unexpected error", exc_info=exc)
    return DeliveryFailed(
        "The video is ready but could not be posted. An admin can post it again with `videobot redeliver`.",
        transient=False, detail=repr(exc),
    )  # fmt: skip
