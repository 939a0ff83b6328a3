"""A set of takes on Discord: one result post with the contact sheet and every finished take as
attachments, numbered with their seeds, and Use N / More like N / Re-roll all under it.

Discord caps what one message may carry, so the takes share the upload limit: each is fitted
to its share (re-encoded smaller when needed); a take that cannot fit is its still with a note.
"""
from __future__ import annotations

from pathlib import Path

import discord

from bot.adapters.discord_bot.render import clip
from bot.core.models import Job
from bot.core.render import job_title
from bot.core.take_set import result_lines, results_of
from bot.core.uploads import Upload, prepare_upload
from bot.core.views import short_prompt
from storage.contract import Store

#: Room left in the message for its text and the multipart framing.
_OVERHEAD = 4 * 1024


async def set_files(store: Store, job: Job, limit: int) -> tuple[list[discord.File], list[str]]:
    """The contact sheet and each finished take, fitted so that together they fit `limit`; and the notes."""
    sheet = Path(job.output_path) if job.output_path else None
    files: list[discord.File] = []
    used = 0
    if sheet is not None and sheet.exists():
        files.append(discord.File(sheet, filename=f"{job.id}.png"))
        used = sheet.stat().st_size
    done = [r for r in results_of(job) if r.ok]
    share = max(1, (limit - used - _OVERHEAD) // max(1, len(done)))
    notes: list[str] = []
    for result in done:
        take = await store.get(result.job_id)
        if take is None:
            continue
        upload: Upload = await prepare_upload(take, share)
        if upload.note:
            notes.append(f"Take {result.take}: {upload.note}")
        if upload.path is not None:
            files.append(discord.File(upload.path, filename=f"{job.id}-take{result.take}{upload.path.suffix}"))
    return files, notes


def set_content(job: Job, notes: list[str], *, gallery_url: str | None = None) -> str:
    mention = f"<@{job.origin.user_id}> " if job.origin.user_id.isdigit() else ""
    lines = [f"{mention}**{job_title(job)}**", f"> {short_prompt(job.prompt)}", *result_lines(job), *(f"-# {n}" for n in notes)]
    if gallery_url:
        lines.append(f"[Open in gallery](<{gallery_url}>)")
    return clip("\n".join(lines))
