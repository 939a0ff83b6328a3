"""What users see of a job in Slack: the status message, the uploaded file, their removal.

One status message per job (`chat.postMessage`), updated in place (`chat.update`) and
coalesced: at most one update per `status_interval_seconds`, the latest state wins and
the final state is always sent. Events can arrive before the status message exists
(the job is submitted first, so a refused job never touches the channel): the latest
one is kept and rendered as soon as the message is known. 429s are waited out by the
client's AsyncRateLimitErrorRetryHandler, never turned into lost updates.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.adapters.slack.apierror import slack_error
from bot.adapters.slack.blocks import short_prompt, status_blocks, status_text
from bot.core.models import Job, JobKind, ProgressEvent
from bot.core.render import job_title

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter

log = logging.getLogger(__name__)

#: How long a finished job waits for its status message before posting without a thread.
STATUS_WAIT_SECONDS = 10.0
#: files.info reads while Slack shares the upload into the channel (the share ts comes later).
SHARE_LOOKUPS = 6
SHARE_LOOKUP_PAUSE = 0.25


@dataclass
class Tracked:
    job: Job
    event: ProgressEvent | None = None
    channel_id: str | None = None
    ts: str | None = None
    rendered: str | None = None
    last_sent: float = float("-inf")
    timer: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    posted: asyncio.Event = field(default_factory=asyncio.Event)


class StatusSurface:
    def __init__(self, adapter: SlackAdapter) -> None:
        self.adapter = adapter
        self.interval = adapter.settings.status_interval_seconds
        self.in_thread = adapter.settings.upload_in_thread
        self._jobs: dict[str, Tracked] = {}

    @property
    def client(self) -> Any:
        return self.adapter.client

    # --- the status message -----------------------------------------------------------------

    async def post_status(self, job: Job) -> str:
        """Post the job's status message in its channel and remember it in the store."""
        tracked = self._track(job)
        blocks = status_blocks(tracked.job, tracked.event)
        response = await self.client.chat_postMessage(
            channel=job.origin.channel_id, text=status_text(tracked.job, tracked.event), blocks=blocks,
            unfurl_links=False, unfurl_media=False,
        )  # fmt: skip
        ts, channel = str(response["ts"]), str(response["channel"])
        # In the store, so reactions find the job and a restarted bot keeps updating this message.
        await self.adapter.app.service.set_messages(job.id, status_message_id=ts)
        tracked.rendered = json.dumps(blocks)
        tracked.last_sent = time.monotonic()
        self.attach(job, channel, ts)
        return ts

    def attach(self, job: Job, channel_id: str, ts: str) -> None:
        tracked = self._track(job)
        tracked.channel_id, tracked.ts = channel_id, ts
        tracked.posted.set()
        self._schedule(tracked)

    def forget(self, job_id: str) -> None:
        """A job whose status message could not be posted: stop keeping its state."""
        tracked = self._jobs.pop(job_id, None)
        if tracked is not None and tracked.timer is not None:
            tracked.timer.cancel()

    def _track(self, job: Job) -> Tracked:
        tracked = self._jobs.get(job.id)
        if tracked is None:
            tracked = self._jobs[job.id] = Tracked(job=job)
        origin = job.origin
        if tracked.ts is None and origin.status_message_id and origin.channel_id:
            # A job from before a restart: its origin says where its message is.
            tracked.channel_id, tracked.ts = origin.channel_id, origin.status_message_id
            tracked.posted.set()
        return tracked

    async def on_event(self, event: ProgressEvent) -> None:
        tracked = self._track(event.job)
        tracked.job, tracked.event = event.job, event
        self._schedule(tracked)

    def _schedule(self, tracked: Tracked) -> None:
        if tracked.ts is None or tracked.timer is not None:
            return  # no message yet, or an update is due and will take the latest state
        delay = max(0.0, tracked.last_sent + self.interval - time.monotonic())
        tracked.timer = asyncio.create_task(self._flush_later(tracked, delay), name=f"slack-status-{tracked.job.id}")

    async def _flush_later(self, tracked: Tracked, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        tracked.timer = None
        await self._render(tracked)

    async def _render(self, tracked: Tracked) -> None:
        async with tracked.lock:
            event, job = tracked.event, tracked.job
            blocks = status_blocks(job, event)
            key = json.dumps(blocks)
            if key != tracked.rendered and tracked.ts is not None:
                tracked.last_sent = time.monotonic()
                try:
                    await self._update(tracked, blocks)
                    tracked.rendered = key
                except SlackApiError as exc:
                    # Deleted message, archived channel: the job goes on; /video jobs still shows it.
                    log.warning("status update failed for %s: %s", job.id, slack_error(exc))
                    tracked.rendered = key
            if event is not None and event.kind.final and tracked.timer is None and key == tracked.rendered:
                self._jobs.pop(job.id, None)

    async def _update(self, tracked: Tracked, blocks: list[dict[str, Any]]) -> None:
        text = status_text(tracked.job, tracked.event)
        try:
            await self.client.chat_update(channel=tracked.channel_id, ts=tracked.ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            if slack_error(exc) not in ("invalid_blocks", "invalid_blocks_format") or not any(b["type"] == "image" for b in blocks):
                raise
            # The still is not usable yet (Slack still processing it): the card without it.
            plain = status_blocks(tracked.job, tracked.event, with_image=False)
            await self.client.chat_update(channel=tracked.channel_id, ts=tracked.ts, text=text, blocks=plain)

    async def flush(self) -> None:
        """Send every pending update now (tests, shutdown)."""
        for tracked in list(self._jobs.values()):
            if tracked.timer is not None:
                tracked.timer.cancel()
                tracked.timer = None
            if tracked.ts is not None:
                await self._render(tracked)

    async def close(self) -> None:
        timers = [t.timer for t in self._jobs.values() if t.timer is not None]
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self._jobs.clear()

    # --- the result -------------------------------------------------------------------------

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Upload the file (thread or channel) and a still for the status card; return ids to store."""
        channel, status_ts = await self._where(job)
        if channel is None:
            return None
        if not job.output_path or not Path(job.output_path).exists():
            return None
        source = Path(job.output_path)
        title = job_title(job)
        mention = f"<@{job.origin.user_id}> " if job.origin.user_id.startswith(("U", "W")) else ""
        upload = await self.client.files_upload_v2(
            file=str(source), filename=f"{job.id}{source.suffix or '.mp4'}", title=title, channel=channel,
            thread_ts=status_ts if self.in_thread else None,
            initial_comment=f"{mention}*{title}*\n> {short_prompt(job)}",
        )  # fmt: skip
        file_id = str(upload["file"]["id"])
        thumb_id = file_id if job.kind is JobKind.IMAGE else await self._upload_still(job)
        extra: dict[str, Any] = {"file_ids": [f for f in (file_id, thumb_id) if f], "thumb_file_id": thumb_id}
        updates: dict[str, Any] = {"origin_extra": {**job.origin.extra, **extra}}
        result_ts = await self._shared_ts(file_id, channel)
        if result_ts:
            updates["result_message_id"] = result_ts
        return updates

    async def _where(self, job: Job) -> tuple[str | None, str | None]:
        """The channel and status message of a job, waiting briefly if the message is being posted."""
        if job.origin.status_message_id:
            return job.origin.channel_id, job.origin.status_message_id
        tracked = self._track(job)
        try:
            await asyncio.wait_for(tracked.posted.wait(), STATUS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("job %s has no status message; posting its file in the channel", job.id)
            return job.origin.channel_id, None
        return tracked.channel_id or job.origin.channel_id, tracked.ts

    async def _upload_still(self, job: Job) -> str | None:
        """The thumbnail as a Slack file the status card's image block can show (no public URL needed)."""
        if not job.thumbnail_path or not Path(job.thumbnail_path).exists():
            return None
        try:
            # Not shared into any channel: it exists only to be referenced by the image block.
            upload = await self.client.files_upload_v2(
                file=job.thumbnail_path, filename=f"{job.id}.jpg", title=f"Still of job {job.id}", alt_txt=f"Still from job {job.id}"
            )
            return str(upload["file"]["id"])
        except SlackApiError as exc:
            log.warning("thumbnail upload failed for %s: %s", job.id, slack_error(exc))
            return None

    async def _shared_ts(self, file_id: str, channel: str) -> str | None:
        """The ts of the message that carries the file (Slack shares uploads asynchronously)."""
        for attempt in range(SHARE_LOOKUPS):
            try:
                info = await self.client.files_info(file=file_id)
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

    async def remove(self, job: Job) -> None:
        """Take the job's files and status message out of Slack (after the core deleted the job)."""
        tracked = self._jobs.pop(job.id, None)
        if tracked is not None and tracked.timer is not None:
            tracked.timer.cancel()
        for file_id in job.origin.extra.get("file_ids", []):
            await self._quietly(self.client.files_delete(file=file_id))
        channel = job.origin.channel_id
        status_ts = job.origin.status_message_id or (tracked.ts if tracked else None)
        if channel and status_ts:
            await self._quietly(self.client.chat_delete(channel=channel, ts=status_ts))
        if channel and job.origin.result_message_id and job.origin.result_message_id != status_ts:
            await self._quietly(self.client.chat_delete(channel=channel, ts=job.origin.result_message_id), "message_not_found")

    @staticmethod
    async def _quietly(call: Any, *expected: str) -> None:
        try:
            await call
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in ("file_not_found", "message_not_found", *expected):
                log.warning("cleanup call failed: %s", error)
