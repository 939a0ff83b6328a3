"""Media retention: old jobs' files are removed, their rows and history kept.

A job whose files are gone is marked `media_expired_at`; its buttons and commands then
answer that the file is gone instead of failing somewhere deeper.
"""
from __future__ import annotations

import asyncio
import logging
import time

from storage.contract import Store
from storage.media import MediaStore

log = logging.getLogger(__name__)

#: How often `videobot run` sweeps when retention is on.
SWEEP_INTERVAL_SECONDS = 3600.0


async def expire_media(store: Store, media: MediaStore, days: float, *, now: float | None = None) -> int:
    """Remove the files of every job finished more than `days` ago; returns how many jobs."""
    cutoff = (time.time() if now is None else now) - days * 86400
    expired = 0
    while batch := await store.media_to_expire(cutoff):
        for job in batch:
            await asyncio.to_thread(media.delete_job_files, job.id)
            await store.update(
                job.id, media_expired_at=time.time(), output_path=None, thumbnail_path=None,
                detail=f"media removed after {days:g} days (retention)",
            )  # fmt: skip
            expired += 1
    if expired:
        log.info("retention: removed the files of %d jobs finished before %s days ago", expired, days)
    return expired


async def sweep_forever(store: Store, media: MediaStore, days: float, interval: float = SWEEP_INTERVAL_SECONDS) -> None:
    while True:
        try:
            await expire_media(store, media, days)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed")
        await asyncio.sleep(interval)
