"""What users get when a job is done in Slack: its file (or, on a retry, the one already posted).

The result is uploaded into the job's channel, in its status message's thread unless
SLACK_UPLOAD_IN_THREAD is off, with a mention of the requester, the title and the prompt; the
status card (status.py) keeps the job's buttons. What is posted is the core's choice
(`bot.core.uploads.prepare_upload`: the file, a re-encode that fits Slack's limit, or a still and
a note); a set of takes is one message with its contact sheet (takes.py). The still the status
card shows is uploaded here too, unshared.

Posts are made once. The result carries the job id in its file's name and title (or, a note
alone, in message metadata; see lookup.py), so a retried delivery, or one after a crash between
the post and the store write, reads the thread and the channel back and adopts what it finds
instead of posting a second file. The runner calls `deliver` through the adapter, which turns
Slack's errors into `DeliveryFailed` (apierror.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.adapters.slack import lookup
from bot.adapters.slack.apierror import slack_error
from bot.adapters.slack.blocks import esc
from bot.adapters.slack.status import STATUS_WAIT_SECONDS, client_of, person
from bot.adapters.slack.takes import set_message, set_updates, sheet_name
from bot.adapters.slack.upload import upload_file, upload_files
from bot.core.errors import DeliveryFailed
from bot.core.models import Job, JobKind
from bot.core.render import job_title
from bot.core.uploads import Upload, prepare_upload
from bot.core.views import short_prompt, status_view

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

#: A worker looks for the gateway's status message in the store this often while it waits.
STORED_STATUS_POLL = 0.2
#: files.info reads while Slack shares the upload into the channel (the share ts comes later).
SHARE_LOOKUPS = 6
SHARE_LOOKUP_PAUSE = 0.25


class Delivery:
    def __init__(self, adapter: SlackHost) -> None:
        self.adapter = adapter
        self.settings = adapter.settings  # upload limit, threads
        self.in_thread = adapter.settings.upload_in_thread

    async def _client(self, job: Job) -> Any:
        return await client_of(self.adapter, job)

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the result (thread or channel) once, and a still for the status card; return ids to store.

        What is posted is the core's choice (`prepare_upload`: the file, a re-encode that fits
        Slack's limit, or a still and a note). On a retried attempt (or with a result already
        recorded) the thread and the channel are read first: a post marked with this job's id
        found there is adopted, not posted again. Errors propagate as Slack's; the adapter turns
        them into DeliveryFailed.
        """
        if job.deleted_at:
            return None
        if job.kind is JobKind.TAKES:
            return await self._deliver_set(job)
        source = Path(job.output_path) if job.output_path else None
        if source is None or not await asyncio.to_thread(source.is_file):
            raise DeliveryFailed(f"The file of job {job.id} is missing on the bot's disk, so it was not posted.", transient=False)
        channel, status_ts = await self._where(job)
        if channel is None:
            raise DeliveryFailed(f"Job {job.id} has no Slack channel to post to.", transient=False)
        upload = await prepare_upload(job, self.settings.file_limit_bytes)
        again = job.delivery_attempt > 1 or bool(job.origin.result_message_id)
        found = await self._posted_before(job, channel, status_ts, upload.filename) if again else None
        if found is not None:
            file_id, result_ts = found
            log.info("job %s: its result was already posted (%s in %s); not posting it again", job.id, file_id, result_ts)
        else:
            file_id, result_ts = await self._post_result(job, upload, channel, status_ts)
        still = job.kind is JobKind.IMAGE or upload.is_still
        thumb_id = file_id if still else await self._still(job, again)
        extra: dict[str, Any] = {"file_ids": list(dict.fromkeys(f for f in (file_id, thumb_id) if f)), "thumb_file_id": thumb_id}
        updates: dict[str, Any] = {"origin_extra": {**job.origin.extra, **extra}}
        if result_ts:
            updates["result_message_id"] = result_ts
        return updates

    async def _deliver_set(self, job: Job) -> dict[str, Any] | None:
        """A set of takes: ONE message in the thread with the contact sheet and every finished take
        (bot.adapters.slack.takes), once: a retry looks for the sheet before posting again."""
        files, comment = await set_message(self.adapter.store, job, self.settings.file_limit_bytes)
        channel, status_ts = await self._where(job)
        if channel is None:
            raise DeliveryFailed(f"Set {job.id} has no Slack channel to post to.", transient=False)
        again = job.delivery_attempt > 1 or bool(job.origin.result_message_id)
        found = await self._posted_before(job, channel, status_ts, sheet_name(job)) if again else None
        if found is not None:
            sheet_id, result_ts = found
            return set_updates(job, [sheet_id] if sheet_id else [], result_ts)
        thread = self._result_thread(job, status_ts)
        client = await self._client(job)
        ids = await upload_files(client, files, channel=channel, thread_ts=thread, initial_comment=comment)
        return set_updates(job, ids, await self._shared_ts(client, ids[0], channel))

    def _result_thread(self, job: Job, status_ts: str | None) -> str | None:
        thread = job.origin.extra.get("thread_ts")
        return (thread or status_ts) if self.in_thread else thread

    async def _post_result(self, job: Job, upload: Upload, channel: str, status_ts: str | None) -> tuple[str | None, str | None]:
        title = job_title(job)  # "… · job ID · …": with the name, the mark a retry looks for
        mention = f"<@{job.origin.user_id}> " if person(job.origin.user_id) else ""
        comment = f"{mention}*{esc(title)}*\n> {esc(short_prompt(job.prompt))}"
        if upload.note:
            comment += f"\n_{esc(upload.note)}_"
        gallery = status_view(job, public_url=self.adapter.public_url).gallery_url
        if gallery:
            comment += f"\n<{gallery}|Open in gallery>"
        thread = self._result_thread(job, status_ts)
        client = await self._client(job)
        if upload.path is None:
            # Nothing fits: the note alone, marked like a status message so a retry finds it.
            posted = await client.chat_postMessage(
                channel=channel, thread_ts=thread, text=comment, metadata=lookup.result_metadata(job.id), unfurl_links=False, unfurl_media=False
            )
            return None, str(posted["ts"])
        file_id = await upload_file(
            client, upload.path, filename=upload.filename or lookup.file_name(job.id, upload.path.suffix), title=title,
            channel=channel, thread_ts=thread, initial_comment=comment,
        )  # fmt: skip
        return file_id, await self._shared_ts(client, file_id, channel)

    async def _posted_before(self, job: Job, channel: str, status_ts: str | None, name: str | None) -> tuple[str | None, str] | None:
        """The result message an earlier attempt posted for this job: in the thread, else the channel."""
        me = await self.adapter.me(job.origin.workspace_id)
        client = await self._client(job)
        thread = job.origin.extra.get("thread_ts") or status_ts
        try:
            if thread:
                try:
                    found = await self._first_result(client, lookup.replies(client, channel, thread), job.id, name, me)
                    if found is not None:
                        return found
                except SlackApiError as exc:
                    if slack_error(exc) != "thread_not_found":
                        raise
            # Top level: posted without a thread (no status message then, or threads off).
            history = lookup.history(client, channel, oldest=job.created_at - lookup.CLOCK_SKEW_SECONDS)
            found = await self._first_result(client, history, job.id, name, me)
            if found is not None:
                return found
        except SlackApiError as exc:
            if slack_error(exc) != "missing_scope":
                raise
            log.warning(
                "job %s: cannot read %s to check for an earlier post (%s); add the channels:history and "
                "groups:history scopes so a retried delivery never posts twice", job.id, channel, slack_error(exc),
            )  # fmt: skip
            if job.origin.result_message_id:  # recorded as posted: trust the store
                stored = job.origin.extra.get("file_ids") or [None]
                return stored[0], job.origin.result_message_id
        return None

    async def _first_result(
        self, client: Any, messages: AsyncIterator[dict[str, Any]], job_id: str, name: str | None, me: lookup.Me
    ) -> tuple[str | None, str] | None:
        async for message in messages:
            found = await self._result_in(client, message, job_id, name, me)
            if found is not None:
                return found
        return None

    async def _result_in(
        self, client: Any, message: dict[str, Any], job_id: str, name: str | None, me: lookup.Me
    ) -> tuple[str | None, str] | None:
        if lookup.status_job_id(message, me, event_type=lookup.RESULT_EVENT) == job_id:
            return None, str(message["ts"])
        for file in await lookup.files_of(client, message, me):
            if lookup.file_marks_job(file, job_id, name or ""):
                return str(file["id"]), str(message["ts"])
        return None

    async def _where(self, job: Job) -> tuple[str | None, str | None]:
        """The channel and status message of a job, waiting briefly if the message is being posted."""
        if job.origin.status_message_id:
            return job.origin.channel_id, job.origin.status_message_id
        if self.adapter.delivery_only:
            return await self._where_stored(job)
        return await self.adapter.surface.status_message(job)

    async def _where_stored(self, job: Job) -> tuple[str | None, str | None]:
        """A worker's view: the gateway posts the status message and stores its ts; wait for it
        briefly in the store (a job can finish before the gateway's post is written)."""
        deadline = time.monotonic() + STATUS_WAIT_SECONDS
        while time.monotonic() < deadline:
            stored = await self.adapter.store.get(job.id)
            if stored is not None and stored.origin.status_message_id:
                return stored.origin.channel_id, stored.origin.status_message_id
            await asyncio.sleep(STORED_STATUS_POLL)
        log.warning("job %s has no status message; posting its file in the channel", job.id)
        return job.origin.channel_id, None

    async def _still(self, job: Job, again: bool) -> str | None:
        """The still's Slack file: the one stored or (on a retry) already uploaded, else a new upload."""
        stored = job.origin.extra.get("thumb_file_id")
        if stored:
            return str(stored)
        if again:
            found = await self._find_still(job)
            if found:
                return found
        return await self._upload_still(job)

    async def _find_still(self, job: Job) -> str | None:
        """Best effort: the still an earlier attempt uploaded (unshared files are found by files.list)."""
        name = lookup.file_name(job.id, ".jpg")
        try:
            me = await self.adapter.me(job.origin.workspace_id)
            listing = await (await self._client(job)).files_list(
                user=me.user_id, ts_from=str(int(job.created_at - lookup.CLOCK_SKEW_SECONDS)), types="images", count=100
            )
        except SlackApiError as exc:
            log.warning("job %s: could not look for its still: %s", job.id, slack_error(exc))
            return None
        return next((str(f["id"]) for f in listing.get("files") or [] if lookup.file_marks_job(f, job.id, name)), None)

    async def _upload_still(self, job: Job) -> str | None:
        """The thumbnail as a Slack file the status card's image block can show (no public URL needed)."""
        if not job.thumbnail_path or not await asyncio.to_thread(Path(job.thumbnail_path).exists):
            return None
        try:
            # Not shared into any channel: it exists only to be referenced by the image block.
            return await upload_file(
                await self._client(job), Path(job.thumbnail_path), filename=lookup.file_name(job.id, ".jpg"), title=f"Still of job {job.id}",
                alt_txt=f"Still from job {job.id}",
            )  # fmt: skip
        except SlackApiError as exc:
            log.warning("thumbnail upload failed for %s: %s", job.id, slack_error(exc))
            return None

    async def _shared_ts(self, client: Any, file_id: str, channel: str) -> str | None:
        """The ts of the message that carries the file (Slack shares uploads asynchronously)."""
        for attempt in range(SHARE_LOOKUPS):
            try:
                info = await client.files_info(file=file_id)
            except SlackApiError as exc:
                log.warning("files.info failed for %s: %s", file_id, slack_error(exc))
                return None
            shares = info["file"].get("shares") or {}
            for scope in ("public", "private"):
                for share in (shares.get(scope) or {}).get(channel, []):
                    if share.get("ts"):
                        return str(share["ts"])
            await asyncio.sleep(SHARE_LOOKUP_PAUSE * (attempt + 1))
        return None
