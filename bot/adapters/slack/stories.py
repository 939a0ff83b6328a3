"""Stories in Slack: the plan shown before spending, and the story's own controls on its card.

`/video story …` answers privately with the plan (look, scene prompts, estimate) and
Confirm / Edit… / Cancel carrying the preview's token; Edit… opens a modal with the scenes,
one per line, and its submission replaces the private preview with the edited one (through
the preview's response_url, kept in the modal's metadata). A finished story's card has a
"Redo scene…" select (one option per scene) and "Add scene…" (a modal with a prompt).

The rules (who may answer, expiry, limits, price) are the core's (`bot.core.stories`); this
module only renders and maps clicks.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.adapters.slack.blocks import ADD_SCENE_BUTTON, REDO_SELECT, Block, esc, modal_value, read_metadata
from bot.adapters.slack.flows import Tell, act, ephemeral_teller, reply_thread, respond_teller, show_job

from bot.core.stories import StoryPreview, confirm_story, edit_preview, pending_preview
from bot.core.story_plan import MIN_SCENES, split_script
from bot.core.views import Action

if TYPE_CHECKING:
    from bot.adapters.slack.host import SlackHost

log = logging.getLogger(__name__)

STORY_CONFIRM, STORY_EDIT, STORY_CANCEL = "vb_story_confirm", "vb_story_edit", "vb_story_cancel"
STORY_EDIT_MODAL = "vb_story_edit_modal"
ADD_SCENE_MODAL = "vb_add_scene_modal"
SCENES_BLOCK, PROMPT_BLOCK, INPUT = "scenes", "prompt", "value"
#: Slack's cap on a plain_text_input.
INPUT_MAX = 3000


# --- rendering --------------------------------------------------------------------------------


def preview_blocks(preview: StoryPreview) -> list[Block]:
    """The plan, privately: headline, look, numbered scenes, estimate; Confirm / Edit… / Cancel."""
    plan, token = preview.plan, preview.token
    blocks: list[Block] = [{"type": "section", "block_id": "story_head", "text": {"type": "mrkdwn", "text": f"*{esc(preview.headline())}*"}}]
    if plan.look:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Look: {esc(plan.look)}"[:3000]}]})
    blocks.append({"type": "section", "block_id": "story_scenes", "text": {"type": "mrkdwn", "text": esc("\n".join(preview.scene_lines()))[:3000]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": esc(preview.estimate_line())}]})
    blocks.append({"type": "actions", "block_id": "story_preview", "elements": [
        {"type": "button", "action_id": STORY_CONFIRM, "value": token, "style": "primary", "text": {"type": "plain_text", "text": "Confirm"}},
        {"type": "button", "action_id": STORY_EDIT, "value": token, "text": {"type": "plain_text", "text": "Edit…"}},
        {"type": "button", "action_id": STORY_CANCEL, "value": token, "text": {"type": "plain_text", "text": "Cancel"}},
    ]})  # fmt: skip
    return blocks


def edit_modal(preview: StoryPreview, channel: str, response_url: str | None) -> dict[str, Any]:
    meta = json.dumps({"token": preview.token, "channel": channel, "response_url": response_url})
    return {
        "type": "modal", "callback_id": STORY_EDIT_MODAL, "private_metadata": meta,
        "title": {"type": "plain_text", "text": "Edit the story"},
        "submit": {"type": "plain_text", "text": "Update preview"}, "close": {"type": "plain_text", "text": "Back"},
        "blocks": [{
            "type": "input", "block_id": SCENES_BLOCK, "label": {"type": "plain_text", "text": "Scenes, one per line"},
            "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": INPUT_MAX,
                        "initial_value": "\n".join(preview.plan.scenes)[:INPUT_MAX]},
        }],
    }  # fmt: skip


def add_scene_modal(job_id: str, channel: str, thread: str | None) -> dict[str, Any]:
    data = {"job": job_id, "channel": channel, **({"thread": thread} if thread else {})}
    return {
        "type": "modal", "callback_id": ADD_SCENE_MODAL, "private_metadata": json.dumps(data),
        "title": {"type": "plain_text", "text": "Add a scene"},
        "submit": {"type": "plain_text", "text": "Add scene"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": PROMPT_BLOCK, "label": {"type": "plain_text", "text": "What happens next"},
            "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": 1000},
        }],
    }  # fmt: skip


async def show_preview(preview: StoryPreview, tell: Tell) -> None:
    """The private preview of a story just planned (a command's answer)."""
    await tell.markup(esc(preview.text()), preview_blocks(preview))


# --- listeners ----------------------------------------------------------------------------------


def _channel(body: dict[str, Any]) -> str:
    return str((body.get("channel") or {}).get("id") or body["container"]["channel_id"])


def register(bolt: AsyncApp, adapter: SlackHost) -> None:
    service = adapter.service

    def origin_of(body: dict[str, Any], channel: str) -> Any:
        user = body["user"]
        return adapter.origin_for(user.get("team_id"), channel, str(user["id"]), user.get("username") or user.get("name"))

    async def answer(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(answered(body, respond), "slack-story-preview")

    async def answered(body: dict[str, Any], respond: Any) -> None:
        """Confirm or Cancel under a preview: the core checks owner and expiry."""
        pressed = body["actions"][0]
        token, confirming = str(pressed["value"]), pressed["action_id"] == STORY_CONFIRM
        tell = respond_teller(respond)
        origin = origin_of(body, _channel(body))
        actor = await adapter.actor(origin.user_id, team_id=origin.workspace_id)
        try:
            job = await (confirm_story(service, token, actor) if confirming else service.decline(token, actor))
        except Exception as exc:
            await tell.refusal(exc)
            return
        done = f"Confirmed: story {job.id} started." if confirming else "Cancelled: nothing was queued or spent."
        try:
            await respond(text=done, response_type="ephemeral", replace_original=True)
        except Exception:
            log.warning("could not update the story preview %s", token, exc_info=True)
        if confirming:
            await show_job(adapter, job, tell)

    async def edit(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(open_edit(body, respond), "slack-story-edit")

    async def open_edit(body: dict[str, Any], respond: Any) -> None:
        token, channel = str(body["actions"][0]["value"]), _channel(body)
        origin = origin_of(body, channel)
        try:
            preview = await pending_preview(service, token, await adapter.actor(origin.user_id, team_id=origin.workspace_id))
            await (await adapter.client_for(origin.workspace_id)).views_open(trigger_id=body["trigger_id"], view=edit_modal(preview, channel, body.get("response_url")))
        except Exception as exc:
            await respond_teller(respond).refusal(exc)

    async def edited(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        if len(split_script(modal_value(view, SCENES_BLOCK))) < MIN_SCENES:
            # A form slip: shown on the field, the modal stays open.
            await ack(response_action="errors", errors={SCENES_BLOCK: f"At least {MIN_SCENES} scenes, one per line."})
            return
        await ack()
        adapter.later(apply_edit(body, view), "slack-story-edited")

    async def apply_edit(body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        channel, user = str(meta.get("channel", "")), body["user"]
        respond = AsyncRespond(response_url=meta.get("response_url"))
        tell = ephemeral_teller(adapter, channel, str(user["id"]), team_id=user.get("team_id"))
        try:
            actor = await adapter.actor(str(user["id"]), team_id=user.get("team_id"))
            preview = await edit_preview(service, str(meta.get("token", "")), modal_value(view, SCENES_BLOCK), actor)
        except Exception as exc:
            await tell.refusal(exc)
            return
        try:
            # The private preview becomes the edited one (its buttons carry the new token).
            await respond(text=esc(preview.text()), blocks=preview_blocks(preview), response_type="ephemeral", replace_original=True)
        except Exception:
            log.warning("could not replace the story preview; posting it anew", exc_info=True)
            await show_preview(preview, tell)

    async def redo(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(redo_picked(body, respond), "slack-story-redo")

    async def redo_picked(body: dict[str, Any], respond: Any) -> None:
        job_id, _, k = str(body["actions"][0]["selected_option"]["value"]).rpartition(":")
        channel, thread = _channel(body), reply_thread(body.get("message"))
        tell = respond_teller(respond)
        await act(adapter, Action.REDO_SCENE, job_id, user=body["user"], channel=channel, tell=tell, scene=int(k), thread_ts=thread)

    async def add(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        adapter.later(open_add(body, respond), "slack-story-add")

    async def open_add(body: dict[str, Any], respond: Any) -> None:
        job_id, channel = str(body["actions"][0]["value"]), _channel(body)
        try:
            job = await service.get_for(job_id, origin_of(body, channel))
            await (await adapter.client_for(body["user"].get("team_id"))).views_open(trigger_id=body["trigger_id"], view=add_scene_modal(job.id, channel, reply_thread(body.get("message"))))
        except Exception as exc:
            await respond_teller(respond).refusal(exc)

    async def added(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()
        adapter.later(add_submitted(body, view), "slack-story-added")

    async def add_submitted(body: dict[str, Any], view: dict[str, Any]) -> None:
        job_id, channel, thread = read_metadata(view)
        user = body["user"]
        tell = ephemeral_teller(adapter, channel, user["id"], thread, team_id=user.get("team_id"))
        await act(adapter, Action.ADD_SCENE, job_id, user=user, channel=channel, tell=tell, prompt=modal_value(view, PROMPT_BLOCK), thread_ts=thread)

    bolt.action(STORY_CONFIRM)(answer)
    bolt.action(STORY_CANCEL)(answer)
    bolt.action(STORY_EDIT)(edit)
    bolt.view(STORY_EDIT_MODAL)(edited)
    bolt.action(REDO_SELECT)(redo)
    bolt.action(ADD_SCENE_BUTTON)(add)
    bolt.view(ADD_SCENE_MODAL)(added)

