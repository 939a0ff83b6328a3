"""What the OpenAI video and image providers share: the client, and SDK errors → the taxonomy."""
from __future__ import annotations

import math
import re
import warnings
from email.utils import parsedate_to_datetime
from time import time
from typing import NoReturn

import httpx2
import openai

from providers.errors import (
    ContentPolicyRejected,
    ModelUnavailable,
    NotConfigured,
    ProviderError,
    ProviderInvalidRequest,
    RateLimited,
    TransientError,
    Unavailable,
)

#: The exact warning `typing_extensions.deprecated` raises on every `client.videos.*` call in
#: openai 3.54. Gateways still serve the protocol, so it is noise for us; nothing broader is hidden.
SORA_DEPRECATION = "The Sora API is scheduled to permanently shut down on September 24, 2026."


def install_warning_filter() -> None:
    """Ignore exactly that DeprecationWarning (message and category); every other one still shows."""
    warnings.filterwarnings("ignore", message=re.escape(SORA_DEPRECATION) + "$", category=DeprecationWarning)


install_warning_filter()

# Codes and words the API (and gateways copying it) use for a refused prompt or image.
_POLICY_CODES = {
    "moderation_blocked",
    "content_policy_violation",
    "content_filter",
    "safety_violation",
    "input_moderation",
    "output_moderation",
}
_POLICY_WORDS = ("moderation", "policy", "safety")
_MODEL_CODES = {"model_not_found", "invalid_model", "model_not_available", "model_retired", "unsupported_model"}


def make_client(api_key: str, base_url: str | None, timeout: float) -> openai.AsyncOpenAI:
    """One client, with the SDK's own retries off: a retried create bills twice (there is no
    idempotency key), and safe calls are retried by `providers.polling`, honouring Retry-After."""
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)),
    )


def is_policy_code(code: str | None) -> bool:
    if not code:
        return False
    lowered = code.lower()
    return lowered in _POLICY_CODES or any(word in lowered for word in _POLICY_WORDS)


def retry_after_seconds(headers: httpx2.Headers | None) -> float | None:
    """`retry-after-ms` (OpenAI's own), then `retry-after` in seconds or as an HTTP date."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            try:
                value = parsedate_to_datetime(raw).timestamp() - time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(value):
            return max(0.0, value)
    return None


def poll_after_seconds(headers: httpx2.Headers | None, *, ceiling: float = 60.0) -> float | None:
    """The `openai-poll-after-ms` hint, bounded: a broken or hostile value cannot stall a job."""
    raw = headers.get("openai-poll-after-ms") if headers is not None else None
    if raw is None:
        return None
    try:
        value = float(raw) / 1000.0
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return min(max(value, 0.0), ceiling)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    return exc.message


def map_error(exc: Exception, *, provider: str, what: str) -> Exception:
    """An SDK or transport exception as a taxonomy error; anything else is returned unchanged.

    `detail` carries the status, code and request id for the log; the message is for users.
    """
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _server_message(exc)
        detail = f"{what}: HTTP {status} code={exc.code} param={exc.param} request_id={exc.request_id}: {message}"
        if status in (401, 403):
            why = "the API key was rejected" if status == 401 else "the API key may not use this"
            return NotConfigured(f"The {provider} pipeline is not configured ({why}).", provider=provider, detail=detail)
        if status == 429:
            if exc.code == "insufficient_quota":
                return Unavailable("The provider account is out of quota.", provider=provider, detail=detail)
            return RateLimited(
                "The provider is rate limiting us.", retry_after=retry_after_seconds(exc.response.headers),
                provider=provider, detail=detail,
            )  # fmt: skip
        if status == 408 or status == 409 or status >= 500:
            return TransientError(f"The provider had an error ({status}).", provider=provider, detail=detail)
        if exc.code in _MODEL_CODES or (status == 404 and exc.param == "model"):
            return ModelUnavailable(message, provider=provider, detail=detail)
        if status in (400, 422) and (is_policy_code(exc.code) or is_policy_code(exc.type)):
            return ContentPolicyRejected(message, provider=provider, detail=detail)
        if status in (400, 422):
            if exc.param == "model":
                return ModelUnavailable(message, provider=provider, detail=detail)
            return ProviderInvalidRequest(f"The provider refused the request: {message}", provider=provider, detail=detail)
        return ProviderError(f"The provider answered {status}: {message}", provider=provider, detail=detail)
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return TransientError("Could not reach the provider.", provider=provider, detail=f"{what}: {exc!r} {exc.__cause__!r}")
    if isinstance(exc, httpx2.TransportError):  # raised while streaming a body, outside the SDK's wrapping
        return TransientError("The connection to the provider dropped.", provider=provider, detail=f"{what}: {exc!r}")
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderError("The provider sent an answer we cannot read.", provider=provider, detail=f"{what}: {exc}")
    return exc


def reraise(exc: Exception, *, provider: str, what: str) -> NoReturn:
    """Raise the taxonomy error for `exc` (chained to it), or `exc` itself when it is not the SDK's."""
    mapped = map_error(exc, provider=provider, what=what)
    if mapped is exc:
        raise exc
    raise mapped from exc
