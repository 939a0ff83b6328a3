"""The one engine for waiting on remote jobs and retrying safe calls.

Providers translate requests and responses; cadence, backoff, Retry-After and the
overall timeout live here once.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from providers import observe
from providers.base import RemoteJob, RemoteStatus, VideoProvider
from providers.errors import ProviderTimeout, RateLimited, RemoteCancelled, TransientError, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PollPolicy:
    interval: float = 2.0
    min_interval: float = 0.2
    max_interval: float = 30.0
    #: Overall limit for one remote job, from the first poll.
    timeout: float = 20 * 60
    #: Consecutive transient failures tolerated before giving up as unavailable.
    max_failures: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0


def backoff_delay(attempt: int, policy: PollPolicy, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when it is given."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, policy.backoff_max)
    ceiling = min(policy.backoff_max, policy.backoff_base * (2 ** max(attempt - 1, 0)))
    return random.uniform(ceiling / 2, ceiling)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    policy: PollPolicy = PollPolicy(),
    attempts: int | None = None,
    what: str = "call",
    provider: str | None = None,
) -> T:
    """Run a call that is safe to repeat (a read, a download), retrying transient errors.

    Never use this for a create: a retried create may bill twice. `provider` names who
    answers, for the request metrics (providers.observe); None: not counted.
    """
    limit = attempts if attempts is not None else policy.max_failures
    attempt = 0
    while True:
        try:
            result = await call()
        except TransientError as exc:
            attempt += 1
            limited = isinstance(exc, RateLimited)
            observe.request(provider, "rate_limited" if limited else ("error" if attempt >= limit else "retried"))
            if attempt >= limit and limited:
                # Still a refusal that made nothing: the caller may wait longer (a create's
                # deadline is the job's), which an Unavailable would turn into a failure.
                raise
            if attempt >= limit:
                raise Unavailable(
                    "The provider is not answering; try again later.",
                    detail=f"{what}: {attempt} transient failures, last: {exc.detail or exc}",
                ) from exc
            delay = backoff_delay(attempt, policy, getattr(exc, "retry_after", None))
            log.info("%s failed (%s), retry %d in %.1fs", what, exc.code, attempt, delay)
            if limited:
                observe.rate_limit_wait(provider)
            await asyncio.sleep(delay)
        except Exception:
            observe.request(provider, "error")
            raise
        else:
            observe.request(provider, "ok")
            return result


async def wait_for_completion(
    provider: VideoProvider,
    remote_id: str,
    *,
    on_update: Callable[[RemoteJob], Awaitable[None]] | None = None,
    policy: PollPolicy = PollPolicy(),
    started_at: float | None = None,
) -> RemoteJob:
    """Poll until the remote job is done; returns it completed or raises the taxonomy error.

    `started_at` (monotonic) lets a resumed job keep its original deadline budget.
    """
    start = started_at if started_at is not None else time.monotonic()
    failures = 0
    while True:
        if time.monotonic() - start > policy.timeout:
            try:
                await provider.cancel(remote_id)
            except Exception:  # the timeout is what the user must hear about
                log.warning("cancel after timeout failed for %s", remote_id, exc_info=True)
            minutes = policy.timeout / 60
            raise ProviderTimeout(
                f"The provider did not finish within {minutes:g} minutes; the job was stopped. Try again later.",
                provider=provider.name,
            )
        try:
            job = await provider.poll(remote_id)
        except TransientError as exc:
            failures += 1
            limited = isinstance(exc, RateLimited)
            observe.request(provider.name, "rate_limited" if limited else ("error" if failures >= policy.max_failures else "retried"))
            if failures >= policy.max_failures:
                raise Unavailable(
                    "The provider stopped answering while making your video; try again later.",
                    provider=provider.name,
                    detail=f"poll {remote_id}: {exc.detail or exc}",
                ) from exc
            retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
            if limited:
                observe.rate_limit_wait(provider.name)
            await asyncio.sleep(backoff_delay(failures, policy, retry_after))
            continue
        except Exception:
            observe.request(provider.name, "error")
            raise
        observe.request(provider.name, "ok")
        failures = 0
        if on_update is not None:
            await on_update(job)
        if job.status is RemoteStatus.COMPLETED:
            return job
        if job.status is RemoteStatus.FAILED:
            raise provider.error_for(job)
        if job.status is RemoteStatus.CANCELLED:
            raise RemoteCancelled("The provider cancelled this job.", provider=provider.name)
        delay = job.poll_after if job.poll_after is not None else policy.interval
        await asyncio.sleep(min(max(delay, policy.min_interval), policy.max_interval))
