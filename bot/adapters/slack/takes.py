"""A set of takes in Slack: one message in the thread with the contact sheet and every finished
take (each fitted under Slack's file limit, or a still with a note), numbered with its seed.

Exactly once like any result: a retried delivery looks for the contact sheet (named after the
set's id) in the thread and the channel before posting again.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.adapters.slack import lookup
from bot.adapters.slack.blocks import esc
from bot.core.errors import DeliveryFailed
from bot.core.models import Job
from bot.core.render import job_title
from bot.core.take_set import result_lines, results_of
from bot.core.uploads import prepare_upload
from bot.core.views import short_prompt
from storage.contract import Store

#: Slack reaction names of the keycaps 1️⃣-4️⃣ (Use that take).
TAKE_REACTIONS = {"one": 1, "two": 2, "three": 3, "four": 4}


def sheet_name(job: Job) -> str:
    return lookup.file_name(job.id, ".png")


async def set_message(store: Store, job: Job, file_limit: int) -> tuple[list[tuple[Path, str, str]], str]:
    """The set's one message: its files (path, name, title: the contact sheet first, then each
    finished take fitted under `file_limit`, or its still) and its comment."""
    sheet = Path(job.output_path) if job.output_path else None
    if sheet is None or not await asyncio.to_thread(sheet.is_file):
        raise DeliveryFailed(f"The contact sheet of set {job.id} is missing on the bot's disk, so it was not posted.", transient=False)
    files: list[tuple[Path, str, str]] = [(sheet, sheet_name(job), f"Contact sheet · job {job.id}")]
    notes: list[str] = []
    for result in results_of(job):
        take = await store.get(result.job_id) if result.ok else None
        if take is None:
            continue
        upload = await prepare_upload(take, file_limit)
        if upload.note:
            notes.append(f"Take {result.take}: {upload.note}")
        if upload.path is not None:
            files.append((upload.path, f"{job.id}-take{result.take}{upload.path.suffix}", f"Take {result.take} · seed {result.seed} · job {take.id}"))
    mention = f"<@{job.origin.user_id}> " if job.origin.user_id.startswith(("U", "W")) else ""
    lines = [f"{mention}*{esc(job_title(job))}*", f"> {esc(short_prompt(job.prompt))}", *map(esc, result_lines(job))]
    return files, "\n".join([*lines, *(f"_{esc(n)}_" for n in notes)])


def set_updates(job: Job, file_ids: list[str], result_ts: str | None) -> dict[str, Any]:
    """What the store keeps of the set's message: its files (the sheet is the card's still) and its ts."""
    extra = {"file_ids": file_ids, "thumb_file_id": file_ids[0] if file_ids else None}
    updates: dict[str, Any] = {"origin_extra": {**job.origin.extra, **extra}}
    if result_ts:
        updates["result_message_id"] = result_ts
    return updates
