"""The core's views as Discord message text. Markup only: what to say is the core's.

Every text that carries user input (prompts, names) is sent with no allowed mentions (the
client's default); only the result post names the requester, explicitly (`result_mentions`).
"""
from __future__ import annotations

import discord

from bot.core.actions import REACTIONS
from bot.core.help import DeploymentHelp
from bot.core.models import Job
from bot.core.render import job_title
from bot.core.uploads import Upload
from bot.core.views import Action, StatusView, short_prompt

#: Discord's limit for a message's content.
MAX_CONTENT = 2000


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_content(view: StatusView) -> str:
    """A status message: the title (it names `job JOBID`, see `marks`), the prompt, the line."""
    return clip(f"**{view.title}**\n> {view.prompt}\n{view.line}")


def result_content(job: Job, upload: Upload | None, *, extra_note: str | None = None, gallery_url: str | None = None) -> str:
    mention = f"<@{job.origin.user_id}> " if job.origin.user_id.isdigit() else ""
    lines = [f"{mention}**{job_title(job)}**", f"> {short_prompt(job.prompt)}"]
    if upload is not None and upload.note:
        # A re-encode is a detail (small print); a still instead of the video is a warning.
        lines.append(f"⚠️ {upload.note}" if upload.is_still or upload.path is None else f"-# {upload.note}")
    if extra_note:
        lines.append(extra_note)
    if gallery_url:
        lines.append(f"[Open in gallery](<{gallery_url}>)")  # <...>: no embed preview
    return clip("\n".join(lines))


def result_mentions(job: Job) -> discord.AllowedMentions:
    """The requester, and nobody else, whatever the prompt says."""
    users = [discord.Object(int(job.origin.user_id))] if job.origin.user_id.isdigit() else False
    return discord.AllowedMentions(everyone=False, roles=False, users=users, replied_user=False)


def failure_note(view: StatusView) -> str:
    """What the owner of a job that failed after it started reads privately (the public line is short)."""
    return clip(f"**{view.title}** failed.\n{view.error or view.line}")


def dm_content(text: str, upload: Upload) -> str:
    return clip(text + (f"\n{upload.note}" if upload.note else ""))


def help_content(offers: DeploymentHelp, options: dict[str, list[str]]) -> str:
    """The core's `/help` as Discord markdown: each command with its options (`options`: the
    registered slash commands and their parameter names; a command not registered here is left
    out), the buttons and reactions, the pipelines and the limits."""

    def usage(name: str) -> str:
        return " ".join([f"`/{name}`", *(f"`{p}`" for p in options[name])])

    commands = [f"{usage(c.name)} {c.what}" for c in offers.commands if c.name in options]
    reactions = offers.reactions({**{emoji: action for emoji, action in REACTIONS.items() if emoji != "✉"}, "1️⃣–4️⃣": Action.USE})
    head = [
        "**Commands**",
        *commands,
        "**Buttons** " + "; ".join(offers.buttons()) + ".",
        "**Reactions** " + "; ".join(reactions) + ".",
        "**Limits**",
        *(f"• {limit}" for limit in offers.limits),
    ]

    def pipelines(detail: int) -> list[str]:
        """Most detail first (descriptions), then without them, then names only: the limits and
        commands are never the part cut off by Discord's 2,000 characters."""
        lines: list[str] = []
        for label, found in (("Video pipelines", offers.videos), ("Image pipelines", offers.images)):
            lines.append(f"**{label}**")
            if detail == 0:
                lines.append(", ".join(f"`{o.name}`{' (default)' if o.default else ''}" for o in found) or "none")
                continue
            for o in found:
                about = f" — {o.description}" if detail == 2 and o.description else ""
                lines.append(f"• `{o.name}`{' (default)' if o.default else ''}: {o.summary()}{about}")
        return lines

    for detail in (2, 1, 0):
        text = "\n".join(head + pipelines(detail))
        if len(text) <= MAX_CONTENT:
            return text
    return clip(text)
