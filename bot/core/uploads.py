"""The delivery policy: what file a platform gets for a job, given its upload limit.

The file itself when it fits; else a re-encode that fits (audio kept); else a still and
a note saying why. Re-encodes run in threads, at most one per core at a time, so a burst
of large results cannot starve the event loop or the machine.
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from providers.media import fit_to_size
from storage.models import Job, JobKind

_encoders: asyncio.Semaphore | None = None


def _encoder_slots() -> asyncio.Semaphore:
    global _encoders
    if _encoders is None:
        _encoders = asyncio.Semaphore(max(1, os.cpu_count() or 1))
    return _encoders


class Upload(BaseModel):
    #: None when there is nothing to attach (only the note is posted).
    path: Path | None
    filename: str | None = None
    #: Said under the post: a re-encode, or why a still came instead of the video.
    note: str | None = None
    is_still: bool = False


def mb(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB" if size >= 1_048_576 else f"{size / 1024:.0f} KB"


async def prepare_upload(job: Job, limit: int) -> Upload:
    """What to attach for `job` under a `limit`-byte upload cap."""
    if not job.output_path or not Path(job.output_path).exists():
        return Upload(path=None, note="The file is no longer available.")
    source = Path(job.output_path)
    size = source.stat().st_size
    suffix = source.suffix or (".png" if job.kind is JobKind.IMAGE else ".mp4")
    if size <= limit:
        return Upload(path=source, filename=f"{job.id}{suffix}")
    if job.kind is not JobKind.IMAGE:
        fitted = source.with_name(f"{source.stem}.fit-{limit}.mp4")
        if not fitted.exists():
            async with _encoder_slots():
                result = await asyncio.to_thread(fit_to_size, source, fitted, limit)
            fits, new_size = result.fits, result.size
            shape = f", {result.width}x{result.height}"
        else:
            new_size = fitted.stat().st_size
            fits, shape = new_size <= limit, ""
        if fits:
            note = f"Re-encoded to fit the {mb(limit)} upload limit here ({mb(size)} → {mb(new_size)}{shape})."
            return Upload(path=fitted, filename=f"{job.id}.mp4", note=note)
    note = (
        f"The file is {mb(size)}, over the {mb(limit)} upload limit here, and could not be shrunk to fit, "
        "so here is a still. Ask for fewer seconds or a smaller size."
    )
    thumb = Path(job.thumbnail_path) if job.thumbnail_path else None
    if thumb is not None and thumb.exists() and thumb.stat().st_size <= limit:
        return Upload(path=thumb, filename=f"{job.id}.jpg", note=note, is_still=True)
    return Upload(path=None, note=note, is_still=True)
