"""Finding the bot's own posts again: the marks it puts on them and the reads that find them.

Nothing about a post lives only in memory or only in the store: a status message carries
Slack message metadata (`videobot_job` with the job id), and a result file carries the
job id in its name (`{job_id}.mp4`) and title (`… · job {job_id} · …`), because
files.completeUploadExternal takes no metadata. After a crash (or a lost answer) the bot
reads the channel or thread back and adopts what it finds instead of posting twice.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

#: The metadata event type of status messages (Slack: a lowercase name, scoped to this app).
STATUS_EVENT = "videobot_job"
#: Pages read when looking for a post (Slack's read methods are Tier 3: keep it short).
MAX_PAGES = 5
PAGE_SIZE = 200
#: Clock slack between this host and Slack when bounding a search by the job's creation time.
CLOCK_SKEW_SECONDS = 300.0


@dataclass(frozen=True)
class Me:
    """The bot as Slack names it (auth.test): only its own messages count as its posts."""

    user_id: str | None
    bot_id: str | None

    def wrote(self, message: dict[str, Any]) -> bool:
        if self.bot_id and message.get("bot_id") == self.bot_id:
            return True
        return bool(self.user_id) and message.get("user") == self.user_id


def status_metadata(job_id: str) -> dict[str, Any]:
    return {"event_type": STATUS_EVENT, "event_payload": {"job_id": job_id}}


def status_job_id(message: dict[str, Any], me: Me) -> str | None:
    """The job a status message belongs to, from its metadata (only on the bot's own messages)."""
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != STATUS_EVENT or not me.wrote(message):
        return None
    job_id = (metadata.get("event_payload") or {}).get("job_id")
    return str(job_id) if job_id else None


def file_name(job_id: str, suffix: str) -> str:
    return f"{job_id}{suffix}"


_TITLE_MARK = re.compile(r"\bjob ([a-z0-9]+)\b")


def file_job_id(file: dict[str, Any]) -> str | None:
    """The job a file of the bot belongs to: its title says `job ID`, its name is `ID.ext`."""
    match = _TITLE_MARK.search(str(file.get("title") or ""))
    if match:
        return match.group(1)
    return None


def file_marks_job(file: dict[str, Any], job_id: str, name: str) -> bool:
    return file.get("name") == name or file_job_id(file) == job_id


async def _file(client: AsyncWebClient, file: dict[str, Any]) -> dict[str, Any]:
    """Messages may carry a file stub (`file_access: check_file_info`): files.info has the rest."""
    if file.get("file_access") == "check_file_info" or ("name" not in file and "title" not in file):
        return dict((await client.files_info(file=file["id"]))["file"])
    return file


async def files_of(client: AsyncWebClient, message: dict[str, Any], me: Me) -> list[dict[str, Any]]:
    if not me.wrote(message):
        return []
    return [await _file(client, f) for f in message.get("files") or [] if f.get("id")]


async def history(client: AsyncWebClient, channel: str, *, oldest: float | None = None) -> AsyncIterator[dict[str, Any]]:
    """The channel's top-level messages, newest first, a few pages at most."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.conversations_history(
            channel=channel, oldest=f"{oldest:.6f}" if oldest else None, limit=PAGE_SIZE, cursor=cursor, include_all_metadata=True
        )
        for message in page.get("messages") or []:
            yield message
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor:
            return


async def replies(client: AsyncWebClient, channel: str, thread_ts: str) -> AsyncIterator[dict[str, Any]]:
    """A thread, its parent first, a few pages at most."""
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.conversations_replies(channel=channel, ts=thread_ts, limit=PAGE_SIZE, cursor=cursor, include_all_metadata=True)
        for message in page.get("messages") or []:
            yield message
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not page.get("has_more") or not cursor:
            return


async def find_status(client: AsyncWebClient, channel: str, job_id: str, me: Me, *, since: float) -> str | None:
    """The ts of the job's status message in the channel, found by its metadata."""
    async for message in history(client, channel, oldest=since - CLOCK_SKEW_SECONDS):
        if status_job_id(message, me) == job_id:
            return str(message["ts"])
    return None


async def message_at(client: AsyncWebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """One message by ts: top-level messages from the history, thread replies from their thread."""
    page = await client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1, include_all_metadata=True)
    for message in page.get("messages") or []:
        if message.get("ts") == ts:
            return dict(message)
    # Not in the channel's history: a reply. conversations.replies takes a reply's ts too.
    page = await client.conversations_replies(channel=channel, ts=ts, latest=ts, inclusive=True, include_all_metadata=True)
    return next((dict(m) for m in page.get("messages") or [] if m.get("ts") == ts), None)


async def job_id_of(client: AsyncWebClient, message: dict[str, Any], me: Me) -> str | None:
    """The job behind one of the bot's messages: the status metadata, else a marked file."""
    job_id = status_job_id(message, me)
    if job_id:
        return job_id
    for file in await files_of(client, message, me):
        job_id = file_job_id(file)
        if job_id:
            return job_id
    return None
