"""What a failed Discord post means for delivery: retry later, or give up and keep the file.

The one place that maps discord.py / aiohttp errors onto `DeliveryFailed`. discord.py has
already waited out 429s (up to `max_ratelimit_timeout`) and retried 500/502/504/524 a few
times before an error reaches this point, so what arrives here is what is left over.
"""
from __future__ import annotations

import asyncio

import aiohttp
import discord

from bot.core.errors import DeliveryFailed

# Discord JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013
INVALID_WEBHOOK_TOKEN = 50027
REQUEST_TOO_LARGE = 40005

#: An interaction token that stopped working: the next attempt speaks with the bot token.
TOKEN_GONE = frozenset({UNKNOWN_WEBHOOK, UNKNOWN_INTERACTION, INVALID_WEBHOOK_TOKEN})


def is_token_gone(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and (exc.code in TOKEN_GONE or exc.status == 401)


def is_too_large(exc: BaseException) -> bool:
    return isinstance(exc, discord.HTTPException) and (exc.status == 413 or exc.code == REQUEST_TOO_LARGE)


def delivery_failure(exc: BaseException, job_id: str) -> DeliveryFailed | None:
    """`exc` as a DeliveryFailed (transient or permanent, with a message for the job's owner),
    or None when it is none of Discord's known answers (the runner's default rule applies)."""
    if isinstance(exc, DeliveryFailed):
        return exc
    again = f"an admin can post it again with `videobot redeliver {job_id}`"
    detail = _detail(exc)
    if isinstance(exc, discord.RateLimited):  # a wait longer than discord.py agreed to sit out
        return DeliveryFailed("Discord is rate limiting the bot.", transient=True, retry_after=exc.retry_after, detail=detail)
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            return DeliveryFailed("Discord is rate limiting the bot.", transient=True, retry_after=_retry_after(exc), detail=detail)
        if isinstance(exc, discord.DiscordServerError) or exc.status >= 500:
            return DeliveryFailed("Discord is having trouble.", transient=True, detail=detail)
        if is_token_gone(exc):
            return DeliveryFailed("The interaction expired.", transient=True, detail=detail)
        if exc.code == UNKNOWN_CHANNEL:
            text = f"The video is ready, but its channel was deleted. The file is kept (job {job_id}); {again}."
        elif exc.code == MISSING_ACCESS:
            text = f"The video is ready, but the bot can no longer see this channel. Give it access; then {again}."
        elif exc.code == MISSING_PERMISSIONS or isinstance(exc, discord.Forbidden):
            text = (
                "The video is ready, but the bot may not post it here: it needs Send Messages and Attach Files. "
                f"Grant them; then {again}."
            )
        elif exc.code == UNKNOWN_MESSAGE:
            # Create Message with an enforced nonce answers this when the message with that
            # nonce was deleted moments ago: the result was posted and someone removed it.
            text = f"The result was posted and then deleted; {again}."
        elif is_too_large(exc):
            text = f"Discord refused the result as too large. Ask for fewer seconds or a smaller size; the file is kept (job {job_id})."
        else:
            text = f"Discord refused the result ({exc.status}). The file is kept; {again}."
        return DeliveryFailed(text, transient=False, detail=detail)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError, discord.GatewayNotFound)):
        return DeliveryFailed("Discord could not be reached.", transient=True, detail=detail)
    return None


def _retry_after(exc: discord.HTTPException) -> float | None:
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _detail(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"discord {exc.status} code {exc.code}: {exc.text}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]
