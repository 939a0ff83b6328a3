"""Modal submissions: a remix with a new prompt, an extension with seconds and an optional prompt."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import EXTEND_MODAL, PROMPT_BLOCK, REMIX_MODAL, SECONDS_BLOCK, modal_value, read_metadata
from bot.adapters.slack.flows import ephemeral_teller, start_job

if TYPE_CHECKING:
    from bot.adapters.slack.app import SlackAdapter


def register(bolt: AsyncApp, adapter: SlackAdapter) -> None:
    service = adapter.app.service

    async def remix(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()  # closes the modal; the outcome shows in the channel (or ephemerally)
        job_id, channel = read_metadata(view)
        prompt = modal_value(view, PROMPT_BLOCK)
        user = body["user"]
        origin = adapter.origin_for(user.get("team_id"), channel, user["id"], user.get("username"))
        await start_job(adapter, origin, lambda o: service.remix(job_id, prompt, o), ephemeral_teller(adapter, channel, user["id"]))

    async def extend(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        raw = modal_value(view, SECONDS_BLOCK)
        if raw and not raw.isdigit():
            # A form slip: shown on the field itself, the modal stays open.
            await ack(response_action="errors", errors={SECONDS_BLOCK: "A whole number of seconds, for example 4."})
            return
        await ack()
        job_id, channel = read_metadata(view)
        prompt = modal_value(view, PROMPT_BLOCK) or None
        seconds = int(raw) if raw else None
        user = body["user"]
        origin = adapter.origin_for(user.get("team_id"), channel, user["id"], user.get("username"))
        await start_job(
            adapter, origin, lambda o: service.extend(job_id, o, seconds=seconds, prompt=prompt), ephemeral_teller(adapter, channel, user["id"])
        )

    bolt.view(REMIX_MODAL)(remix)
    bolt.view(EXTEND_MODAL)(extend)
