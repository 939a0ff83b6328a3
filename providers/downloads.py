"""Streaming a provider's output file to disk: one place for the status rules and the chunked write."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from providers.errors import ContentExpired, ProviderError, TransientError

CHUNK = 1024 * 1024


async def stream_to_file(
    http: httpx.AsyncClient, url: str, dest: Path, *, provider: str, label: str, headers: dict[str, str] | None = None
) -> None:
    """GET `url` into `dest` chunk by chunk (writes off the event loop).

    403/404/410: the provider's link expired (ContentExpired); 429/5xx and dropped
    connections: TransientError (the caller's retry engine repeats the read); other 4xx: ProviderError.
    """
    try:
        async with http.stream("GET", url, headers=headers or {}) as response:
            status = response.status_code
            if status in (403, 404, 410):
                raise ContentExpired(f"{label}'s link to this video expired; generate it again.", provider=provider,
                                     detail=f"output GET {status}")  # fmt: skip
            if status == 429 or status >= 500:
                raise TransientError(f"{label}'s download failed.", provider=provider, detail=f"output GET {status}")
            if status >= 400:
                raise ProviderError(f"{label}'s download failed.", provider=provider, detail=f"output GET {status}")
            with dest.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    await asyncio.to_thread(out.write, chunk)
    except httpx.HTTPError as exc:
        raise TransientError(f"{label}'s download was interrupted.", provider=provider, detail=repr(exc)) from exc
