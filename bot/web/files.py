"""Media files: a job's video (or image) and its still, served with HTTP Range requests.

aiohttp's FileResponse does the HTTP part: `Range: bytes=a-b` and suffix ranges (`bytes=-n`)
answer 206 with Content-Range, an unsatisfiable range 416 with `Content-Range: bytes */size`,
If-Range and conditional requests. It streams from disk (sendfile, or chunks where sendfile is
unavailable): a 500 MB file is never read whole, so players can seek and many can watch at once.

Only the files a job row names are served, only inside the media directory, and only to a
session whose tenant holds the job (another tenant's job is a 404, like one that does not exist).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from bot.core.models import Job
from bot.web.auth import need
from bot.web.context import context

_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
#: Read size when sendfile is not used (TLS, or AIOHTTP_NOSENDFILE).
CHUNK = 256 * 1024


async def visible_job(request: web.Request, job_id: str) -> Job:
    """The job if this session's tenant holds it and its owner has not deleted it; 404 otherwise
    (whether or not it exists: a deleted job's page and files are gone for everyone)."""
    grant = need(request)
    job = await context(request).app.store.get(job_id)
    if job is None or job.deleted_at is not None or not grant.can_see(job):
        raise web.HTTPNotFound(reason="no such job")
    return job


async def media(request: web.Request) -> web.StreamResponse:
    """GET /media/{job_id}/{file|thumb}."""
    job = await visible_job(request, request.match_info["job_id"])
    which = request.match_info["which"]
    name = job.output_path if which == "file" else job.thumbnail_path if which == "thumb" else None
    if not name or job.deleted_at is not None or job.media_expired_at is not None:
        raise web.HTTPNotFound(reason="no such file")
    path = await asyncio.to_thread(_inside, Path(name), context(request).app.media.root)
    if path is None:
        raise web.HTTPNotFound(reason="no such file")
    response = web.FileResponse(path, chunk_size=CHUNK, headers={"Content-Type": _TYPES.get(path.suffix.lower(), "application/octet-stream")})
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _inside(path: Path, root: Path) -> Path | None:
    """The file, resolved, if it exists inside the media root (a row never points us elsewhere)."""
    try:
        resolved = path.resolve(strict=True)
    except OSError:
        return None
    if not resolved.is_file() or not resolved.is_relative_to(root.resolve()):
        return None
    return resolved
