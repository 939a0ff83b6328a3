"""What users see of a job in Slack: the status card, the uploaded result, their removal.

One status message per job (`chat.postMessage`), showing the core's `StatusView` and
updated in place (`chat.update`). Updates go through ONE `RateScheduler` per workspace
(Slack allows about 50 `chat.update` a minute per workspace for the whole app): a card that
changed is offered once, its newest state is rendered when its turn comes (so a burst of
progress events costs one render, not one per event), final states go first and are always
sent, and a 429 slows the scheduler down (`Throttled`) instead of being retried blindly. A
card whose rendered payload did not change since it was last sent is not sent at all.

Events can arrive before the status message exists (the job is submitted first, so a
refused job never touches the channel): the newest view is kept and posted, or offered
as soon as the message is known.

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
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.adapters.slack import lookup
from bot.adapters.slack.apierror import TRANSIENT_CODES, retry_after, slack_error, throttled
from bot.adapters.slack.blocks import Block, esc, status_blocks, status_text
from bot.adapters.slack.takes import set_message, set_updates, sheet_name
from bot.adapters.slack.upload import upload_file, upload_files
from bot.core.actions import VIA
from bot.core.errors import DeliveryFailed, JobNotFound
from bot.core.models import TERMINAL, EventKind, Job, JobKind, ProgressEvent
from bot.core.pacing import RateScheduler, SchedulerPool, Throttled
from bot.core.take_set import suppressed
from bot.core.render import job_title
from bot.core.uploads import Upload, prepare_upload
from bot.core.views import StatusView, short_prompt, status_view

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

#: How long a finished job waits for its status message before posting without a thread.
STATUS_WAIT_SECONDS = 10.0
#: A worker looks for the gateway's status message in the store this often while it waits.
STORED_STATUS_POLL = 0.2
#: files.info reads while Slack shares the upload into the channel (the share ts comes later).
SHARE_LOOKUPS = 6
SHARE_LOOKUP_PAUSE = 0.25
#: On stop, how long pending card states (final ones first) may still be sent.
CLOSE_FLUSH_SECONDS = 3.0
#: A final state that Slack failed to take (5xx) is offered again this many times.
FINAL_ATTEMPTS = 3
#: Marks in the job's origin extras that its card shows its ending (the job's finished_at then):
#: a stop or crash between a job's end and that update is made good by the next start.
CARD_SHOWN = "card_shown"
#: How far back a start looks for finished jobs whose card may not show the ending.
RECONCILE_FINISHED_SECONDS = 3600.0
RECONCILE_FINISHED_LIMIT = 200


@dataclass(eq=False)
class Card:
    """One job's status message as this process knows it."""

    job: Job
    #: The newest event (None: render the stored row).
    event: ProgressEvent | None = None
    channel_id: str | None = None
    ts: str | None = None
    #: The payload last sent (or posted): an equal one is not sent again.
    sent: str | None = None
    #: Offered to the scheduler and not taken yet: newer events need no new offer.
    pending: bool = False
    #: False once Slack refused the still's image block (not processed yet): the card goes without it.
    with_image: bool = True
    final_attempts: int = 0
    posted: asyncio.Event = field(default_factory=asyncio.Event)
    #: Held while the status message is being posted or looked up: one post per job.
    posting: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: ensure_status was started for this job (once per process: a failure is not retried per event).
    ensuring: bool = False
    told_failure: bool = False


