"""Core errors and the one place where every error becomes text a chat user reads.

Adapters only choose where to show it (ephemeral, thread, status message).
"""
from __future__ import annotations

import logging

from providers.errors import (
    ConfigError,
    ContentExpired,
    ContentPolicyRejected,
    GenerationFailed,
    InvalidRequest,
    ModelUnavailable,
    NotConfigured,
    OutputInvalid,
    ProviderTimeout,
    RateLimited,
    RemoteCancelled,
    TransientError,
    Unavailable,
    VideobotError,
)

#: The taxonomy (its root is the leaf providers.errors) and the core's own errors: every layer
#: above providers takes them from here.
__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ContentExpired",
    "ContentPolicyRejected",
    "DeliveryFailed",
    "Flagged",
    "GenerationFailed",
    "InvalidRequest",
    "JobNotFound",
    "JobStateError",
    "LimitReached",
    "MediaMissing",
    "ModelUnavailable",
    "ModerationUnavailable",
    "NeedsConfirmation",
    "NotAllowed",
    "NotConfigured",
    "OutputInvalid",
    "ProviderTimeout",
    "RateLimited",
    "RemoteCancelled",
    "TransientError",
    "Unavailable",
    "VideobotError",
    "error_code",
    "user_message",
]

log = logging.getLogger(__name__)


class JobNotFound(VideobotError):
    code = "not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"No job '{job_id}'. Use /jobs to see your jobs and their ids.")
        self.job_id = job_id


class NotAllowed(VideobotError):
    code = "not_allowed"


class LimitReached(VideobotError):
    """Per-user queue or global queue is full."""

    code = "limit_reached"


class BudgetExceeded(VideobotError):
    code = "budget_exceeded"


class JobStateError(VideobotError):
    """The action does not fit the job's state (remix of a failed job, cancel of a finished one...)."""

    code = "bad_state"


class DeliveryFailed(VideobotError):
    """Posting a finished job's result failed.

    Adapters raise it from `deliver`. `transient` (5xx, 429, a dropped connection, the
    platform not reachable yet): the runner retries with backoff while the job stays
    `delivering`. Otherwise (channel gone, missing permission, file refused) the job ends
    completed but undelivered: the file stays on disk and `videobot redeliver` posts it again.
    `message` is written for the job's owner.
    """

    code = "undelivered"

    def __init__(
        self, message: str = "", *, transient: bool, retry_after: float | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message, detail=detail)
        self.transient = transient
        self.retryable = transient
        self.retry_after = retry_after


class NeedsConfirmation(VideobotError):
    """A request above the confirm threshold: nothing is queued or reserved until its owner confirms."""

    code = "needs_confirmation"

    def __init__(self, token: str, estimate: float, title: str, expires_in: float) -> None:
        minutes = max(1, round(expires_in / 60))
        super().__init__(
            f"{title} costs about ${estimate:.2f}. Confirm to start it: `confirm {token}` "
            f"(the offer lasts {minutes} minutes), or `decline {token}`."
        )
        self.token = token
        self.estimate = estimate


class Flagged(VideobotError):
    """The prompt or image was flagged before anything was spent."""

    code = "moderated"

    def __init__(self, categories: list[str], source: str) -> None:
        names = ", ".join(categories) or "unsafe content"
        super().__init__(
            f"This request was flagged ({names}). Nothing was made or spent; rephrase the prompt or use another image.",
            detail=f"{source}: {names}",
        )
        self.categories = categories


class ModerationUnavailable(VideobotError):
    code = "moderation_unavailable"


class MediaMissing(VideobotError):
    """A file the job starts from (the video to remix or extend, the image to animate) is not on
    this process's media volume: gateways and workers must share one VIDEOBOT_MEDIA_DIR."""

    code = "media_missing"

    def __init__(self, what: str, shown: str, path: str) -> None:
        super().__init__(
            f"The {what} is not on this worker's media volume: {shown}; mount VIDEOBOT_MEDIA_DIR on every worker.",
            detail=f"missing {path}",
        )


# Errors whose own message is already written for users (they carry specifics: limits, ids).
_OWN_MESSAGE = (
    InvalidRequest,
    JobNotFound,
    NotAllowed,
    LimitReached,
    BudgetExceeded,
    JobStateError,
    ProviderTimeout,
    ContentExpired,
    DeliveryFailed,
    Flagged,
    ModerationUnavailable,
    NeedsConfirmation,
    MediaMissing,
)


def user_message(exc: BaseException) -> str:
    """Short, says what happened and what to do. Never a traceback, key or host name."""
    if isinstance(exc, _OWN_MESSAGE):
        return exc.message or str(exc)
    if isinstance(exc, ContentPolicyRejected):
        reason = f" ({exc.message})" if exc.message else ""
        return f"Rejected by the provider's content policy{reason}. Rephrase the prompt and try again."
    if isinstance(exc, NotConfigured):
        return "This pipeline is not configured on this bot. Pick another with --pipeline, or ask an admin."
    if isinstance(exc, ModelUnavailable):
        return f"That model is unavailable{_at(exc)}. Pick another model or pipeline."
    if isinstance(exc, RateLimited):
        return "The provider is busy right now. Try again in a minute."
    if isinstance(exc, (TransientError, Unavailable)):
        return f"The video service is unavailable{_at(exc)}. Try again later."
    if isinstance(exc, GenerationFailed):
        code = f" [{exc.remote_code}]" if exc.remote_code else ""
        return f"The provider could not make this video{code}: {exc.message}"
    if isinstance(exc, OutputInvalid):
        return "The provider returned a broken video. Try again."
    if isinstance(exc, RemoteCancelled):
        return "The provider cancelled this job. Try again."
    if isinstance(exc, VideobotError):
        return exc.message or "Something went wrong. Try again."
    log.error("unexpected error reached the user", exc_info=exc)
    return "Something went wrong on our side. Try again; if it keeps happening, tell an admin."


def error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, VideobotError) else "internal"


def _at(exc: VideobotError) -> str:
    provider = getattr(exc, "provider", None)
    return f" at {provider}" if provider else ""
