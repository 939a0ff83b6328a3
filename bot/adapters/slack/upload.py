"""Uploads streamed from disk: files.getUploadURLExternal, a POST of the bytes, files.completeUploadExternal.

slack_sdk's `files_upload_v2` reads the whole file into memory (on the event loop) before
sending it; a 1 GB video must not be. The same three steps are done here with the bytes
streamed from the file in chunks read on a thread, and the length declared up front.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

CHUNK = 1 << 20
#: A big file on a slow link takes long; only a stalled connection is given up on.
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class UploadFailed(SlackClientError):
    """The upload URL refused the bytes (apierror.delivery_failure sorts it by status)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Failed to upload a file (status: {status}, body: {body[:200]})")
        self.status = status


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(handle.read, CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def upload_file(
    client: AsyncWebClient,
    path: Path,
    *,
    filename: str,
    title: str,
    alt_txt: str | None = None,
    channel: str | None = None,
    thread_ts: str | None = None,
    initial_comment: str | None = None,
) -> str:
    """Upload `path` (shared into `channel` when given, else kept private); returns the file id."""
    file_id = await _send_bytes(client, path, filename=filename, alt_txt=alt_txt)
    args: dict[str, Any] = {"files": [{"id": file_id, "title": title}]}
    if channel:
        args.update(channel_id=channel, thread_ts=thread_ts, initial_comment=initial_comment)
    await client.files_completeUploadExternal(**args)
    return file_id


async def upload_files(
    client: AsyncWebClient, files: list[tuple[Path, str, str]], *, channel: str, thread_ts: str | None, initial_comment: str
) -> list[str]:
    """Several files (path, filename, title) in ONE message of `channel`; returns their ids in order."""
    ids = [await _send_bytes(client, path, filename=filename) for path, filename, _ in files]
    items = [{"id": file_id, "title": title} for file_id, (_, _, title) in zip(ids, files, strict=True)]
    await client.files_completeUploadExternal(files=items, channel_id=channel, thread_ts=thread_ts, initial_comment=initial_comment)
    return ids


async def _send_bytes(client: AsyncWebClient, path: Path, *, filename: str, alt_txt: str | None = None) -> str:
    size = (await asyncio.to_thread(path.stat)).st_size
    got = await client.files_getUploadURLExternal(filename=filename, length=size, alt_txt=alt_txt)
    url, file_id = str(got["upload_url"]), str(got["file_id"])
    session = client.session
    assert session is not None  # the adapter's client always has its shared session
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    async with session.post(url, data=_chunks(path), headers=headers, timeout=UPLOAD_TIMEOUT) as response:
        if response.status != 200:
            raise UploadFailed(response.status, await response.text())
        await response.read()
    return file_id
