"""Result posts: the finished file (as `bot.core.uploads.prepare_upload` decides), its buttons,
a mention of the requester, posted once per job.

The result goes out with the bot token whenever the bot may post in the channel (the
interaction says so when the command arrives): such a create carries a nonce made from the
job id, which Discord dedupes, so even discord.py's own retry after a 5xx cannot post it
twice. Only where the bot may not post (no Send Messages / Attach Files there, e.g. a
user-installed app) does it go out as an interaction follow-up while the token lives; a
follow-up takes no nonce, so a repeat is caught by a look at the channel's history. Either
way it is a reply under the status message, with the same text, file and buttons.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.adapters.discord_bot import marks
from bot.adapters.discord_bot.buttons import components
from bot.adapters.discord_bot.errors import (
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    delivery_failure,
    is_too_large,
    is_token_gone,
)
from bot.adapters.discord_bot.flows import is_guest
from bot.adapters.discord_bot.render import dm_content, result_content, result_mentions
from bot.adapters.discord_bot.stories import result_files
from bot.adapters.discord_bot.status import needs_status
from bot.core.errors import DeliveryFailed
from bot.adapters.discord_bot.takes import set_content, set_files
from bot.core.models import Job, JobKind
from bot.core.uploads import Upload, mb, prepare_upload
from bot.core.views import Phase, actions_for, status_view

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

log = logging.getLogger(__name__)

#: How long a delivery waits for the client to log in before it counts as a transient failure.
READY_TIMEOUT = 30.0
#: What the bot must be allowed in a channel to post a result there itself.
POST_PERMISSIONS = discord.Permissions(send_messages=True, attach_files=True)


class Delivery:
    def __init__(self, adapter: DiscordHost) -> None:
        self.adapter = adapter

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
        surface = self.adapter.surface
        status_id = job.origin.status_message_id
        if status_id is None and needs_status(job):
            status_id = str(await surface.ensure_status(job) or "") or None
        channel = self.adapter.client.get_partial_messageable(int(job.origin.channel_id))
        interaction = surface.live_interaction(job, _int(status_id))
        if is_guest(job):
            # The bot cannot post or read in that server: the interaction answers while its token
            # lives; after that the result goes to the user privately (never lost).
            if interaction is None:
                return await self._by_dm(job)
            try:
                return await self._post(job, channel, status_id, interaction)
            except discord.HTTPException as exc:
                if not is_token_gone(exc):
                    raise
                surface.forget_interaction(int(status_id or 0))
                return await self._by_dm(job)
        if job.delivery_attempt > 1:
            # An earlier attempt may have posted and died before its id was stored. Look first.
            bot_id = self.adapter.bot_user_id
            found = await surface.scan(channel, lambda m: marks.is_result_of(m, job.id, bot_id), after=_int(status_id))
            if found is not None:
                log.info("result of %s was already posted (message %s); not posting again", job.id, found.id)
                return found
        if interaction is None or may_post(job):
            try:
                return await self._post(job, channel, status_id, None)
            except discord.Forbidden as exc:
                if interaction is None or exc.code not in (MISSING_PERMISSIONS, MISSING_ACCESS):
                    raise
                # Refused before anything was made: the interaction can still answer.
                log.info("bot may not post the result of %s in its channel; using the interaction", job.id)
        assert interaction is not None
        try:
            return await self._post(job, channel, status_id, interaction)
        except discord.HTTPException as exc:
            if status_id and is_token_gone(exc):
                surface.forget_interaction(int(status_id))  # the next attempt uses the bot token
            raise

    async def _post(
        self, job: Job, channel: discord.PartialMessageable, status_id: str | None, interaction: discord.Interaction | None
    ) -> discord.Message:
        limit = interaction.filesize_limit if interaction is not None else self.upload_limit(job)
        kwargs: dict[str, Any] = {"allowed_mentions": result_mentions(job)}
        view = status_view(job, public_url=self.adapter.public_url)
        gallery = view.gallery_url
        buttons = components(job.id, actions_for(job, Phase.DONE), prefix=marks.RESULT_PREFIX, takes=view.takes)
        if buttons is not None:
            kwargs["view"] = buttons
        if job.kind is JobKind.TAKES:
            files, notes = await set_files(self.adapter.store, job, limit)
            return await self._send(job, channel, status_id, interaction, set_content(job, notes, gallery_url=gallery), None, {**kwargs, "files": files})
        upload = await prepare_upload(job, limit)
        try:
            return await self._send(job, channel, status_id, interaction, result_content(job, upload, gallery_url=gallery), upload, kwargs)
        except discord.HTTPException as exc:
            if not is_too_large(exc) or upload.path is None:
                raise
            # Discord's limit was lower than announced: say so rather than lose the result.
            # (Same nonce: the refused create made nothing, so the nonce is still unused.)
            note = f"⚠️ Discord refused the file as too large ({mb(limit)} was the announced limit). Use /job {job.id} for details."
            return await self._send(job, channel, status_id, interaction, result_content(job, None, extra_note=note, gallery_url=gallery), None, kwargs)

    async def _send(
        self,
        job: Job,
        channel: discord.PartialMessageable,
        status_id: str | None,
        interaction: discord.Interaction | None,
        content: str,
        upload: Upload | None,
        kwargs: dict[str, Any],
    ) -> discord.Message:
        if upload is not None and upload.path is not None:
            kwargs = {**kwargs, "files": result_files(job, upload)}
        if interaction is not None:
            # A webhook execute takes no nonce: a repeat is caught by the history scan.
            return await interaction.followup.send(content, wait=True, **kwargs)
        reference = None
        if status_id and may_reply(job):
            reference = channel.get_partial_message(int(status_id)).to_reference(fail_if_not_exists=False)
        # discord.py (>= 2.4) sends `enforce_nonce: true` with every nonce: Discord answers a
        # repeat of this create within a few minutes with the message it already made.
        return await channel.send(content, reference=reference, nonce=marks.result_nonce(job.id), **kwargs)

    def upload_limit(self, job: Job) -> int:
        """The cap for bot-token uploads: the guild's (boosts raise it), no more than the
        interaction announced when the command came (what the requester's context allows)."""
        limit = self.adapter.upload_limit(job.origin.workspace_id)
        announced = job.origin.extra.get("filesize_limit")
        return min(limit, int(announced)) if announced else limit

    async def _by_dm(self, job: Job) -> discord.Message:
        """The result by DM to its owner, with a note saying why it is not where they asked."""
        channel = await self.adapter.surface.dm_channel(job.origin.user_id)
        upload = await prepare_upload(job, discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)
        note = "I could not answer in that channel any more (the 15-minute window had passed), so here it is privately."
        gallery = status_view(job, public_url=self.adapter.public_url).gallery_url
        content = result_content(job, upload, extra_note=note, gallery_url=gallery)
        kwargs: dict[str, Any] = {"allowed_mentions": discord.AllowedMentions.none()}
        if upload.path is not None:
            kwargs["files"] = result_files(job, upload)
        log.info("result of %s goes to its owner by DM: the interaction token is gone and the bot is not in that server", job.id)
        return await channel.send(content, nonce=marks.result_nonce(job.id), **kwargs)

    async def send_file_by_dm(self, job: Job, user_id: int | str, text: str) -> None:
        """✉️: the job's file, privately (fitted to a DM's upload limit like any post)."""
        channel = await self.adapter.surface.dm_channel(user_id)
        upload = await prepare_upload(job, discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES)
        content = dm_content(text, upload)
        if upload.path is not None:
            await channel.send(content, file=discord.File(upload.path, filename=upload.filename))
        else:
            await channel.send(content)


def may_post(job: Job) -> bool:
    """Whether the bot itself may post the result in the job's channel (as the command's
    interaction reported; jobs from reactions, and older jobs, were made where it could)."""
    if is_guest(job):
        return False  # whatever the permissions say, the bot is not a member there
    value = job.origin.extra.get("app_permissions")
    return value is None or discord.Permissions(int(value)) >= POST_PERMISSIONS


def may_reply(job: Job) -> bool:
    """Replies need Read Message History; without it the result is posted without the reference."""
    value = job.origin.extra.get("app_permissions")
    return value is None or discord.Permissions(int(value)).read_message_history


def _int(value: str | int | None) -> int | None:
    return int(value) if value else None
