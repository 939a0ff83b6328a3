"""The card's buttons (exactly the view's actions): each is a core action on the job in its value.

Cancel, Animate, Re-roll and Delete go straight to `bot.core.actions.perform`; Remix… and
Extend… first open a modal (views.py submits it to the same place).
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

from bot.adapters.slack.blocks import ACTIONS_BY_ID, CONFIRM_OFFER, DECLINE_OFFER, TAKES_BY_ID, extend_modal, remix_modal
from bot.adapters.slack.flows import act, reply_thread, respond_teller, show_job

from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

_MODALS = {Action.REMIX: remix_modal, Action.EXTEND: extend_modal}


def _channel(body: dict[str, Any]) -> str:
    return str((body.get("channel") or {}).get("id") or body["container"]["channel_id"])


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    async def button(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(pressed(body, respond), "slack-button")

    async def pressed(body: dict[str, Any], respond: Any) -> None:
        pressed = body["actions"][0]
        action, job_id = ACTIONS_BY_ID[pressed["action_id"]], str(pressed["value"])
        tell, channel, thread = respond_teller(respond), _channel(body), reply_thread(body.get("message"))
        build = _MODALS.get(action)
        if build is None:
            take = TAKES_BY_ID[pressed["action_id"]][1] if pressed["action_id"] in TAKES_BY_ID else None
            await act(adapter, action, job_id, user=body["user"], channel=channel, tell=tell, thread_ts=thread, take=take)
            return
        # trigger_id lives 3 s: open the modal first (one store read for the prompt it shows), validate on submit.
        try:
            user = body["user"]
            job = await adapter.service.get_for(job_id, adapter.origin_for(user.get("team_id"), channel, user["id"], None))
            await (await adapter.client_for(user.get("team_id"))).views_open(trigger_id=body["trigger_id"], view=build(job, channel, thread))
        except Exception as exc:
            await tell.refusal(exc)

    bolt.action(re.compile("^(" + "|".join(map(re.escape, ACTIONS_BY_ID)) + ")$"))(button)

    async def offer_button(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(answered(body, respond), "slack-offer")

    async def answered(body: dict[str, Any], respond: Any) -> None:
        """Confirm / Decline of a spend offer: the core checks owner and expiry; a started job shows as any new one."""
        pressed, user = body["actions"][0], body["user"]
        token, confirming = str(pressed["value"]), pressed["action_id"] == CONFIRM_OFFER
        tell = respond_teller(respond)
        origin = adapter.origin_for(user.get("team_id"), _channel(body), str(user["id"]), user.get("username") or user.get("name"))
        actor = await adapter.actor(origin.user_id, team_id=origin.workspace_id)
        service = adapter.service
        try:
            job = await (service.confirm(token, actor) if confirming else service.decline(token, actor))
        except Exception as exc:
            await tell.refusal(exc)
            return
        # The offer's buttons are spent: the ephemeral offer says what became of it.
        done = f"Confirmed: job {job.id} started." if confirming else "Declined: nothing was queued or spent."
        try:
            await respond(text=done, response_type="ephemeral", replace_original=True)
        except Exception:
            log.warning("could not update the offer %s", token, exc_info=True)
        if confirming:
            await show_job(adapter, job, tell)

    bolt.action(CONFIRM_OFFER)(offer_button)
    bolt.action(DECLINE_OFFER)(offer_button)
