"""Modal submissions: a remix with a new prompt, an extension with seconds and an optional prompt.

Both go to the core's `perform` (REMIX, EXTEND); only a form slip (seconds not a number)
is answered on the field itself, keeping the modal open.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import EXTEND_MODAL, PROMPT_BLOCK, REMIX_MODAL, SECONDS_BLOCK, modal_value, read_metadata
from bot.adapters.slack.flows import act, ephemeral_teller
from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost


def _seconds_slip(view: dict[str, Any]) -> bool:
    raw = modal_value(view, SECONDS_BLOCK)
    return bool(raw) and not raw.isdigit()


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    # The ack closes the modal (or keeps it open with a form slip); the work runs after it.
    async def remix(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        adapter.later(remixed(body, view), "slack-remix")

    async def remixed(body: dict[str, Any], view: dict[str, Any]) -> None:
        job_id, channel, thread = read_metadata(view)
        user = body["user"]
        tell = ephemeral_teller(adapter, channel, user["id"], thread, team_id=user.get("team_id"))
        await act(adapter, Action.REMIX, job_id, user=user, channel=channel, tell=tell, prompt=modal_value(view, PROMPT_BLOCK), thread_ts=thread)

    async def extend(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        if _seconds_slip(view):
            # A form slip: shown on the field itself, the modal stays open.
            await ack(response_action="errors", errors={SECONDS_BLOCK: "A whole number of seconds, for example 4."})
            return
        await ack()
        adapter.later(extended(body, view), "slack-extend")

    async def extended(body: dict[str, Any], view: dict[str, Any]) -> None:
        raw = modal_value(view, SECONDS_BLOCK)
        job_id, channel, thread = read_metadata(view)
        user = body["user"]
        tell = ephemeral_teller(adapter, channel, user["id"], thread, team_id=user.get("team_id"))
        await act(
            adapter, Action.EXTEND, job_id, user=user, channel=channel, tell=tell,
            prompt=modal_value(view, PROMPT_BLOCK) or None, seconds=int(raw) if raw else None, thread_ts=thread,
        )  # fmt: skip

    bolt.view(REMIX_MODAL)(remix)
    bolt.view(EXTEND_MODAL)(extend)
