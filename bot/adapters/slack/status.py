"""What users see of a job in Slack while it runs: the status card, and the removal of a deleted
job's messages. The finished file is posted by delivery.py, in the card's thread.

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

Posts are made once. The status message carries the job id in Slack message metadata (see
lookup.py), so when an answer is lost, or the process died between a post and the store write,
the bot reads the channel back and adopts what it finds instead of posting a second message.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.adapters.slack import lookup
from bot.adapters.slack.apierror import TRANSIENT_CODES, retry_after, slack_error, throttled
from bot.adapters.slack.blocks import Block, esc, status_blocks, status_text
from bot.core.actions import VIA
from bot.core.errors import JobNotFound
from bot.core.models import TERMINAL, EventKind, Job, ProgressEvent
from bot.core.pacing import RateScheduler, SchedulerPool, Throttled
from bot.core.take_set import suppressed
from bot.core.render import job_title
from bot.core.views import StatusView, status_view

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

#: How long a finished job's delivery waits for its status message before posting without a thread.
STATUS_WAIT_SECONDS = 10.0
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
        self.limits = adapter.settings  # chat.update budget
        self.pool: SchedulerPool[Card] = SchedulerPool(self._scheduler)
        self._cards: dict[str, Card] = {}
        self._removed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: When the adapter started serving: older jobs without a status message are adopted.
        self.started_at: float | None = None
        #: Set once the start's reconcile has looked at every job (and offered what it found).
        self.reconciled = asyncio.Event()

    async def _client(self, job: Job) -> Any:
        return await client_of(self.adapter, job)

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
        if channel and person(job.origin.user_id):
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
        if not person(job.origin.user_id):
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

    # --- where delivery posts -----------------------------------------------------------------

    async def status_message(self, job: Job) -> tuple[str | None, str | None]:
        """The channel and ts of the job's status message, waiting briefly while it is being posted
        (adopted or posted first when no flow of this process posts it). Without one in time: the
        channel alone, and the result goes there without a thread."""
        card = self._track(job)
        if self._orphan(card):
            self._spawn_ensure(card)
        try:
            await asyncio.wait_for(card.posted.wait(), STATUS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("job %s has no status message; posting its file in the channel", job.id)
            return job.origin.channel_id, None
        return card.channel_id or job.origin.channel_id, card.ts

    # --- removal ------------------------------------------------------------------------------

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


async def client_of(adapter: SlackHost, job: Job) -> Any:
    """The Web API client with the token of the job's workspace (one workspace: the one client)."""
    return await adapter.client_for(job.origin.workspace_id, job.origin.extra.get("enterprise_id"))


def person(user_id: str) -> bool:
    """A Slack user id (not a test or CLI stand-in): only those can be mentioned or messaged."""
    return user_id.startswith(("U", "W"))
