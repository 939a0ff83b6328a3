"""The one error taxonomy shared by providers and the core.

Providers raise these; the core maps each to user-facing text in one place
(`bot.core.errors.user_message`). `code` is what is stored on the job row.
"""
from __future__ import annotations


class VideobotError(Exception):
    """Base of every error the bot knows how to explain."""

    code = "error"
    #: Whether retrying the same call later may succeed.
    retryable = False

    def __init__(self, message: str = "", *, detail: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message
        #: For logs and operators, never shown to chat users (may name keys, hosts, statuses).
        self.detail = detail


class ConfigError(VideobotError):
    """A setting is invalid; start-up stops with one line."""

    code = "config"


class InvalidRequest(VideobotError):
    """The user's input cannot be run as asked (bad prompt, size, seconds, image...)."""

    code = "invalid_request"


class ProviderError(VideobotError):
    """Raised by a provider talking to its API."""

    code = "provider_error"

    def __init__(self, message: str = "", *, provider: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.provider = provider


class TransientError(ProviderError):
    """A hiccup (5xx, dropped connection, timeout): the same call may succeed later."""

    code = "transient"
    retryable = True


class RateLimited(TransientError):
    """The provider asked us to slow down."""

    code = "rate_limited"

    def __init__(self, message: str = "", *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ContentPolicyRejected(ProviderError):
    """The provider refused the prompt or image. Never retried, never falls back."""

    code = "content_policy"


class ProviderInvalidRequest(ProviderError, InvalidRequest):
    """The provider said the request is malformed (a 400 that is not about content)."""

    code = "invalid_request"


class Unavailable(ProviderError):
    """The provider or model cannot serve us now (retired model, outage after retries)."""

    code = "unavailable"


class ModelUnavailable(Unavailable):
    code = "model_unavailable"


class NotConfigured(Unavailable):
    """Missing or rejected credentials (401/403, no API key)."""

    code = "not_configured"


class GenerationFailed(ProviderError):
    """The remote job ran and failed; `remote_code` is the provider's own code."""

    code = "generation_failed"

    def __init__(self, message: str = "", *, remote_code: str | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.remote_code = remote_code


class ContentExpired(ProviderError):
    """The provider no longer holds the output (its URL or retention expired)."""

    code = "content_expired"


class ProviderTimeout(ProviderError):
    """The remote job did not finish within the overall timeout."""

    code = "timeout"


class OutputInvalid(ProviderError):
    """What came back is not a playable video / readable image."""

    code = "output_invalid"


class RemoteCancelled(ProviderError):
    """The remote job was cancelled outside of us (by the provider or an operator)."""

    code = "remote_cancelled"
