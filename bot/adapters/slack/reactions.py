"""Reactions on a job's status or result message, as the core understands them (`reaction_action`):
🔁 (`repeat`) re-rolls, ❌ (`x`) means what the core says (stop a running job, remove a finished
one), 🎬 (`clapper`) animates an image result, 1️⃣-4️⃣ (`one`...`four`) on a set of takes use that take.

The job is found through the store by message ts, so this works for messages from before
a restart, and, in the moment before a new message's ts is stored, through the job id the
message itself carries (status metadata, file title). Reactions anywhere else are none of
the bot's business and are ignored silently.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import REACTIONS as EMOJI
from bot.adapters.slack.flows import act, ephemeral_teller
from bot.adapters.slack.takes import TAKE_REACTIONS
from bot.core.actions import reaction_action
from bot.core.models import JobKind
from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost



def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    async def reaction_added(ack: Any, body: dict[str, Any], event: dict[str, Any]) -> None:
        await ack()
        adapter.later(on_reaction(adapter, event, body.get("team_id")), "slack-reaction")

    bolt.event("reaction_added")(reaction_added)


async def on_reaction(adapter: SlackHost, event: dict[str, Any], team_id: str | None) -> None:
    item = event.get("item") or {}
    name = str(event.get("reaction", "")).split("::")[0]  # skin tones arrive as name::skin-tone-N
    take = TAKE_REACTIONS.get(name)
    action = Action.USE if take is not None else reaction_action(EMOJI.get(name, ""))
    if item.get("type") != "message" or action is None or action is Action.DM:
        return
    user_id, channel = str(event["user"]), str(item["channel"])
    author = event.get("item_user")
    job = await adapter.surface.job_for_message(channel, str(item.get("ts")), str(author) if author else None, team_id)
    if job is None or (job.origin.channel_id and job.origin.channel_id != channel):
        return
    thread = job.origin.extra.get("thread_ts")
    tell = ephemeral_teller(adapter, channel, user_id, thread, team_id=team_id)
    if take is not None and job.kind is not JobKind.TAKES:
        return  # a keycap on anything but a set of takes means nothing to the bot
    await act(adapter, action, job.id, user={"id": user_id, "team_id": team_id}, channel=channel, tell=tell, thread_ts=thread, take=take)
