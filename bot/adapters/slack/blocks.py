"""Block Kit for what users see: a `StatusView` as a status card, the modals, the help.

The core decides what a card says and which buttons it has (`bot.core.views`); this
module only writes it in Slack's markup. Buttons and modals carry the job id in their
value / private_metadata, so they keep working after a restart.

Everything a person typed (prompts, and core texts that echo input) is escaped: Slack
reads `<`, `>` and `&` as markup, and `<!channel>` or `<@U…>` in a prompt must show as
text, never ping.
"""
from __future__ import annotations

import json
from typing import Any

from bot.core.help import CommandHelp, DeploymentHelp
from bot.core.models import Job
from bot.core.views import Action, Phase, StatusView

Block = dict[str, Any]

#: Button action ids, one per core action (the DM action is Discord's ✉️ reaction only).
BUTTONS: dict[Action, str] = {
    Action.CANCEL: "vb_cancel",
    Action.ANIMATE: "vb_animate",
    Action.REROLL: "vb_reroll",
    Action.REMIX: "vb_remix",
    Action.EXTEND: "vb_extend",
    Action.DELETE: "vb_delete",
}
#: A set of takes' buttons, one per finished take: Use N, More like N (the take is in the action id).
TAKE_BUTTONS: dict[tuple[Action, int], str] = {
    (action, k): f"vb_{action.value}_{k}" for action in (Action.USE, Action.MORE_LIKE) for k in range(1, 5)
}
TAKES_BY_ID = {action_id: key for key, action_id in TAKE_BUTTONS.items()}
ACTIONS_BY_ID = {action_id: action for action, action_id in BUTTONS.items()} | {i: a for i, (a, _) in TAKES_BY_ID.items()}
_LABELS = {
    Action.CANCEL: "✖️ Cancel",
    Action.ANIMATE: "🎬 Animate",
    Action.REROLL: "🔁 Re-roll",
    Action.REMIX: "🎨 Remix…",
    Action.EXTEND: "➕ Extend…",
    Action.DELETE: "🗑️ Delete",
}
#: Slack's reaction names for the emoji the core knows. ✉️ (DM) is not offered in Slack: a file
#: in a DM needs the im:write scope and a conversations.open the bot does not otherwise need.
REACTIONS = {"repeat": "🔁", "x": "❌", "clapper": "🎬"}
REMIX_MODAL, EXTEND_MODAL = "vb_remix_modal", "vb_extend_modal"
PROMPT_BLOCK, SECONDS_BLOCK, INPUT = "prompt", "seconds", "value"
#: The message shortcut "Animate with videobot" (manifest.yaml names the same callback id).
ANIMATE_SHORTCUT = "vb_animate_message"


def esc(text: str) -> str:
    """Text shown as typed: Slack's three control characters escaped (mrkdwn and plain text alike)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unesc(text: str) -> str:
    """Text Slack sent (command text, message text) back as typed: Slack escapes the same three."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def status_text(view: StatusView) -> str:
    """The card's text (and the notification text): title, the prompt as typed, the status line."""
    # A failure's line is the core's short public one; the owner gets `view.error` privately.
    return f"*{esc(view.title)}*\n> {esc(view.prompt)}\n{esc(view.line)}"


def status_blocks(view: StatusView, job: Job, *, with_image: bool = True) -> list[Block]:
    blocks: list[Block] = [{"type": "section", "block_id": "status", "text": {"type": "mrkdwn", "text": status_text(view)}}]
    # Our own mention of the requester (not user text); updates do not notify again.
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"requested by <@{job.origin.user_id}>"}]})
    thumb = job.origin.extra.get("thumb_file_id")
    if with_image and thumb and view.thumbnail_path and view.phase is Phase.DONE:
        # An image block needs a public URL or a Slack file: the bot uploads the still itself.
        blocks.append({"type": "image", "block_id": "thumb", "slack_file": {"id": thumb}, "alt_text": f"Still from job {job.id}"})
    buttons = [button(action, view.job_id, first=i == 0, takes=bool(view.takes)) for i, action in enumerate(a for a in view.actions if a in BUTTONS)]
    if view.takes:
        buttons = take_buttons(view) + buttons
    if view.scenes:
        buttons = story_elements(view) + buttons
    if buttons:
        blocks.append({"type": "actions", "block_id": "actions", "elements": buttons})
    return blocks


def take_buttons(view: StatusView) -> list[Block]:
    """Use N and More like N for each finished take of a set (Re-roll under a set re-rolls all)."""
    found: list[Block] = []
    for action, label in ((Action.USE, "Use {k}"), (Action.MORE_LIKE, "More like {k}")):
        if action not in view.actions:
            continue
        for k in view.takes:
            found.append({"type": "button", "action_id": TAKE_BUTTONS[(action, k)], "value": view.job_id,
                          "text": {"type": "plain_text", "text": label.format(k=k), "emoji": True}})  # fmt: skip
    return found


def button(action: Action, job_id: str, *, first: bool = False, takes: bool = False) -> Block:
    label = "🔁 Re-roll all" if takes and action is Action.REROLL else _LABELS[action]
    b: Block = {"type": "button", "action_id": BUTTONS[action], "value": job_id, "text": {"type": "plain_text", "text": label, "emoji": True}}
    if first and action is not Action.CANCEL:
        b["style"] = "primary"
    if action is Action.DELETE:
        b["style"] = "danger"
        b["confirm"] = _confirm("Delete this job?", "The messages and files of this job are removed for everyone.", "Delete", "Keep")
    return b


#: The buttons of a confirm offer (their value is the offer's token).
CONFIRM_OFFER = "videobot_offer_confirm"
DECLINE_OFFER = "videobot_offer_decline"


