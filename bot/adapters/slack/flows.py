"""What every listener shares: telling the user privately, showing a new job, doing a core action.

Listener modules (commands, actions, views, events, shortcuts) import this module, never
the adapter module (`app.py` registers them); the adapter is passed in, typed only.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.adapters.slack.apierror import slack_error
from bot.adapters.slack.blocks import esc, offer_blocks
from bot.core.actions import perform
from bot.core.errors import JobStateError, NeedsConfirmation, user_message
from bot.core.models import Actor, Job
from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

#: Slack's own refusals to post, and what the user can do about each (not core errors).
_POST_REFUSALS = {
    "not_in_channel": "I am not in this channel. Invite me with /invite @videobot, then try again.",
    "channel_not_found": "I cannot see this channel. Invite me with /invite @videobot, then try again.",
    "is_archived": "This channel is archived. Try another channel.",
    "restricted_action": "This workspace does not let me post here. Try another channel.",
}


Send = Callable[[str, list[dict[str, Any]] | None], Awaitable[None]]


class Tell:
    """A private answer to one user. `tell(text)` shows text as typed (escaped); `markup` is the bot's own mrkdwn;
    `refusal(exc)` is the Slack side's one error handler: every listener's failure is answered through it."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def __call__(self, text: str) -> None:
        await self.markup(esc(text))

    async def markup(self, mrkdwn: str, blocks: list[dict[str, Any]] | None = None) -> None:
        try:
            await self._send(mrkdwn, blocks)
        except Exception:
            # Never the text: an answer may hold a personal gallery link.
            log.warning("could not tell the user (%d characters)", len(mrkdwn), exc_info=True)

    async def refusal(self, exc: Exception) -> None:
        """Why a request did not start; a spend waiting for its owner comes with Confirm / Decline buttons."""
        if isinstance(exc, NeedsConfirmation):
            text = user_message(exc)
            await self.markup(esc(text), offer_blocks(text, exc.token))
            return
        await self(user_message(exc))


def respond_teller(respond: Any) -> Tell:
    """Ephemeral through the request's response_url (works even where the bot is not a member)."""

    async def send(text: str, blocks: list[dict[str, Any]] | None) -> None:
        await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)

    return Tell(send)


def ephemeral_teller(adapter: SlackHost, channel_id: str, user_id: str, thread_ts: str | None = None, *, team_id: str | None = None) -> Tell:
    """Ephemeral with chat.postEphemeral (with the token of the user's workspace), for requests
    without a response_url (modals, reactions)."""

    async def send(text: str, blocks: list[dict[str, Any]] | None) -> None:
        try:
            client = await adapter.client_for(team_id)
            await client.chat_postEphemeral(channel=channel_id, user=user_id, text=text, blocks=blocks, thread_ts=thread_ts)
        except SlackClientError as exc:
            # Never the text: a reply may hold a personal gallery link.
            why = slack_error(exc) if isinstance(exc, SlackApiError) else exc
            log.warning("could not tell %s a private answer (%d characters): %s", user_id, len(text), why)

    return Tell(send)


async def show_job(adapter: SlackHost, job: Job, tell: Tell) -> None:
    """A job just started: post its status message (the job is stored first, so a refused one never shows)."""
    try:
        await adapter.surface.post_status(job)
    except SlackApiError as exc:
        error = slack_error(exc)
        adapter.surface.forget(job.id)
        # Nobody could see its progress or result: stop it rather than spend on it.
        try:
            await adapter.service.cancel(job.id, Actor(user_id=job.origin.user_id))
        except JobStateError:
            pass
        await tell(_POST_REFUSALS.get(error, f"Slack refused my message ({error}), so job {job.id} was cancelled. Try again later."))
    except Exception as exc:
        if adapter.closed:
            # Stopped mid-post: the message may be up; the next start finds it by its metadata.
            log.info("job %s: stopped while posting its status message; the next start adopts or posts it", job.id)
            return
        if not isinstance(exc, (aiohttp.ClientError, TimeoutError)):
            raise
        # Slack did not answer (twice): the job goes on; its file is posted in the channel when done.
        log.warning("job %s: status message not posted: %r", job.id, exc)
        await tell(f"Slack is not answering, so job {job.id} shows no progress here; its result is posted here when done.")


async def act(
    adapter: SlackHost,
    action: Action,
    job_id: str,
    *,
    user: dict[str, Any],
    channel: str,
    tell: Tell,
    prompt: str | None = None,
    seconds: int | None = None,
    thread_ts: str | None = None,
    scene: int | None = None,
    take: int | None = None,
) -> None:
    """A button, reaction or modal: the core's `perform` decides; this shows the outcome in Slack."""
    service = adapter.service
    user_id, team_id = str(user["id"]), user.get("team_id")
    origin = adapter.origin_for(team_id, channel, user_id, user.get("username") or user.get("name"))
    if thread_ts:
        origin.extra["thread_ts"] = thread_ts
    try:
        job = await service.get_for(job_id, origin)  # in the asker's workspace only
        # Only an owner check needs to know whether someone else is a workspace admin.
        checks_owner = action in (Action.CANCEL, Action.DELETE) and user_id != job.origin.user_id
        actor = await adapter.actor(user_id, team_id=team_id, check_workspace_admin=checks_owner)
        outcome = await perform(service, action, job.id, actor=actor, origin=origin, prompt=prompt, seconds=seconds, scene=scene, take=take)
    except Exception as exc:
        await tell.refusal(exc)
        return
    if outcome.started:
        await show_job(adapter, outcome.job, tell)
    elif outcome.job.deleted_at is not None:
        await adapter.surface.remove(outcome.job)
    # A cancel shows on the card itself; nothing more to say.


def reply_thread(message: dict[str, Any] | None) -> str | None:
    """The thread a message is a reply in (None for a top-level message): new jobs started from it go there too."""
    if not message:
        return None
    thread = message.get("thread_ts")
    return str(thread) if thread and thread != message.get("ts") else None
