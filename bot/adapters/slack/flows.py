"""The steps every job-starting request shares: submit, then the status message; errors to the user alone."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.adapters.slack.apierror import slack_error
from bot.core.errors import JobStateError, user_message
from bot.core.models import Actor, Job, Origin

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter

log = logging.getLogger(__name__)

StartJob = Callable[[Origin], Awaitable[Job]]
Tell = Callable[[str], Awaitable[None]]

#: Slack's own refusals to post, and what the user can do about each (not core errors).
_POST_REFUSALS = {
    "not_in_channel": "I am not in this channel. Invite me with /invite @videobot, then try again.",
    "channel_not_found": "I cannot see this channel. Invite me with /invite @videobot, then try again.",
    "is_archived": "This channel is archived. Try another channel.",
    "restricted_action": "This workspace does not let me post here. Try another channel.",
}


def respond_teller(respond: Any) -> Tell:
    """Ephemeral through the request's response_url (works even where the bot is not a member)."""

    async def tell(text: str) -> None:
        try:
            await respond(text=text, response_type="ephemeral", replace_original=False)
        except Exception:
            log.warning("could not tell the user: %s", text, exc_info=True)

    return tell


def ephemeral_teller(adapter: SlackAdapter, channel_id: str, user_id: str) -> Tell:
    """Ephemeral with chat.postEphemeral, for requests without a response_url (modals, reactions)."""

    async def tell(text: str) -> None:
        try:
            await adapter.client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)
        except SlackApiError as exc:
            log.warning("could not tell %s: %s (%s)", user_id, text, slack_error(exc))

    return tell


async def start_job(adapter: SlackAdapter, origin: Origin, start: StartJob, tell: Tell) -> Job | None:
    """Submit first (a refused job leaves the channel untouched), then post its status message."""
    try:
        job = await start(origin)
    except Exception as exc:
        await tell(user_message(exc))
        return None
    await show_job(adapter, job, tell)
    return job


async def show_job(adapter: SlackAdapter, job: Job, tell: Tell) -> None:
    try:
        await adapter.surface.post_status(job)
    except SlackApiError as exc:
        error = slack_error(exc)
        adapter.surface.forget(job.id)
        # Nobody could see its progress or result: stop it rather than spend on it.
        try:
            await adapter.app.service.cancel(job.id, Actor(user_id=job.origin.user_id))
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
