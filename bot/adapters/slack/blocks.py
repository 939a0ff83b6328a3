"""Block Kit for what users see: the status card, its result buttons and the modals.

Buttons and modals carry the job id in their value / private_metadata, so they keep
working after a restart: nothing about them lives in memory.
"""
from __future__ import annotations

import json
from typing import Any

from bot.core.models import EventKind, Job, JobKind, ProgressEvent
from bot.core.render import job_title, status_line

MAX_PROMPT_SHOWN = 300

REROLL, REMIX, EXTEND, DELETE = "vb_reroll", "vb_remix", "vb_extend", "vb_delete"
REMIX_MODAL, EXTEND_MODAL = "vb_remix_modal", "vb_extend_modal"
PROMPT_BLOCK, SECONDS_BLOCK, INPUT = "prompt", "seconds", "value"

Block = dict[str, Any]


def _mrkdwn_escape(text: str) -> str:
    # Slack treats &, < and > as markup; a prompt must show as typed, not ping anyone.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short_prompt(job: Job) -> str:
    prompt = job.prompt if len(job.prompt) <= MAX_PROMPT_SHOWN else job.prompt[: MAX_PROMPT_SHOWN - 1] + "…"
    return _mrkdwn_escape(prompt)


def status_text(job: Job, event: ProgressEvent | None) -> str:
    line = status_line(event) if event is not None else "⏳ Queued"
    return f"*{job_title(job)}*\n> {short_prompt(job)}\n{line}"


def status_blocks(job: Job, event: ProgressEvent | None, *, with_image: bool = True) -> list[Block]:
    blocks: list[Block] = [{"type": "section", "block_id": "status", "text": {"type": "mrkdwn", "text": status_text(job, event)}}]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"requested by <@{job.origin.user_id}>"}]})
    if event is not None and event.kind is EventKind.COMPLETED and not job.deleted_at:
        thumb = job.origin.extra.get("thumb_file_id")
        if with_image and thumb:
            # An image block needs a public URL or a Slack file: the bot uploads the still itself.
            blocks.append({"type": "image", "block_id": "thumb", "slack_file": {"id": thumb}, "alt_text": f"Still from job {job.id}"})
        blocks.append(result_actions(job))
    return blocks


def result_actions(job: Job) -> Block:
    def button(action_id: str, text: str, style: str | None = None) -> Block:
        b: Block = {"type": "button", "action_id": action_id, "value": job.id, "text": {"type": "plain_text", "text": text, "emoji": True}}
        if style:
            b["style"] = style
        return b

    elements = [button(REROLL, "🔁 Re-roll", "primary")]
    if job.kind is not JobKind.IMAGE:
        elements += [button(REMIX, "🎨 Remix…"), button(EXTEND, "➕ Extend…")]
    delete = button(DELETE, "🗑️ Delete", "danger")
    delete["confirm"] = {
        "title": {"type": "plain_text", "text": "Delete this job?"},
        "text": {"type": "plain_text", "text": "The messages and files of this job are removed for everyone."},
        "confirm": {"type": "plain_text", "text": "Delete"},
        "deny": {"type": "plain_text", "text": "Keep"},
    }
    elements.append(delete)
    return {"type": "actions", "block_id": "actions", "elements": elements}


def _metadata(job_id: str, channel_id: str) -> str:
    return json.dumps({"job": job_id, "channel": channel_id})


def read_metadata(view: dict[str, Any]) -> tuple[str, str]:
    data = json.loads(view.get("private_metadata") or "{}")
    return str(data.get("job", "")), str(data.get("channel", ""))


def remix_modal(job_id: str, channel_id: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": REMIX_MODAL, "private_metadata": _metadata(job_id, channel_id),
        "title": {"type": "plain_text", "text": "Remix this video"},
        "submit": {"type": "plain_text", "text": "Remix"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": PROMPT_BLOCK, "label": {"type": "plain_text", "text": "New prompt"},
            "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": 1000,
                        "placeholder": {"type": "plain_text", "text": "the same shot, at night in the rain"}},
        }],
    }  # fmt: skip


def extend_modal(job_id: str, channel_id: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": EXTEND_MODAL, "private_metadata": _metadata(job_id, channel_id),
        "title": {"type": "plain_text", "text": "Extend this video"},
        "submit": {"type": "plain_text", "text": "Extend"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "input", "block_id": SECONDS_BLOCK, "optional": True, "label": {"type": "plain_text", "text": "Seconds to add"},
             "element": {"type": "plain_text_input", "action_id": INPUT, "max_length": 3,
                         "placeholder": {"type": "plain_text", "text": "4"}}},
            {"type": "input", "block_id": PROMPT_BLOCK, "optional": True,
             "label": {"type": "plain_text", "text": "What happens next (optional)"},
             "element": {"type": "plain_text_input", "action_id": INPUT, "multiline": True, "max_length": 1000}},
        ],
    }  # fmt: skip


def modal_value(view: dict[str, Any], block_id: str) -> str:
    value = view.get("state", {}).get("values", {}).get(block_id, {}).get(INPUT, {}).get("value")
    return (value or "").strip()
