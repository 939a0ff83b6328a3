"""An httpx client made on first use and closed with its provider.

A provider is built for every configured pipeline at start-up, most never called in a given
process (a gateway, a CLI command): the client, its pool and its TLS context wait until a
request needs them. Redirects are followed: result downloads are served from signed CDN links.
"""
from __future__ import annotations

import httpx


class LazyHttp:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout), follow_redirects=True)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
