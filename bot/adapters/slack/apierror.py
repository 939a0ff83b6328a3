"""Slack's error code from a failed Web API call, and what a failed delivery means for the job."""
from __future__ import annotations

import re

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError

from bot.core.errors import DeliveryFailed


def slack_error(exc: SlackApiError) -> str:
    data = exc.response.data
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return f"http_{exc.response.status_code}"  # a proxy's or gateway's page, not Slack's JSON


#: Slack is briefly unable (or asks to slow down): the same call can succeed later.
TRANSIENT_CODES = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

_REDELIVER = "then run `videobot redeliver {job}`."
#: Refusals that stay until someone acts, and what to do; the file is kept on disk meanwhile.
_PERMANENT = {
    "channel_not_found": "Slack says the channel is gone or hidden from the bot. Invite the bot to a channel, " + _REDELIVER,
    "is_archived": "The channel is archived. Unarchive it, " + _REDELIVER,
    "not_in_channel": "The bot is not in the channel. Invite it with /invite @videobot, " + _REDELIVER,
    "missing_scope": "The Slack app lacks a permission{needed}. Reinstall it from the manifest, " + _REDELIVER,
    "access_denied": "Slack does not let the bot post here. Ask a workspace admin, " + _REDELIVER,
    "no_permission": "Slack does not let the bot post here. Ask a workspace admin, " + _REDELIVER,
    "restricted_action": "This workspace does not let the bot post here. Ask a workspace admin, " + _REDELIVER,
    "ekm_access_denied": "The workspace's key management blocks the bot. Ask a workspace admin, " + _REDELIVER,
    "file_upload_size_restricted": "The file is too big for this workspace. It is kept on the bot's disk.",
    "file_too_large": "The file is too big for this workspace. It is kept on the bot's disk.",
    "storage_limit_reached": "The workspace's file storage is full. Free some space, " + _REDELIVER,
    "file_uploads_disabled": "This workspace does not accept file uploads. It is kept on the bot's disk.",
    "file_uploads_except_images_disabled": "This workspace accepts only images. The video is kept on the bot's disk.",
    "file_type_not_allowed": "This workspace does not accept this type of file. It is kept on the bot's disk.",
    "invalid_auth": "Slack refused the bot's token. Fix SLACK_BOT_TOKEN, " + _REDELIVER,
    "not_authed": "Slack refused the bot's token. Fix SLACK_BOT_TOKEN, " + _REDELIVER,
    "account_inactive": "Slack refused the bot's token. Fix SLACK_BOT_TOKEN, " + _REDELIVER,
    "token_revoked": "Slack refused the bot's token. Fix SLACK_BOT_TOKEN, " + _REDELIVER,
    "token_expired": "Slack refused the bot's token. Fix SLACK_BOT_TOKEN, " + _REDELIVER,
}
_TRANSIENT_MESSAGE = "Slack is not answering right now; the file is posted as soon as it is back."
STOPPED_MESSAGE = "The bot is stopping; the file is posted when it runs again."
_UPLOAD_STATUS = re.compile(r"Failed to upload a file \(status: (\d+)")


def delivery_failure(exc: BaseException, job_id: str) -> DeliveryFailed | None:
    """What a failed Slack delivery means: transient (retry later) or permanent (needs a person).

    The one place where Slack's answers become the core's DeliveryFailed. Returns None for
    errors that are not Slack's or the network's (bugs): those propagate as they are.
    """
    if isinstance(exc, DeliveryFailed):
        return exc
    if isinstance(exc, SlackApiError):
        code, status = slack_error(exc), exc.response.status_code
        detail = f"slack {code} (HTTP {status})"
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            return DeliveryFailed(_TRANSIENT_MESSAGE, transient=True, retry_after=_retry_after(exc), detail=detail)
        needed = exc.response.data.get("needed") if isinstance(exc.response.data, dict) else None
        text = _PERMANENT.get(code, "Slack refused the file ({code}). Fix what it says, " + _REDELIVER)
        return DeliveryFailed(text.format(job=job_id, code=code, needed=f" ({needed})" if needed else ""), transient=False, detail=detail)
    if isinstance(exc, SlackRequestError):
        # The raw upload of the bytes (files_upload_v2's step 2) reports its HTTP status only in text.
        match = _UPLOAD_STATUS.search(str(exc))
        status = int(match.group(1)) if match else 0
        if status in (408, 429) or status >= 500:
            return DeliveryFailed(_TRANSIENT_MESSAGE, transient=True, detail=f"upload HTTP {status}")
        if status == 413:
            return DeliveryFailed(_PERMANENT["file_too_large"], transient=False, detail="upload HTTP 413")
        return DeliveryFailed(f"Slack refused the file. Check the bot's log, then run `videobot redeliver {job_id}`.", transient=False, detail=str(exc)[:200])
    if isinstance(exc, SlackClientError):
        return None
    if isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError)):
        return DeliveryFailed(_TRANSIENT_MESSAGE, transient=True, detail=f"{type(exc).__name__}: {exc}"[:200])
    return None


def _retry_after(exc: SlackApiError) -> float | None:
    value = (exc.response.headers or {}).get("Retry-After") or (exc.response.headers or {}).get("retry-after")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
