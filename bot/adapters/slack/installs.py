"""A workspace leaves: `app_uninstalled`, or `tokens_revoked` naming the bot's token.

Its installation is removed at once (a reinstall makes a new one, usable at once), and its jobs
still queued or running are cancelled: nothing can be posted there any more, so spending on them
would be waste. Their rows stay (history), each with an event saying why it was cancelled.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.core.errors import JobStateError
from bot.core.models import Actor

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    async def uninstalled(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        adapter.later(leave(adapter, body, "the app was uninstalled"), "slack-uninstalled")

    async def revoked(ack: Any, body: dict[str, Any], event: dict[str, Any]) -> None:
        await ack()
        if (event.get("tokens") or {}).get("bot"):  # user tokens alone: the bot's stays good
            adapter.later(leave(adapter, body, "the bot's token was revoked"), "slack-revoked")

    bolt.event("app_uninstalled")(uninstalled)
    bolt.event("tokens_revoked")(revoked)


async def leave(adapter: SlackHost, body: dict[str, Any], why: str) -> None:
    team_id, enterprise_id = body.get("team_id"), body.get("enterprise_id")
    org_wide = bool(body.get("is_enterprise_install"))
    removed = await adapter.forget_workspace(None if org_wide else team_id, enterprise_id)
    where = enterprise_id if org_wide else team_id
    log.info("Slack workspace %s: %s; installation %s", where, why, "removed" if removed else "was not stored")
    service, store = adapter.service, adapter.store
    cancelled = 0
    for job in await store.unfinished([adapter.platform]):
        origin = job.origin
        mine = origin.extra.get("enterprise_id") == enterprise_id if org_wide else origin.workspace_id == team_id
        if not mine:
            continue
        try:
            await store.add_event(job.id, f"cancelled: {why} in Slack workspace {where}; nothing can be posted there any more")
            await service.cancel(job.id, Actor(user_id=origin.user_id))
            cancelled += 1
        except JobStateError:
            pass  # finished meanwhile
        except Exception:
            log.warning("job %s: not cancelled after %s", job.id, why, exc_info=True)
    if cancelled:
        log.info("Slack workspace %s: cancelled %d queued or running job(s) (%s)", where, cancelled, why)