def offer_blocks(text: str, token: str) -> list[Block]:
    """The core's NeedsConfirmation message (its estimate) with Confirm / Decline carrying the token."""
    return [
        {"type": "section", "block_id": "offer", "text": {"type": "mrkdwn", "text": esc(text)}},
        {"type": "actions", "block_id": "offer_actions", "elements": [
            {"type": "button", "action_id": CONFIRM_OFFER, "value": token, "style": "primary", "text": {"type": "plain_text", "text": "Confirm"}},
            {"type": "button", "action_id": DECLINE_OFFER, "value": token, "text": {"type": "plain_text", "text": "Decline"}},
        ]},
    ]  # fmt: skip


def _confirm(title: str, text: str, yes: str, no: str) -> Block:
    return {
        "title": {"type": "plain_text", "text": title}, "text": {"type": "plain_text", "text": text},
        "confirm": {"type": "plain_text", "text": yes}, "deny": {"type": "plain_text", "text": no},
    }  # fmt: skip


def _metadata(job_id: str, channel_id: str, thread_ts: str | None) -> str:
    data = {"job": job_id, "channel": channel_id}
    if thread_ts:
        data["thread"] = thread_ts
    return json.dumps(data)


def read_metadata(view: dict[str, Any]) -> tuple[str, str, str | None]:
    data = json.loads(view.get("private_metadata") or "{}")
    return str(data.get("job", "")), str(data.get("channel", "")), data.get("thread")


def _echo(job: Job) -> Block:
    """The job's prompt, shown in the modal for reference (escaped like every echo)."""
    prompt = job.prompt if len(job.prompt) <= 500 else job.prompt[:499] + "…"
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Job {job.id}: {esc(prompt)}"}]}


def remix_modal(job: Job, channel_id: str, thread_ts: str | None = None) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": REMIX_MODAL, "private_metadata": _metadata(job.id, channel_id, thread_ts),
        "title": {"type": "plain_text", "text": "Remix this video"},
        "submit": {"type": "plain_text", "text": "Remix"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": PROMPT_BLOCK, "label": {"type": "plain_text", "text": "New prompt"},
            "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": 1000,
                        "placeholder": {"type": "plain_text", "text": "the same shot, at night in the rain"}},
        }, _echo(job)],
    }  # fmt: skip


def extend_modal(job: Job, channel_id: str, thread_ts: str | None = None) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": EXTEND_MODAL, "private_metadata": _metadata(job.id, channel_id, thread_ts),
        "title": {"type": "plain_text", "text": "Extend this video"},
        "submit": {"type": "plain_text", "text": "Extend"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "input", "block_id": SECONDS_BLOCK, "optional": True, "label": {"type": "plain_text", "text": "Seconds to add"},
             "element": {"type": "plain_text_input", "action_id": INPUT, "max_length": 3,
                         "placeholder": {"type": "plain_text", "text": "4"}}},
            {"type": "input", "block_id": PROMPT_BLOCK, "optional": True,
             "label": {"type": "plain_text", "text": "What happens next (optional)"},
             "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": 1000}},
            _echo(job),
        ],
    }  # fmt: skip


def modal_value(view: dict[str, Any], block_id: str) -> str:
    value = view.get("state", {}).get("values", {}).get(block_id, {}).get(INPUT, {}).get("value")
    return (value or "").strip()


def typed(command: CommandHelp) -> str:
    """A command as typed in Slack: /video and /image are slash commands, the rest go after /video."""
    head = f"/{command.name}" if command.name in ("video", "image") else f"/video {command.name}"
    return f"{head} {command.args}".rstrip()


def help_markup(offers: DeploymentHelp, reactions: dict[str, Action]) -> str:
    """The core's `/help` in Slack's mrkdwn: commands as typed here, buttons, reactions, pipelines, limits."""
    width = 44
    commands = "\n".join(f"{typed(c):<{width}}  {c.what}" for c in offers.commands)
    lines = [
        f"```{esc(commands)}```",
        "Quote a prompt to use `--` or a command word in it: `/video \"a sign that says --stop--\" --seconds 4`.",
        "*Buttons* " + "; ".join(esc(b) for b in offers.buttons()) + ". The message shortcut *Animate with videobot* makes a video of a posted image.",
        "*Reactions* " + "; ".join(offers.reactions(reactions)),
        "*Video pipelines*",
        *(f"• *{esc(o.name)}*{' (default)' if o.default else ''}, {esc(o.summary())}" for o in offers.videos or ()),
        "*Image pipelines*",
        *(f"• *{esc(o.name)}*{' (default)' if o.default else ''}, {esc(o.summary())}" for o in offers.images or ()),
        "*Limits*",
        *(f"• {esc(limit)}" for limit in offers.limits),
    ]
    return "\n".join(lines)


#: A story card's controls (handled in bot.adapters.slack.stories).
REDO_SELECT, ADD_SCENE_BUTTON = "vb_redo_scene", "vb_add_scene"


def story_elements(view: StatusView) -> list[Block]:
    """A story card's own controls (the view says which): the Redo select, Add scene…."""
    elements: list[Block] = []
    if Action.REDO_SCENE in view.actions and view.scenes:
        elements.append({
            "type": "static_select", "action_id": REDO_SELECT, "placeholder": {"type": "plain_text", "text": "🎞️ Redo scene…", "emoji": True},
            "options": [{"text": {"type": "plain_text", "text": label[:75]}, "value": f"{view.job_id}:{k}"} for k, label in view.scenes[:100]],
        })  # fmt: skip
    if Action.ADD_SCENE in view.actions:
        elements.append({"type": "button", "action_id": ADD_SCENE_BUTTON, "value": view.job_id,
                         "text": {"type": "plain_text", "text": "➕ Add scene…", "emoji": True}})  # fmt: skip
    return elements
