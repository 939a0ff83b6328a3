"""What the web gallery's tests share: the app with a served gallery, and people with browsers.

A `Visitor` is a real HTTP client with its own cookie jar: it opens a personal link (signed
like `/gallery` signs it), keeps the session cookie, and reads the CSRF token off the page,
as a browser would.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import App
from bot.core.grants import link_grant, secret, sign
from bot.core.models import Actor, Origin
from bot.web.server import create_app

WEB_SECRET = "test-web-secret-0123456789-abcdefghijklmnop"
PUBLIC_URL = "http://gallery.test"

ALICE = Origin(platform="slack", workspace_id="TA", channel_id="C1", user_id="UALICE", user_name="alice")
BOB = Origin(platform="slack", workspace_id="TA", channel_id="C1", user_id="UBOB", user_name="bob")
MALLORY = Origin(platform="discord", workspace_id="900", channel_id="901", user_id="902", user_name="mallory")
OPERATOR = Origin(platform="cli", user_id="operator", user_name="operator")

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Served:
    app: App
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(app: App) -> Served:
    runner = web.AppRunner(create_app(app))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return Served(app, runner, f"http://127.0.0.1:{port}")


def link_for(app: App, origin: Origin, *, admin: bool = False, operator: bool = False, **changes: Any) -> str:
    grant = link_grant(origin, Actor.of(origin, is_admin=admin), app.settings.core, operator=operator)
    if changes:
        grant = grant.model_copy(update=changes)
    return f"/g/{sign(grant, secret(app.settings.core))}"


class Visitor:
    """One person's browser: cookies kept, redirects not followed unless asked."""

    def __init__(self, served: Served) -> None:
        self.base = served.url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def open_link(self, path: str) -> aiohttp.ClientResponse:
        response = await self.get(path)
        if response.status == 303:
            page = await self.get("/")
            found = _CSRF.search(await page.text())
            self.csrf = found.group(1) if found else ""
        return response

    async def get(self, path: str, **kw: Any) -> aiohttp.ClientResponse:
        response = await self.session.get(self.base + path, allow_redirects=False, **kw)
        await response.read()
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True) -> aiohttp.ClientResponse:
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf
        response = await self.session.post(self.base + path, data=form, allow_redirects=False)
        await response.read()
        return response

    async def text(self, path: str) -> str:
        response = await self.get(path)
        assert response.status == 200, (path, response.status, (await response.text())[:300])
        return await response.text()

    async def close(self) -> None:
        await self.session.close()