class StatusSurface:
    def __init__(self, adapter: SlackHost) -> None:
        self.adapter = adapter
        self.limits = adapter.settings  # chat.update budget, upload limit
        self.in_thread = adapter.settings.upload_in_thread
        self.pool: SchedulerPool[Card] = SchedulerPool(self._scheduler)
        self._cards: dict[str, Card] = {}
        self._removed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: When the adapter started serving: older jobs without a status message are adopted.
        self.started_at: float | None = None
        #: Set once the start's reconcile has looked at every job (and offered what it found).
        self.reconciled = asyncio.Event()

    async def _client(self, job: Job) -> Any:
        """The Web API client with the token of the job's workspace (one workspace: the one client)."""
        return await self.adapter.client_for(job.origin.workspace_id, job.origin.extra.get("enterprise_id"))

    def _scheduler(self, workspace: object) -> RateScheduler[Card]:
        return RateScheduler(
            self._send_update, rate=self.limits.update_budget, per=self.limits.update_window_seconds, name=f"slack-updates-{workspace}"
        )

    def scheduler_for(self, workspace_id: str | None) -> RateScheduler[Card]:
        return self.pool.get(workspace_id or "")

    # --- the status message -----------------------------------------------------------------

    def _render(self, card: Card) -> tuple[StatusView, str, list[Block], str]:
        view = status_view(card.job, card.event)
        text, blocks = status_text(view), status_blocks(view, card.job, with_image=card.with_image)
        return view, text, blocks, json.dumps([text, blocks], sort_keys=True)

    async def post_status(self, job: Job, *, adopt: bool = False) -> str:
        """Post the job's status message in its channel (once) and remember it in the store.

        `adopt`: first look for a status message an earlier process posted for this job
        (a crash before its ts reached the store) and take that one over instead.
        """
        card = self._track(job)
        async with card.posting:
            if card.ts is not None:
                return card.ts  # posted (or adopted) meanwhile by another caller
            channel = job.origin.channel_id
            ts = await self._find_status(job) if adopt else None
            if ts is not None:
                log.info("job %s: adopted its status message %s", job.id, ts)
            else:
                channel, ts, card.sent = await self._post(card)
            # In the store, so reactions find the job and a restarted bot keeps updating this message.
            # Until this write lands, a reaction finds the job through the message's metadata.
            await self.adapter.service.set_messages(job.id, status_message_id=ts)
            card.channel_id, card.ts = str(channel), ts
            card.posted.set()
            # What changed while posting (or, adopted, the state now); nothing when the post shows it.
            view, _, _, rendered = self._render(card)
            if rendered != card.sent:
                self._offer(card)
            elif view.final:
                self._shown(card)
        return ts

    async def _post(self, card: Card) -> tuple[str, str, str]:
        job = card.job
        _, text, blocks, key = self._render(card)
        post = {
            "channel": job.origin.channel_id, "text": text, "blocks": blocks, "unfurl_links": False, "unfurl_media": False,
            "metadata": lookup.status_metadata(job.id), "thread_ts": job.origin.extra.get("thread_ts"),
        }  # fmt: skip
        client = await self._client(job)
        try:
            response = await client.chat_postMessage(**post)
        except (aiohttp.ClientError, TimeoutError):
            if self.adapter.closed:
                raise
            # The answer was lost, not necessarily the message: look before posting again.
            ts = await self._find_status(job)
            if ts is not None:
                log.info("job %s: the status post's answer was lost; found the message %s", job.id, ts)
                return str(job.origin.channel_id), ts, key
            response = await client.chat_postMessage(**post)
        return str(response["channel"]), str(response["ts"]), key

    async def _find_status(self, job: Job) -> str | None:
        if not job.origin.channel_id:
            return None
        try:
            me = await self.adapter.me(job.origin.workspace_id)
            return await lookup.find_status(
                await self._client(job), job.origin.channel_id, job.id, me, since=job.created_at, thread_ts=job.origin.extra.get("thread_ts")
            )
        except SlackClientError as exc:
            # Without the history scopes the bot cannot look; it posts, as before.
            log.warning("job %s: could not look for its status message: %s", job.id, slack_error(exc) if isinstance(exc, SlackApiError) else exc)
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
        """At start: every unfinished Slack job without a stored status message gets one (found or
        new), and every recently finished job whose card may not show its ending yet is updated."""
        try:
            store = self.adapter.store
            for job in await store.unfinished([self.adapter.platform]):
                if job.origin.status_message_id or _scene(job):
                    continue
                card = self._track(job)
                if self._orphan(card):
                    card.ensuring = True
                    await self.ensure_status(job)
            since = time.time() - RECONCILE_FINISHED_SECONDS
            for job in await store.list(platform=self.adapter.platform, statuses=list(TERMINAL), limit=RECONCILE_FINISHED_LIMIT):
                if not job.origin.status_message_id or job.finished_at is None or job.finished_at < since:
                    continue
                if job.origin.extra.get(CARD_SHOWN) == job.finished_at or job.id in self._cards:
                    continue
                self._offer(self._track(job))  # its ending, rendered from the stored row
        finally:
            self.reconciled.set()

    def _shown(self, card: Card) -> None:
        """The card shows the job's ending: forget it, and note it in the store for the next start."""
        self._cards.pop(card.job.id, None)
        job = card.job
        if job.finished_at is not None and job.origin.extra.get(CARD_SHOWN) != job.finished_at:
            self.spawn(self._note_shown(job.id, job.finished_at), f"slack-shown-{job.id}")

    async def _note_shown(self, job_id: str, finished_at: float) -> None:
        try:
            await self.adapter.service.set_messages(job_id, extra={CARD_SHOWN: finished_at})
        except Exception:
            log.warning("job %s: could not note that its card shows the ending", job_id, exc_info=True)

    def _orphan(self, card: Card) -> bool:
        """A job with no status message known that no flow of this process posts one for: from before
        this process started, or started outside chat (the web; maybe `videobot web` in another
        process, the job adopted here). It needs ensure_status."""
        job = card.job
        if card.ts is not None or job.origin.status_message_id or card.ensuring:
            return False
        return (self.started_at is not None and job.created_at < self.started_at) or VIA in job.origin.extra

    def posting_here(self, job: Job) -> None:
        """This process posts the job's status message itself now (announce): its events must not
        start a second post."""
        self._track(job).ensuring = True

    def _spawn_ensure(self, card: Card) -> None:
        card.ensuring = True
        self.spawn(self.ensure_status(card.job), f"slack-adopt-{card.job.id}")

    def spawn(self, work: Any, name: str) -> None:
        """Background work the surface owns: cancelled by close()."""
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def job_for_message(self, channel: str, ts: str, author: str | None, team_id: str | None = None) -> Job | None:
        """The job behind one of the bot's messages: the store first, else the message's own marks.

        The marks cover the moment between a post and the store write (and a crash in it).
        """
        service = self.adapter.service
        job = await service.find_by_message(self.adapter.platform, ts)
        if job is not None:
            return job
        try:
            me = await self.adapter.me(team_id)
            if author is not None and author not in (me.user_id, me.bot_id):
                return None  # a person's message: none of the bot's business, and no read needed
            client = await self.adapter.client_for(team_id)
            message = await lookup.message_at(client, channel, ts)
            job_id = await lookup.job_id_of(client, message, me) if message else None
        except SlackClientError as exc:
            log.warning("could not read message %s in %s: %s", ts, channel, slack_error(exc) if isinstance(exc, SlackApiError) else exc)
            return None
        if job_id is None:
            return None
        try:
            return await service.get(job_id)
        except JobNotFound:
            return None

    def forget(self, job_id: str) -> None:
        """A job whose status message could not be posted: stop keeping its state (and ignore its events)."""
        self._cards.pop(job_id, None)
        self._removed.add(job_id)

    def _track(self, job: Job) -> Card:
        card = self._cards.get(job.id)
        if card is None:
            card = self._cards[job.id] = Card(job=job)
        origin = job.origin
        if card.ts is None and origin.status_message_id and origin.channel_id:
            # A job from before a restart: its origin says where its message is.
            card.channel_id, card.ts = origin.channel_id, origin.status_message_id
            card.posted.set()
        return card

    async def on_event(self, event: ProgressEvent) -> None:
        if event.job.id in self._removed or _scene(event.job):
            return
        card = self._track(event.job)
        card.job, card.event = event.job, event
        if event.kind is EventKind.FAILED and not card.told_failure:
            card.told_failure = True
            self.spawn(self._tell_failure(event.job, status_view(event.job, event)), f"slack-failure-{event.job.id}")
        if self._orphan(card):
            self._spawn_ensure(card)
        self._offer(card)

    def _offer(self, card: Card) -> None:
        """The card changed: have its workspace's scheduler send its newest state when its turn comes."""
        if card.ts is None or card.channel_id is None:
            return  # no message yet: post_status posts the newest state
        final = card.event is not None and card.event.kind.final
        if card.pending and not final:
            return  # already waiting for its turn; it renders the newest state then
        card.pending = True
        self.scheduler_for(card.job.origin.workspace_id).offer(card.job.id, card, final=final)

    async def _send_update(self, key: object, card: Card) -> None:
        """The scheduler's send: the card's newest state in one chat.update (none if nothing changed).
        A 429 raises Throttled: the scheduler puts the card back and slows down."""
        card.pending = False
        if card.job.id in self._removed or card.ts is None or card.channel_id is None:
            return
        view, text, blocks, rendered = self._render(card)
        if rendered != card.sent:
            try:
                client = await self._client(card.job)
            except SlackClientError as exc:  # uninstalled meanwhile: nothing can be shown there any more
                log.info("job %s: its card is not updated: %s", card.job.id, exc)
                self._cards.pop(card.job.id, None)
                return
            try:
                # The metadata again: the message stays findable by job id whatever Slack keeps on edit.
                await client.chat_update(
                    channel=card.channel_id, ts=card.ts, text=text, blocks=blocks, metadata=lookup.status_metadata(card.job.id)
                )
                card.sent = rendered
            except SlackApiError as exc:
                if not await self._update_refused(card, view, exc, blocks):
                    return  # offered again
        if view.final and rendered == card.sent:
            self._shown(card)  # its last word is on the card
        elif view.final:
            self._cards.pop(card.job.id, None)  # the card is gone or refused: the next start tries again

    async def _update_refused(self, card: Card, view: StatusView, exc: SlackApiError, blocks: list[Block]) -> bool:
        """What a refused chat.update means; False when the card was offered again."""
        if throttled(exc):
            card.pending = True  # the scheduler keeps it
            raise Throttled(retry_after(exc)) from exc
        error = slack_error(exc)
        if error in ("invalid_blocks", "invalid_blocks_format") and any(b["type"] == "image" for b in blocks):
            # The still is not usable yet (Slack still processing it): the card without it.
            card.with_image = False
            self._offer(card)
            return False
        if view.final and (error in TRANSIENT_CODES or exc.response.status_code >= 500):
            card.final_attempts += 1
            if card.final_attempts < FINAL_ATTEMPTS:
                card.pending = True
                raise Throttled(retry_after(exc)) from exc  # a job's last word is worth another try
        # Deleted message, archived channel: the job goes on; /video jobs still shows it.
        log.warning("status update failed for %s: %s", card.job.id, error)
        card.sent = None
        if view.final and card.job.error_code == "undelivered":
            await self._dm(card.job, f"*{esc(job_title(card.job))}*\n{esc(card.job.error_message or '')}")
        return True

    async def _tell_failure(self, job: Job, view: StatusView) -> None:
        """The whole failure note, to the owner alone: ephemeral in the channel, else in the app's DM."""
        text = f"*{esc(job_title(job))}* failed.\n{esc(view.error or 'It failed.')}"
        channel = job.origin.channel_id
        if channel and _person(job.origin.user_id):
            try:
                client = await self._client(job)
                await client.chat_postEphemeral(channel=channel, user=job.origin.user_id, text=text, thread_ts=job.origin.extra.get("thread_ts"))
                return
            except SlackApiError as exc:
                log.info("job %s: no ephemeral failure note (%s); sending it as a DM", job.id, slack_error(exc))
            except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
                log.info("job %s: no ephemeral failure note (%r); sending it as a DM", job.id, exc)
        await self._dm(job, text)

    async def _dm(self, job: Job, text: str) -> None:
        """A note in the app's DM with the owner (a user id as channel: App Home's Messages tab)."""
        if not _person(job.origin.user_id):
            return
        try:
            await (await self._client(job)).chat_postMessage(channel=job.origin.user_id, text=text)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            error = slack_error(exc) if isinstance(exc, SlackApiError) else repr(exc)
            log.warning("could not tell %s about job %s: %s", job.origin.user_id, job.id, error)

    async def flush(self) -> None:
        """Wait until every offered card state was sent (tests, shutdown)."""
        await self.pool.drain()

    async def close(self) -> None:
        try:
            # Final states go first: a stop within a job's last moment still shows how it ended.
            await asyncio.wait_for(self.pool.drain(), CLOSE_FLUSH_SECONDS)
        except TimeoutError:
            log.info("stopping with status updates unsent; the next start shows the endings")
        if self._tasks:  # notes to owners, marks in the store: short; adoptions are cut off
            _, late = await asyncio.wait(set(self._tasks), timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.pool.close()
        self._cards.clear()

    # --- the result -------------------------------------------------------------------------

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
        upload = await prepare_upload(job, self.limits.file_limit_bytes)
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
        files, comment = await set_message(self.adapter.store, job, self.limits.file_limit_bytes)
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
        mention = f"<@{job.origin.user_id}> " if _person(job.origin.user_id) else ""
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
                    async for message in lookup.replies(client, channel, thread):
                        found = await self._result_in(client, message, job.id, name, me)
                        if found is not None:
                            return found
                except SlackApiError as exc:
                    if slack_error(exc) != "thread_not_found":
                        raise
            # Top level: posted without a thread (no status message then, or threads off).
            async for message in lookup.history(client, channel, oldest=job.created_at - lookup.CLOCK_SKEW_SECONDS):
                found = await self._result_in(client, message, job.id, name, me)
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
        card = self._track(job)
        if self._orphan(card):
            self._spawn_ensure(card)
        try:
            await asyncio.wait_for(card.posted.wait(), STATUS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("job %s has no status message; posting its file in the channel", job.id)
            return job.origin.channel_id, None
        return card.channel_id or job.origin.channel_id, card.ts

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

    async def remove(self, job: Job) -> None:
        """Take the job's files and status message out of Slack (after the core deleted the job)."""
        card = self._cards.pop(job.id, None)
        self._removed.add(job.id)  # an update still queued for it is not sent
        try:
            client = await self._client(job)
        except SlackClientError as exc:
            log.info("job %s: its messages stay in Slack: %s", job.id, exc)
            return
        for file_id in job.origin.extra.get("file_ids", []):
            await self._quietly(client.files_delete(file=file_id))
        channel = job.origin.channel_id
        status_ts = job.origin.status_message_id or (card.ts if card else None)
        if channel and status_ts:
            await self._quietly(client.chat_delete(channel=channel, ts=status_ts))
        if channel and job.origin.result_message_id and job.origin.result_message_id != status_ts:
            await self._quietly(client.chat_delete(channel=channel, ts=job.origin.result_message_id), "message_not_found")

    @staticmethod
    async def _quietly(call: Any, *expected: str) -> None:
        try:
            await call
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in ("file_not_found", "message_not_found", *expected):
                log.warning("cleanup call failed: %s", error)


def _scene(job: Job) -> bool:
    """A story's scene or a set's take: shown and posted as part of its story or set (its card),
    never on its own (unless Use N posts the take)."""
    return bool(job.state.get("story_scene")) or suppressed(job)


def _person(user_id: str) -> bool:
    """A Slack user id (not a test or CLI stand-in): only those can be mentioned or messaged."""
    return user_id.startswith(("U", "W"))
