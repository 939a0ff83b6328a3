"""The core's views as Discord message text. Markup only: what to say is the core's.

The core's text is plain, and much of it carries user input (prompts, file names, scene
lines), so all of it goes through `plain` before it is put in a message: Discord then shows
it as written (no masked links, bold, headings or quotes made from a prompt, no `@everyone`).
The adapter's own markup (bold titles, quotes, code blocks, links) is added around it. It
is also sent with no allowed mentions (the client's default); only the result post names the
requester, explicitly (`result_mentions`).
"""
from __future__ import annotations

import re

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


def plain(text: str) -> str:
    """The core's text (with whatever users wrote in it) shown literally in Discord markdown:
    every markdown character escaped (bare links left whole), mentions broken.

    Not `discord.utils.escape_markdown`: its pattern for a masked link (`[.+](.+)`) takes all
    of "[a] **b** [c](url)" as one match and escapes only the first "[", leaving the bold and
    the masked link after it live."""
    return discord.utils.escape_mentions(_MARKUP.sub(_escaped, text))


#: A bare link (kept whole, as Discord links it), a markup character anywhere (`<` too: channel
#: links, timestamps and command mentions), or a quote, heading or list mark starting a line.
_MARKUP = re.compile(
    r"(?P<url>https?://[^\s<]+[^<.,:;\"'\]\s])|(?P<char>[\\*_~|`\[\]<])|^(?P<indent>[ \t]*)(?P<start>[>#-])",
    re.MULTILINE,
)


def _escaped(match: re.Match[str]) -> str:
    if match["url"]:
        return match["url"]
    if match["char"]:
        return "\\" + match["char"]
    return match["indent"] + "\\" + match["start"]


def code_block(text: str) -> str:
    """Text in a code block (nothing in it is markdown), which a ``` in a prompt cannot end."""
    return "```\n" + text.replace("```", "`\u200b`\u200b`") + "\n```"


def status_content(view: StatusView) -> str:
    """A status message: the title (it names `job JOBID`, see `marks`), the prompt, the line."""
    return clip(f"**{plain(view.title)}**\n> {plain(view.prompt)}\n{plain(view.line)}")


def result_content(job: Job, upload: Upload | None, *, extra_note: str | None = None, gallery_url: str | None = None) -> str:
    mention = f"<@{job.origin.user_id}> " if job.origin.user_id.isdigit() else ""
    lines = [f"{mention}**{plain(job_title(job))}**", f"> {plain(short_prompt(job.prompt))}"]
    if upload is not None and upload.note:
        # A re-encode is a detail (small print); a still instead of the video is a warning.
        lines.append(f"⚠️ {plain(upload.note)}" if upload.is_still or upload.path is None else f"-# {plain(upload.note)}")
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
    return clip(f"**{plain(view.title)}** failed.\n{plain(view.error or view.line)}")


def dm_content(text: str, upload: Upload) -> str:
    return clip(plain(text) + (f"\n{plain(upload.note)}" if upload.note else ""))


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
