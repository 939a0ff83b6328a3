"""Reactions on a job's status or result message: 🔁 (`repeat`) re-rolls, ❌ (`x`) cancels or deletes.

The job is found through the store by message ts, so this works for messages from before
a restart, and, in the moment before a new message's ts is stored, through the job id the
message itself carries (status metadata, file title). Reactions anywhere else are none of
the bot's business and are ignored silently.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.flows import ephemeral_teller, start_job
from bot.core.errors import user_message
from bot.core.models import Actor

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter

REROLL, CANCEL = "repeat", "x"


def register(bolt: AsyncApp, adapter: SlackAdapter) -> None:
    async def reaction_added(event: dict[str, Any]) -> None:
        await on_reaction(adapter, event)

    bolt.event("reaction_added")(reaction_added)


async def on_reaction(adapter: SlackAdapter, event: dict[str, Any]) -> None:
    item = event.get("item") or {}
    reaction = str(event.get("reaction", "")).split("::")[0]  # skin tones arrive as name::skin-tone-N
    if item.get("type") != "message" or reaction not in (REROLL, CANCEL):
        return
    service = adapter.app.service
    user_id, channel = str(event["user"]), str(item["channel"])
    author = event.get("item_user")
    job = await adapter.surface.job_for_message(channel, str(item.get("ts")), str(author) if author else None)
    if job is None or (job.origin.channel_id and job.origin.channel_id != channel):
        return
    tell = ephemeral_teller(adapter, channel, user_id)
    if reaction == REROLL:
        origin = adapter.origin_for(job.origin.workspace_id, channel, user_id, None)
        await start_job(adapter, origin, lambda o: service.reroll(job.id, o), tell)
        return
    try:
        actor = Actor(user_id=user_id)  # owner only (and the bot's own admins, as the service says)
        if not job.terminal:
            await service.cancel(job.id, actor)
        else:
            await adapter.surface.remove(await service.delete(job.id, actor))
    except Exception as exc:
        await tell(user_message(exc))
