"""Status messages and result posts: what the user sees of a job in Discord.

One status message per job, edited in place and coalesced (at most one edit per
`edit_interval_seconds`; the latest state always wins and the final state is always
sent). Events can arrive before the status message exists: the latest one is kept and
rendered as soon as the message is known. While the interaction token is fresh the
edits go through it; before it expires, and for jobs adopted after a restart, they go
through the bot token on the same message, so the user sees no difference.

Results are posted once per job (see `deliver` and `marks`): a repeated attempt finds the
earlier post instead of making a second one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.adapters.discord_bot import marks
from bot.adapters.discord_bot.buttons import result_view
from bot.adapters.discord_bot.errors import delivery_failure, is_too_large, is_token_gone
from bot.core.errors import DeliveryFailed
from bot.core.models import Job, JobKind, ProgressEvent
from bot.core.render import job_title, status_line
from providers.media import fit_to_size

if TYPE_CHECKING:
    from bot.adapters.discord_bot.client import DiscordAdapter

log = logging.getLogger(__name__)

#: Discord's interaction tokens live this long.
TOKEN_LIFETIME = 15 * 60
MAX_PROMPT_SHOWN = 300
#: How long a delivery waits for the client to log in before it counts as a transient failure.
READY_TIMEOUT = 30.0
#: After a failed status post, events do not retry it for this long (the result still comes).
STATUS_RETRY_SECONDS = 30.0
#: origin.extra key of a job that starts without a status message (a re-roll by reaction): the
#: message the status message will answer. Stored with the job, before anything is posted, so
#: whichever process drives the job knows a status message is due and where.
STATUS_REPLY_TO = "status_reply_to"


@dataclass
class Tracked:
    job: Job
    event: ProgressEvent | None = None
    channel_id: int | None = None
    message_id: int | None = None
    rendered: str | None = None
    last_sent: float = float("-inf")
    timer: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def status_text(job: Job, event: ProgressEvent | None) -> str:
    prompt = job.prompt if len(job.prompt) <= MAX_PROMPT_SHOWN else job.prompt[: MAX_PROMPT_SHOWN - 1] + "…"
    line = status_line(event) if event is not None else "⏳ Queued"
    return f"**{job_title(job)}**\n> {prompt}\n{line}"


class StatusSurface:
    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter
        self.interval = adapter.settings.edit_interval_seconds
        self.margin = adapter.settings.token_margin_seconds
        self._jobs: dict[str, Tracked] = {}
        #: Live interactions whose original response is a status message, by that message's id.
        self._interactions: dict[int, discord.Interaction] = {}
        #: Status messages being posted, by job id: one post however many callers ask for it.
        self._status_posts: dict[str, asyncio.Task[int | None]] = {}
        self._status_failed: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    # --- where the status message is --------------------------------------------------------

    def register_interaction(self, message_id: int, interaction: discord.Interaction) -> None:
        self._interactions[message_id] = interaction

    def forget_interaction(self, message_id: int) -> None:
        self._interactions.pop(message_id, None)

    def attach(self, job: Job, channel_id: int, message_id: int) -> None:
        """The status message now exists: render whatever state the job reached meanwhile."""
        tracked = self._track(job)
        tracked.channel_id, tracked.message_id = channel_id, message_id
        self._schedule(tracked)

    def _track(self, job: Job) -> Tracked:
        tracked = self._jobs.get(job.id)
        if tracked is None:
            tracked = self._jobs[job.id] = Tracked(job=job)
        origin = job.origin
        if tracked.message_id is None and origin.status_message_id and origin.channel_id:
            tracked.channel_id, tracked.message_id = int(origin.channel_id), int(origin.status_message_id)
        return tracked

    # --- events -----------------------------------------------------------------------------

    async def on_event(self, event: ProgressEvent) -> None:
        tracked = self._track(event.job)
        tracked.job, tracked.event = event.job, event
        if (
            tracked.message_id is None
            and needs_status(event.job)
            and time.monotonic() - self._status_failed.get(event.job.id, float("-inf")) > STATUS_RETRY_SECONDS
        ):
            # Its status message is due but not known here (e.g. adopted after a restart).
            background = asyncio.create_task(self._ensure_status_quietly(event.job))
            self._background.add(background)  # held, or the loop may drop it mid-flight
            background.add_done_callback(self._background.discard)
        self._schedule(tracked)

    # --- status messages a job starts without (re-rolls by reaction) ------------------------

    async def ensure_status(self, job: Job) -> int | None:
        """Post the status message the job's origin says is due, once, and store its id.

        The job (with STATUS_REPLY_TO) is stored before this posts; the post carries a nonce
        derived from the job id, so Discord returns the same message if it is repeated within
        its nonce window; a job this process did not create (adopted after a restart) is first
        looked for in the channel's recent history. Concurrent callers share one post.
        """
        if job.origin.status_message_id:
            return int(job.origin.status_message_id)
        tracked = self._jobs.get(job.id)
        if tracked is not None and tracked.message_id is not None:
            return tracked.message_id
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
            message = await self._scan(channel, lambda m: marks.is_status_of(m, job.id, bot_id), after=_int(reply_to))
        if message is None:
            reference = channel.get_partial_message(int(reply_to)).to_reference(fail_if_not_exists=False) if reply_to else None
            message = await channel.send(
                status_text(job, None), reference=reference, nonce=marks.status_nonce(job.id),
                allowed_mentions=discord.AllowedMentions.none(),
            )  # fmt: skip
        await self.adapter.app.service.set_messages(job.id, status_message_id=str(message.id))
        self.attach(job, int(job.origin.channel_id), message.id)
        return message.id

    async def _scan(self, channel: discord.PartialMessageable, matches: Any, *, after: int | None) -> discord.Message | None:
        """An earlier post in the channel's recent history, or None (also when history is not
        readable: then only the nonce protects against a second post)."""
        try:
            return await marks.find_recent(channel, matches, after=after)
        except discord.Forbidden:
            log.warning("cannot read the history of channel %s (Read Message History?)", channel.id)
            return None

    def _schedule(self, tracked: Tracked) -> None:
        if tracked.message_id is None or tracked.timer is not None:
            return  # no message yet, or an edit is already due and will take the latest state
        delay = max(0.0, tracked.last_sent + self.interval - time.monotonic())
        tracked.timer = asyncio.create_task(self._flush_later(tracked, delay), name=f"discord-status-{tracked.job.id}")

    async def _flush_later(self, tracked: Tracked, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        tracked.timer = None
        await self._render(tracked)

    async def _render(self, tracked: Tracked) -> None:
        async with tracked.lock:
            event = tracked.event
            text = status_text(tracked.job, event)
            if text != tracked.rendered:
                tracked.last_sent = time.monotonic()
                try:
                    await self.adapter.ready.wait()
                    await self._edit_status(tracked, text)
                    tracked.rendered = text
                except discord.HTTPException:
                    # Deleted message, lost permission: the job goes on; /job still shows it.
                    log.warning("status edit failed for %s", tracked.job.id, exc_info=True)
                    if event is not None and event.kind.final and undelivered(tracked.job):
                        # The channel is gone or closed to the bot: the owner hears it privately.
                        await self._tell_owner(tracked.job, text)
            if event is not None and event.kind.final and tracked.timer is None:
                self._jobs.pop(tracked.job.id, None)
                if tracked.message_id is not None:
                    self.forget_interaction(tracked.message_id)

    async def _tell_owner(self, job: Job, text: str) -> None:
        if not job.origin.user_id.isdigit():
            return
        try:
            data = await self.adapter.client.http.start_private_message(int(job.origin.user_id))
            channel = self.adapter.client.get_partial_messageable(int(data["id"]), type=discord.ChannelType.private)
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException:
            log.warning("could not tell the owner of %s that its result was not posted", job.id, exc_info=True)

    async def _edit_status(self, tracked: Tracked, text: str) -> None:
        assert tracked.message_id is not None and tracked.channel_id is not None
        interaction = self._live_interaction(tracked.job, tracked.message_id)
        if interaction is not None:
            await interaction.edit_original_response(content=text)
            return
        channel = self.adapter.client.get_partial_messageable(tracked.channel_id)
        await channel.get_partial_message(tracked.message_id).edit(content=text)

    def _live_interaction(self, job: Job, message_id: int) -> discord.Interaction | None:
        """The interaction behind this status message while its token has time left, else None."""
        interaction = self._interactions.get(message_id)
        if interaction is None:
            return None
        expires = job.origin.extra.get("interaction_expires_at") or interaction.created_at.timestamp() + TOKEN_LIFETIME
        if time.time() >= float(expires) - self.margin:
            self.forget_interaction(message_id)  # from now on this job speaks with the bot token
            return None
        return interaction

    async def close(self) -> None:
        timers: list[asyncio.Task[Any]] = [t.timer for t in self._jobs.values() if t.timer is not None]
        timers += [*self._background, *self._status_posts.values()]
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    async def flush(self) -> None:
        """Send every pending edit now (tests and shutdown)."""
        for tracked in list(self._jobs.values()):
            if tracked.timer is not None:
                tracked.timer.cancel()
                tracked.timer = None
            if tracked.message_id is not None:
                await self._render(tracked)

    # --- results ----------------------------------------------------------------------------

    async def deliver(self, job: Job) -> dict[str, Any] | None:
        """Post the result (file, note, buttons) under the status message, once; return its id.

        Raises DeliveryFailed: transient (Discord 5xx or 429 left over after discord.py's own
        retries, no connection, the adapter not running) or permanent (channel gone, access or
        permission lost, file refused).
        """
        if job.origin.result_message_id:
            return {"result_message_id": job.origin.result_message_id}  # posted and stored earlier
        try:
            await self._connected()
            message = await self._deliver(job)
        except Exception as exc:
            if self.adapter.stopped and not isinstance(exc, DeliveryFailed):
                raise DeliveryFailed("The bot is disconnected from Discord.", transient=True, detail=repr(exc)) from exc
            failure = delivery_failure(exc, job.id)
            if failure is None or failure is exc:
                raise
            raise failure from exc
        if message is None:
            return None
        return {"result_message_id": str(message.id)}

    async def _connected(self) -> None:
        if self.adapter.stopped:
            raise DeliveryFailed("The bot is not connected to Discord.", transient=True)
        try:
            await asyncio.wait_for(self.adapter.ready.wait(), READY_TIMEOUT)
        except TimeoutError:
            raise DeliveryFailed("The bot is not connected to Discord yet.", transient=True) from None

    async def _deliver(self, job: Job) -> discord.Message | None:
        if not job.origin.channel_id:
            return None
        status_id = job.origin.status_message_id
        if status_id is None and needs_status(job):
            status_id = str(await self.ensure_status(job) or "") or None
        channel = self.adapter.client.get_partial_messageable(int(job.origin.channel_id))
        if job.delivery_attempt > 1:
            # An earlier attempt may have posted and died before its id was stored. Look first.
            bot_id = self.adapter.bot_user_id
            found = await self._scan(channel, lambda m: marks.is_result_of(m, job.id, bot_id), after=_int(status_id))
            if found is not None:
                log.info("result of %s was already posted (message %s); not posting again", job.id, found.id)
                return found
        interaction = self._live_interaction(job, int(status_id)) if status_id else None
        limit = interaction.filesize_limit if interaction is not None else self.adapter.upload_limit(job.origin.workspace_id)
        file, note = await self.prepare_file(job, limit)
        mention = f"<@{job.origin.user_id}> " if job.origin.user_id.isdigit() else ""
        content = f"{mention}**{job_title(job)}**\n> {job.prompt[:MAX_PROMPT_SHOWN]}" + (f"\n{note}" if note else "")
        kwargs: dict[str, Any] = {
            "view": result_view(job),
            "allowed_mentions": discord.AllowedMentions(users=True, everyone=False, roles=False),
        }
        if file is not None:
            kwargs["file"] = file
        try:
            try:
                return await self._post_result(job, channel, status_id, interaction, content, kwargs)
            except discord.HTTPException as exc:
                if not is_too_large(exc) or "file" not in kwargs:
                    raise
                # Discord's limit was lower than announced: say so rather than lose the result.
                # (Same nonce: the refused create made nothing, so the nonce is still unused.)
                del kwargs["file"]
                note = f"⚠️ Discord refused the file as too large ({_mb(limit)} was the announced limit). Use /job {job.id} for details."
                return await self._post_result(job, channel, status_id, interaction, f"{content}\n{note}", kwargs)
        except discord.HTTPException as exc:
            if interaction is not None and status_id and is_token_gone(exc):
                self.forget_interaction(int(status_id))  # the next attempt uses the bot token
            raise

    async def _post_result(
        self,
        job: Job,
        channel: discord.PartialMessageable,
        status_id: str | None,
        interaction: discord.Interaction | None,
        content: str,
        kwargs: dict[str, Any],
    ) -> discord.Message:
        if interaction is not None:
            # A webhook execute takes no nonce: a repeat is caught by the history scan above.
            return await interaction.followup.send(content, wait=True, **kwargs)
        reference = channel.get_partial_message(int(status_id)).to_reference(fail_if_not_exists=False) if status_id else None
        # discord.py (>= 2.4) sends `enforce_nonce: true` with every nonce: Discord answers a
        # repeat of this create within a few minutes with the message it already made.
        return await channel.send(content, reference=reference, nonce=marks.result_nonce(job.id), **kwargs)

    async def prepare_file(self, job: Job, limit: int) -> tuple[discord.File | None, str | None]:
        """The job's file if it fits `limit`; else a re-encode that fits; else the thumbnail and why."""
        if not job.output_path or not Path(job.output_path).exists():
            return None, "The file is no longer available."
        source = Path(job.output_path)
        size = source.stat().st_size
        if size <= limit:
            return discord.File(source, filename=_filename(job, source)), None
        if job.kind is not JobKind.IMAGE:
            fitted = source.with_name(f"{source.stem}.fit-{limit}.mp4")
            result = await asyncio.to_thread(fit_to_size, source, fitted, limit)
            if result.fits:
                note = (
                    f"-# Re-encoded to fit the {_mb(limit)} upload limit here "
                    f"({_mb(size)} → {_mb(result.size)}, {result.width}x{result.height})."
                )
                return discord.File(fitted, filename=f"{job.id}.mp4"), note
        note = (
            f"⚠️ The file is {_mb(size)}, over the {_mb(limit)} upload limit here, and could not be shrunk to fit, "
            "so here is a still. Ask for fewer seconds or a smaller size."
        )
        if job.thumbnail_path and Path(job.thumbnail_path).exists() and Path(job.thumbnail_path).stat().st_size <= limit:
            return discord.File(job.thumbnail_path, filename=f"{job.id}.jpg"), note
        return None, note


def undelivered(job: Job) -> bool:
    return job.error_code == "undelivered"


def needs_status(job: Job) -> bool:
    """The job was made without a status message and one is due (STATUS_REPLY_TO is stored)."""
    return not job.origin.status_message_id and bool(job.origin.channel_id) and STATUS_REPLY_TO in job.origin.extra


def _int(value: str | int | None) -> int | None:
    return int(value) if value else None


def _filename(job: Job, source: Path) -> str:
    return f"{job.id}{source.suffix or ('.png' if job.kind is JobKind.IMAGE else '.mp4')}"


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 100 * 1024 else f"{size / 1024:.0f} KB"
