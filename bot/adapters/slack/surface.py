"""What users see of a job in Slack: the status message, the uploaded file, their removal.

One status message per job (`chat.postMessage`), updated in place (`chat.update`) and
coalesced: at most one update per `status_interval_seconds`, the latest state wins and
the final state is always sent. Events can arrive before the status message exists
(the job is submitted first, so a refused job never touches the channel): the latest
one is kept and rendered as soon as the message is known. 429s are waited out by the
client's AsyncRateLimitErrorRetryHandler, never turned into lost updates.

Posts are made once. The status message carries the job id in Slack message metadata and
the result file carries it in its name and title (see lookup.py), so when an answer is
lost, or the process died between a post and the store write, the bot reads the channel
back and adopts what it finds instead of posting a second message or file.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.adapters.slack import lookup
from bot.adapters.slack.apierror import slack_error
from bot.adapters.slack.blocks import short_prompt, status_blocks, status_text
from bot.core.errors import DeliveryFailed, JobNotFound
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
    #: Held while the status message is being posted or looked up: one post per job.
    posting: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: ensure_status was started for this job (once per process: a failure is not retried per event).
    ensuring: bool = False


class StatusSurface:
    def __init__(self, adapter: SlackAdapter) -> None:
        self.adapter = adapter
        self.interval = adapter.settings.status_interval_seconds
        self.in_thread = adapter.settings.upload_in_thread
        self._jobs: dict[str, Tracked] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: When the adapter started serving: older jobs without a status message are adopted.
        self.started_at: float | None = None

    @property
    def client(self) -> Any:
        return self.adapter.client

    # --- the status message -----------------------------------------------------------------

    async def post_status(self, job: Job, *, adopt: bool = False) -> str:
        """Post the job's status message in its channel (once) and remember it in the store.

        `adopt`: first look for a status message an earlier process posted for this job
        (a crash before its ts reached the store) and take that one over instead.
        """
        tracked = self._track(job)
        async with tracked.posting:
            if tracked.ts is not None:
                return tracked.ts  # posted (or adopted) meanwhile by another caller
            channel = job.origin.channel_id
            ts = await self._find_status(job) if adopt else None
            if ts is not None:
                log.info("job %s: adopted its status message %s", job.id, ts)
                if tracked.event is None:
                    tracked.rendered = json.dumps(status_blocks(job, None))  # nothing newer to show yet
            else:
                channel, ts, blocks = await self._post(tracked)
                tracked.rendered = json.dumps(blocks)
                tracked.last_sent = time.monotonic()
            # In the store, so reactions find the job and a restarted bot keeps updating this message.
            # Until this write lands, a reaction finds the job through the message's metadata.
            await self.adapter.app.service.set_messages(job.id, status_message_id=ts)
            self.attach(job, str(channel), ts)  # updates start once the ts is stored
        return ts

    async def _post(self, tracked: Tracked) -> tuple[str, str, list[dict[str, Any]]]:
        job = tracked.job
        blocks = status_blocks(job, tracked.event)
        post = {
            "channel": job.origin.channel_id, "text": status_text(job, tracked.event), "blocks": blocks,
            "unfurl_links": False, "unfurl_media": False, "metadata": lookup.status_metadata(job.id),
        }  # fmt: skip
        try:
            response = await self.client.chat_postMessage(**post)
        except (aiohttp.ClientError, TimeoutError):
            if self.adapter.closed:
                raise
            # The answer was lost, not necessarily the message: look before posting again.
            ts = await self._find_status(job)
            if ts is not None:
                log.info("job %s: the status post's answer was lost; found the message %s", job.id, ts)
                return str(job.origin.channel_id), ts, blocks
            response = await self.client.chat_postMessage(**post)
        return str(response["channel"]), str(response["ts"]), blocks

    async def _find_status(self, job: Job) -> str | None:
        if not job.origin.channel_id:
            return None
        try:
            me = await self.adapter.me()
            return await lookup.find_status(self.client, job.origin.channel_id, job.id, me, since=job.created_at)
        except SlackApiError as exc:
            # Without the history scopes the bot cannot look; it posts, as before.
            log.warning("job %s: could not look for its status message: %s", job.id, slack_error(exc))
            return None

    async def ensure_status(self, job: Job) -> None:
        """A job this process did not post a status for (resumed after a crash): adopt or post one."""
        try:
            await self.post_status(job, adopt=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = slack_error(exc) if isinstance(exc, SlackApiError) else repr(exc)
            log.warning("job %s: no status message after the restart: %s", job.id, error)

    async def reconcile(self) -> None:
        """At start: every unfinished Slack job without a stored status message gets one (found or new)."""
        for job in await self.adapter.app.store.unfinished([self.adapter.platform]):
            if job.origin.status_message_id:
                continue
            tracked = self._track(job)
            if self._orphan(tracked):
                tracked.ensuring = True
                await self.ensure_status(job)

    def _orphan(self, tracked: Tracked) -> bool:
        """A job from before this process started, with no status message known: it needs ensure_status."""
        job = tracked.job
        return (
            tracked.ts is None and not job.origin.status_message_id and self.started_at is not None
            and job.created_at < self.started_at and not tracked.ensuring
        )  # fmt: skip

    def _spawn_ensure(self, tracked: Tracked) -> None:
        tracked.ensuring = True
        self.spawn(self.ensure_status(tracked.job), f"slack-adopt-{tracked.job.id}")

    def spawn(self, work: Any, name: str) -> None:
        """Background work the surface owns: cancelled by close()."""
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def job_for_message(self, channel: str, ts: str, author: str | None) -> Job | None:
        """The job behind one of the bot's messages: the store first, else the message's own marks.

        The marks cover the moment between a post and the store write (and a crash in it).
        """
        service = self.adapter.app.service
        job = await service.find_by_message(self.adapter.platform, ts)
        if job is not None:
            return job
        me = await self.adapter.me()
        if author is not None and author not in (me.user_id, me.bot_id):
            return None  # a person's message: none of the bot's business, and no read needed
        try:
            message = await lookup.message_at(self.client, channel, ts)
            job_id = await lookup.job_id_of(self.client, message, me) if message else None
        except SlackApiError as exc:
            log.warning("could not read message %s in %s: %s", ts, channel, slack_error(exc))
            return None
        if job_id is None:
            return None
        try:
            return await service.get(job_id)
        except JobNotFound:
            return None

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
        if self._orphan(tracked):
            self._spawn_ensure(tracked)
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
                    if event is not None and event.kind.final and job.error_code == "undelivered":
                        await self._tell_owner(job)  # the card cannot say why the file is missing
            if event is not None and event.kind.final and tracked.timer is None and key == tracked.rendered:
                self._jobs.pop(job.id, None)

    async def _tell_owner(self, job: Job) -> None:
        """The undelivered note in the app's DM with the owner (a user id as channel: App Home's Messages tab)."""
        if not job.origin.user_id.startswith(("U", "W")):
            return
        try:
            await self.client.chat_postMessage(channel=job.origin.user_id, text=f"*{job_title(job)}*\n{job.error_message}")
        except SlackApiError as exc:
            log.warning("could not tell %s about job %s: %s", job.origin.user_id, job.id, slack_error(exc))

    async def _update(self, tracked: Tracked, blocks: list[dict[str, Any]]) -> None:
        text = status_text(tracked.job, tracked.event)
        # The metadata again: the message stays findable by job id whatever Slack keeps on edit.
        metadata = lookup.status_metadata(tracked.job.id)
        try:
            await self.client.chat_update(channel=tracked.channel_id, ts=tracked.ts, text=text, blocks=blocks, metadata=metadata)
        except SlackApiError as exc:
            if slack_error(exc) not in ("invalid_blocks", "invalid_blocks_format") or not any(b["type"] == "image" for b in blocks):
                raise
            # The still is not usable yet (Slack still processing it): the card without it.
            plain = status_blocks(tracked.job, tracked.event, with_image=False)
            await self.client.chat_update(channel=tracked.channel_id, ts=tracked.ts, text=text, blocks=plain, metadata=metadata)

    async def flush(self) -> None:
        """Send every pending update now (tests, shutdown)."""
        for tracked in list(self._jobs.values()):
            if tracked.timer is not None:
                tracked.timer.cancel()
                tracked.timer = None
            if tracked.ts is not None:
                await self._render(tracked)

    async def close(self) -> None:
        tasks: list[asyncio.Task[None]] = [t.timer for t in self._jobs.values() if t.timer is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._jobs.clear()

    # --- the result -------------------------------------------------------------------------

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the file (thread or channel) once, and a still for the status card; return ids to store.

        On a retried attempt (or with a result already recorded) the thread and the channel are
        read first: a file marked with this job's id found there is adopted, not posted again.
        Errors propagate as Slack's; the adapter turns them into DeliveryFailed.
        """
        if job.deleted_at:
            return None
        source = Path(job.output_path) if job.output_path else None
        if source is None or not source.is_file():
            raise DeliveryFailed(f"The file of job {job.id} is missing on the bot's disk, so it was not posted.", transient=False)
        channel, status_ts = await self._where(job)
        if channel is None:
            raise DeliveryFailed(f"Job {job.id} has no Slack channel to post to.", transient=False)
        name = lookup.file_name(job.id, source.suffix or ".mp4")
        again = job.delivery_attempt > 1 or bool(job.origin.result_message_id)
        found = await self._posted_before(job, channel, status_ts, name) if again else None
        if found is not None:
            file_id, result_ts = found
            log.info("job %s: its file was already posted (%s in %s); not posting it again", job.id, file_id, result_ts)
        else:
            file_id, result_ts = await self._post_file(job, source, name, channel, status_ts if self.in_thread else None)
        thumb_id = file_id if job.kind is JobKind.IMAGE else await self._still(job, again)
        extra: dict[str, Any] = {"file_ids": [f for f in (file_id, thumb_id) if f], "thumb_file_id": thumb_id}
        updates: dict[str, Any] = {"origin_extra": {**job.origin.extra, **extra}}
        if result_ts:
            updates["result_message_id"] = result_ts
        return updates

    async def _post_file(self, job: Job, source: Path, name: str, channel: str, thread_ts: str | None) -> tuple[str, str | None]:
        title = job_title(job)  # "… · job ID · …": with the name, the mark a retry looks for
        mention = f"<@{job.origin.user_id}> " if job.origin.user_id.startswith(("U", "W")) else ""
        upload = await self.client.files_upload_v2(
            file=str(source), filename=name, title=title, channel=channel, thread_ts=thread_ts,
            initial_comment=f"{mention}*{title}*\n> {short_prompt(job)}",
        )  # fmt: skip
        file_id = str(upload["file"]["id"])
        return file_id, await self._shared_ts(file_id, channel)

    async def _posted_before(self, job: Job, channel: str, status_ts: str | None, name: str) -> tuple[str | None, str] | None:
        """The file message an earlier attempt posted for this job: in the thread, else the channel."""
        me = await self.adapter.me()
        try:
            if status_ts:
                try:
                    async for message in lookup.replies(self.client, channel, status_ts):
                        file_id = await self._marked_file(message, job.id, name, me)
                        if file_id:
                            return file_id, str(message["ts"])
                except SlackApiError as exc:
                    if slack_error(exc) != "thread_not_found":
                        raise
            # Top level: posted without a thread (no status message then, or threads off).
            async for message in lookup.history(self.client, channel, oldest=job.created_at - lookup.CLOCK_SKEW_SECONDS):
                file_id = await self._marked_file(message, job.id, name, me)
                if file_id:
                    return file_id, str(message["ts"])
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

    async def _marked_file(self, message: dict[str, Any], job_id: str, name: str, me: lookup.Me) -> str | None:
        for file in await lookup.files_of(self.client, message, me):
            if lookup.file_marks_job(file, job_id, name):
                return str(file["id"])
        return None

    async def _where(self, job: Job) -> tuple[str | None, str | None]:
        """The channel and status message of a job, waiting briefly if the message is being posted."""
        if job.origin.status_message_id:
            return job.origin.channel_id, job.origin.status_message_id
        tracked = self._track(job)
        if self._orphan(tracked):
            self._spawn_ensure(tracked)
        try:
            await asyncio.wait_for(tracked.posted.wait(), STATUS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("job %s has no status message; posting its file in the channel", job.id)
            return job.origin.channel_id, None
        return tracked.channel_id or job.origin.channel_id, tracked.ts

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
            me = await self.adapter.me()
            listing = await self.client.files_list(
                user=me.user_id, ts_from=str(int(job.created_at - lookup.CLOCK_SKEW_SECONDS)), types="images", count=100
            )
        except SlackApiError as exc:
            log.warning("job %s: could not look for its still: %s", job.id, slack_error(exc))
            return None
        return next((str(f["id"]) for f in listing.get("files") or [] if lookup.file_marks_job(f, job.id, name)), None)

    async def _upload_still(self, job: Job) -> str | None:
        """The thumbnail as a Slack file the status card's image block can show (no public URL needed)."""
        if not job.thumbnail_path or not Path(job.thumbnail_path).exists():
            return None
        try:
            # Not shared into any channel: it exists only to be referenced by the image block.
            upload = await self.client.files_upload_v2(
                file=job.thumbnail_path, filename=lookup.file_name(job.id, ".jpg"), title=f"Still of job {job.id}",
                alt_txt=f"Still from job {job.id}",
            )  # fmt: skip
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
