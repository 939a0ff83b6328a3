"""Status messages: the core's view of each job, rendered and paced against Discord's limits.

One status message per job, edited in place. What it says and which buttons it offers is
`bot.core.views.status_view`; this module renders it (`render`, `buttons`) and sends it.
Sends go through rate budgets (`bot.core.pacing`), not per-message timers: one scheduler
per channel for bot-token edits, one per interaction webhook for edits through an
interaction token. Each budget is shared by every message that changed; the newest state
of a message wins, final states go first and are always sent; a 429 that discord.py gives
up on slows the budget down (`Throttled`). discord.py itself sits out short 429s (up to five
tries, each waiting Retry-After) before anything reaches us, so it is the budget (default
5 edits per 5 s, Discord's per-channel rate) that keeps the bot under the limit.

While the interaction token is fresh the edits go through it; before it expires, and for
jobs adopted after a restart, they go through the bot token on the same message, so the
user sees no difference. Events can arrive before the status message exists (a re-roll by
reaction): the latest view is kept and rendered as soon as the message is known.

A job that fails after it started shows the view's short line publicly, and its owner gets
the full explanation privately: an ephemeral follow-up while the token lives, else a DM.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.adapters.discord_bot import marks
from bot.adapters.discord_bot.buttons import components, offer_components
from bot.adapters.discord_bot.errors import is_token_gone
from bot.adapters.discord_bot.flows import STATUS_REPLY_TO, is_guest, token_alive
from bot.core.take_set import suppressed
from bot.adapters.discord_bot.render import failure_note, status_content
from bot.core.models import Job, ProgressEvent
from bot.core.pacing import RateScheduler, SchedulerPool, Throttled
from bot.core.views import Action, Phase, StatusView, status_view

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

log = logging.getLogger(__name__)

#: After a failed status post, events do not retry it for this long (the result still comes).
STATUS_RETRY_SECONDS = 30.0
#: A status edit that fails for a passing reason (5xx, no connection) is tried this often.
EDIT_TRIES = 3
#: On stop, pending states (finals above all) get this long to go out.
FLUSH_ON_STOP_SECONDS = 5.0
#: Jobs remembered as "owner told about the failure" (oldest forgotten first).
NOTED_MEMORY = 10_000

LimitKey = tuple[str, int]


@dataclass(eq=False)
class Shown:
    """A message the bot keeps showing a job's state on: its status message, or its result post
    once the job is deleted."""

    key: str
    job: Job
    channel_id: int | None = None
    message_id: int | None = None
    #: The newest view, kept while the message is not known yet.
    latest: StatusView | None = None
    #: What was last handed to a scheduler (an identical render is not sent again).
    offered: tuple[Any, ...] | None = None
    seq: int = 0
    sent_seq: int = 0
    failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True, eq=False)
class Edit:
    shown: Shown
    seq: int
    #: The budget it was offered to: ("webhook", status message id) or ("channel", channel id).
    limit: LimitKey
    content: str
    actions: tuple[Action, ...]
    final: bool
    clear_files: bool = False
    phase: Phase | None = None
    #: A set of takes' finished takes (a Use N / More like N button each).
    takes: tuple[int, ...] = ()


class StatusBoard:
    def __init__(self, adapter: DiscordHost) -> None:
        self.adapter = adapter
        self.margin = adapter.settings.token_margin_seconds
        self.edits, self.window = adapter.settings.status_edits_per_window, adapter.settings.status_edit_window_seconds
        self.pool: SchedulerPool[Edit] = SchedulerPool(self._scheduler)
        self._shown: dict[str, Shown] = {}
        #: Live interactions whose original response is a status message, by that message's id.
        self._interactions: dict[int, discord.Interaction] = {}
        #: Status messages being posted, by job id: one post however many callers ask for it.
        self._status_posts: dict[str, asyncio.Task[int | None]] = {}
        self._status_failed: dict[str, float] = {}
        self._noted: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()

    def _scheduler(self, limit: Hashable) -> RateScheduler[Edit]:
        kind, ident = limit  # type: ignore[misc]
        return RateScheduler(self._send, rate=self.edits, per=self.window, name=f"discord-{kind}-{ident}")

    # --- interactions behind status messages ------------------------------------------------

    def register_interaction(self, message_id: int, interaction: discord.Interaction) -> None:
        self._interactions[message_id] = interaction

    def forget_interaction(self, message_id: int) -> None:
        self._interactions.pop(message_id, None)

    def live_interaction(self, job: Job, message_id: int | None) -> discord.Interaction | None:
        """The interaction behind this status message while its token has time left, else None."""
        if message_id is None:
            return None
        interaction = self._interactions.get(message_id)
        if interaction is None:
            return None
        if not token_alive(job, interaction, self.margin):
            self.forget_interaction(message_id)  # from now on this job speaks with the bot token
            return None
        return interaction

    # --- what to show -----------------------------------------------------------------------

    async def on_event(self, event: ProgressEvent) -> None:
        # Rendering progress comes after answering Discord: while interactions wait for their
        # defer, events queue (in order) on this subscription instead of taking the loop.
        await self.adapter.acks.wait()
        job = event.job
        if suppressed(job):
            return  # a set's take: shown on its set's status message, posted with its set
        view = status_view(job, event)
        shown = self._status_of(job)
        if shown.message_id is None:
            shown.latest = view
            if not needs_status(job):
                if view.final:
                    self._shown.pop(shown.key, None)  # no status message to show it on (no channel)
            elif time.monotonic() - self._status_failed.get(job.id, float("-inf")) > STATUS_RETRY_SECONDS:
                # Its status message is due but not known here (e.g. adopted after a restart).
                self._spawn(self._ensure_status_quietly(job))
        else:
            self._offer(shown, view)
        if view.phase is Phase.FAILED and job.started_at is not None and job.id not in self._noted:
            self._noted[job.id] = None
            while len(self._noted) > NOTED_MEMORY:
                self._noted.popitem(last=False)
            # The interaction is taken now: once the final edit is out, it is forgotten.
            self._spawn(self._note_owner(job, view, self.live_interaction(job, shown.message_id)))

    async def announce(self, job: Job) -> None:
        """The one path to a new job's status message: a command's or click's is its deferred
        response (known already; events render it); a reaction's is posted now."""
        if needs_status(job):
            try:
                await self.ensure_status(job)
            except discord.HTTPException:
                # The job runs anyway; its result is posted (or its failure reported) at the end.
                log.warning("could not post the status message of %s", job.id, exc_info=True)

    def offer_view(self, token: str) -> discord.ui.View:
        """Confirm / Decline for a request that waits for its owner (the core's NeedsConfirmation)."""
        return offer_components(token)

    def show_deleted(self, job: Job, *, skip: int | None = None) -> None:
        """A deleted job: its status message and its result post say so (the result loses its file)."""
        view = status_view(job)
        if job.origin.status_message_id and job.origin.channel_id and int(job.origin.status_message_id) != skip:
            self._offer(self._status_of(job), view)
        result_id = job.origin.result_message_id
        if result_id and job.origin.channel_id and int(result_id) != skip:
            result = self._shown.get(f"r:{job.id}") or self._shown.setdefault(
                f"r:{job.id}", Shown(f"r:{job.id}", job, int(job.origin.channel_id), int(result_id))
            )
            self._offer(result, view, clear_files=True)

    def _status_of(self, job: Job) -> Shown:
        key = f"s:{job.id}"
        shown = self._shown.get(key)
        if shown is None:
            shown = self._shown[key] = Shown(key, job)
        shown.job = job
        origin = job.origin
        if shown.message_id is None and origin.status_message_id and origin.channel_id:
            shown.channel_id, shown.message_id = int(origin.channel_id), int(origin.status_message_id)
        return shown

    def _offer(self, shown: Shown, view: StatusView, *, clear_files: bool = False) -> None:
        """Hand the rendered view to the budget its message is edited under (unless it is unchanged)."""
        assert shown.message_id is not None and shown.channel_id is not None
        actions = view.actions
        if view.phase is Phase.DONE and shown.job.origin.result_message_id and not clear_files:
            actions = ()  # the result post carries the finished job's buttons
        content = status_content(view)
        rendered = (content, actions, clear_files)
        if rendered == shown.offered:
            return
        shown.offered = rendered
        shown.seq += 1
        limit = self._limit_for(shown)
        edit = Edit(shown, shown.seq, limit, content, actions, view.final, clear_files, view.phase, view.takes)
        self.pool.get(limit).offer(shown.key, edit, final=view.final)

    def _limit_for(self, shown: Shown) -> LimitKey:
        if shown.key.startswith("s:") and self.live_interaction(shown.job, shown.message_id) is not None:
            return ("webhook", shown.message_id or 0)
        return ("channel", shown.channel_id or 0)

    # --- sending ----------------------------------------------------------------------------

    async def _send(self, key: Hashable, edit: Edit) -> None:
        shown = edit.shown
        async with shown.lock:
            if edit.seq <= shown.sent_seq:
                return  # a newer state of this message went out another way (the token switch)
            try:
                await self.adapter.ready.wait()
                await self.adapter.acks.wait()
                sent = await self._edit(shown, edit)
            except discord.RateLimited as exc:  # a wait longer than discord.py agreed to sit out
                raise Throttled(exc.retry_after) from exc
            except discord.HTTPException as exc:
                if exc.status == 429:  # discord.py's own tries are used up
                    raise Throttled(_retry_after(exc)) from exc
                if exc.status >= 500:
                    self._passing_failure(shown, edit, exc)
                    return
                # Deleted message, lost access: the job goes on; /job still shows it.
                log.warning("status edit of %s failed: %s %s", shown.job.id, exc.status, exc.text)
                self._edit_failed(shown, edit)
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._passing_failure(shown, edit, exc)
                return
            if not sent:
                return
            shown.sent_seq = edit.seq
            shown.failures = 0
            if edit.final and shown.seq == edit.seq:
                self._forget(shown)

    async def _edit(self, shown: Shown, edit: Edit) -> bool:
        """One edit; False when it was handed to the channel's budget instead (the token expired)."""
        assert shown.message_id is not None and shown.channel_id is not None
        if is_guest(shown.job) and self.live_interaction(shown.job, shown.message_id) is None:
            # The bot cannot edit in a server it is not in; the result (by DM by then) says the rest.
            self._forget(shown)
            return False
        view = components(shown.job.id, edit.actions, prefix=marks.STATUS_PREFIX, takes=edit.takes)
        extra: dict[str, Any] = {"attachments": []} if edit.clear_files else {}
        if edit.limit[0] == "webhook":
            interaction = self.live_interaction(shown.job, shown.message_id)
            if interaction is not None:
                try:
                    await interaction.edit_original_response(content=edit.content, view=view, **extra)
                    return True
                except discord.HTTPException as exc:
                    if not is_token_gone(exc):
                        raise
                    self.forget_interaction(shown.message_id)
            # The token is gone: this message is edited under the channel's budget from now on.
            moved = replace(edit, limit=("channel", shown.channel_id))
            self.pool.get(moved.limit).offer(shown.key, moved, final=edit.final)
            self._spawn(self.pool.retire(edit.limit))
            return False
        channel = self.adapter.client.get_partial_messageable(shown.channel_id)
        await channel.get_partial_message(shown.message_id).edit(content=edit.content, view=view, **extra)
        return True

    def _passing_failure(self, shown: Shown, edit: Edit, exc: BaseException) -> None:
        shown.failures += 1
        if shown.failures < EDIT_TRIES:
            log.info("status edit of %s failed (%s); trying again", shown.job.id, exc)
            raise Throttled(None) from exc  # nothing changed; the budget slows down and sends it again
        log.warning("status edit of %s failed %d times; the next state will be sent", shown.job.id, shown.failures)
        shown.failures = 0
        shown.offered = None  # so an identical next state is not skipped

    def _edit_failed(self, shown: Shown, edit: Edit) -> None:
        shown.offered = None
        if edit.final:
            self._forget(shown)
            if shown.job.error_code == "undelivered" and edit.phase is Phase.DONE:
                # The channel is gone or closed to the bot: the owner hears it privately
                # (in the background: the channel's budget is not held up by a DM).
                self._spawn(self.tell(shown.job.origin.user_id, edit.content))

    def _forget(self, shown: Shown) -> None:
        """The job's last state is out: drop what was kept for its message (and its webhook budget)."""
        self._shown.pop(shown.key, None)
        if shown.key.startswith("s:") and shown.message_id is not None:
            self.forget_interaction(shown.message_id)
            if self.pool.find(("webhook", shown.message_id)) is not None:
                self._spawn(self.pool.retire(("webhook", shown.message_id)))

    # --- private notes ----------------------------------------------------------------------

    async def _note_owner(self, job: Job, view: StatusView, interaction: discord.Interaction | None) -> None:
        """The full failure, privately: an ephemeral follow-up while the token lives, else a DM."""
        text = failure_note(view)
        if interaction is not None and str(interaction.user.id) == job.origin.user_id:
            try:
                await interaction.followup.send(text, ephemeral=True)
                return
            except discord.HTTPException:
                log.info("ephemeral failure note for %s failed; sending it by DM", job.id, exc_info=True)
        await self.tell(job.origin.user_id, text)

    async def dm_channel(self, user_id: str | int) -> discord.PartialMessageable:
        data = await self.adapter.client.http.start_private_message(int(user_id))
        return self.adapter.client.get_partial_messageable(int(data["id"]), type=discord.ChannelType.private)

    async def tell(self, user_id: str | int, text: str) -> None:
        """A DM; best effort (users may refuse DMs from server members)."""
        if not str(user_id).isdigit():
            return
        try:
            await (await self.dm_channel(user_id)).send(text)
        except discord.HTTPException as exc:
            # Never the text: a note may hold a personal gallery link.
            log.warning("could not DM %s (%d characters): discord %s code %s", user_id, len(text), exc.status, exc.code)

    # --- status messages a job starts without (reactions) -----------------------------------

    async def ensure_status(self, job: Job) -> int | None:
        """Post the status message the job's origin says is due, once, and store its id.

        The job (with STATUS_REPLY_TO) is stored before this posts; the post carries a nonce
        derived from the job id, so Discord returns the same message if it is repeated within
        its nonce window; a job this process did not create (adopted after a restart) is first
        looked for in the channel's recent history. Concurrent callers share one post.
        """
        if job.origin.status_message_id:
            return int(job.origin.status_message_id)
        shown = self._shown.get(f"s:{job.id}")
        if shown is not None and shown.message_id is not None:
            return shown.message_id
        task = self._status_posts.get(job.id)
        if task is None:
            task = self._status_posts[job.id] = asyncio.create_task(self._post_status(job), name=f"discord-status-post-{job.id}")
            task.add_done_callback(lambda _: self._status_posts.pop(job.id, None))
        return await asyncio.shield(task)

    async def _ensure_status_quietly(self, job: Job) -> None:
        try:
            await self.ensure_status(job)
        except Exception:
            self._status_failed[job.id] = time.monotonic()
            log.warning("could not post the status message of %s; its result still comes", job.id, exc_info=True)

    async def _post_status(self, job: Job) -> int | None:
        if not job.origin.channel_id:
            return None
        await self.adapter.ready.wait()
        channel = self.adapter.client.get_partial_messageable(int(job.origin.channel_id))
        reply_to = job.origin.extra.get(STATUS_REPLY_TO)
        message: discord.Message | discord.PartialMessage | None = None
        if job.created_at < self.adapter.started_at:
            # Another process made this job and may have posted before it died.
            bot_id = self.adapter.bot_user_id
            message = await self.scan(channel, lambda m: marks.is_status_of(m, job.id, bot_id), after=_int(reply_to))
        if message is None:
            view = status_view(job)
            reference = channel.get_partial_message(int(reply_to)).to_reference(fail_if_not_exists=False) if reply_to else None
            message = await channel.send(
                status_content(view), reference=reference, nonce=marks.status_nonce(job.id),
                view=components(job.id, view.actions, prefix=marks.STATUS_PREFIX),
            )  # fmt: skip
            shown = self._status_of(job)
            shown.offered = (status_content(view), view.actions, False)
        job = await self.adapter.service.set_messages(job.id, status_message_id=str(message.id))
        shown = self._status_of(job)
        if shown.latest is not None:
            self._offer(shown, shown.latest)  # whatever the job reached meanwhile
            shown.latest = None
        return message.id

    async def scan(self, channel: discord.PartialMessageable, matches: Any, *, after: int | None) -> discord.Message | None:
        """An earlier post in the channel's recent history, or None (also when history is not
        readable: then only the nonce protects against a second post)."""
        try:
            return await marks.find_recent(channel, matches, after=after)
        except discord.Forbidden:
            log.warning("cannot read the history of channel %s (Read Message History?)", channel.id)
            return None

    # --- life cycle -------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)  # held, or the loop may drop it mid-flight
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait until every pending state was sent (tests, shutdown)."""
        await self.pool.drain()

    async def close(self) -> None:
        """Give pending states (finals first) a moment to go out, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pool.drain(), FLUSH_ON_STOP_SECONDS)
        await self.pool.close()
        tasks = [*self._background, *self._status_posts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def needs_status(job: Job) -> bool:
    """The job was made without a status message and one is due (STATUS_REPLY_TO is stored)."""
    return not job.origin.status_message_id and bool(job.origin.channel_id) and STATUS_REPLY_TO in job.origin.extra


def _int(value: str | int | None) -> int | None:
    return int(value) if value else None


def _retry_after(exc: discord.HTTPException) -> float | None:
    value = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None
