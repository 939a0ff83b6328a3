"""The web gallery's aiohttp application and the server that runs it (alone or inside `videobot run`).

Routes (every page needs a session from a personal link, see `bot.web.auth`):
  GET  /g/{token}                  a personal link -> session cookie -> /
  GET  /                           the gallery (filters, search, keyset pages; ?partial=1: cards only)
  GET  /jobs/{id}                  a job: player, facts, lineage, scenes, timeline, buttons
  POST /jobs/{id}/{action}         reroll | remix | extend | delete | cancel | animate (CSRF)
  POST /confirm/{token}            a costly request confirmed or declined (CSRF)
  GET  /media/{id}/{file|thumb}    the files, with Range requests
  GET  /usage                      admins: spend, budgets, success, A/B
  GET  /admin                      admins: provider diagnostics (and runners, operator)
  GET  /admin/remote/{p}/{id}      one remote video or task; POST .../delete (CSRF)
  POST /logout                     ends the session (CSRF)
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from importlib import resources

from aiohttp import web

from bot.app import App
from bot.core.signing_key import KeyRing
from bot.web import auth, diagnostics, files, pages, usage
from bot.web.auth import Handler
from bot.web.context import CONTEXT, WebContext
from bot.web.render import environment, render
from bot.observability.server import add_routes
from bot.observability.wiring import ops_for

log = logging.getLogger(__name__)

_HEADINGS = {
    400: "That did not work", 401: "Sign-in needed", 403: "Not allowed", 404: "Not found", 409: "Not now", 502: "The provider did not answer",
}
_MESSAGES = {
    401: "This page needs a personal link, and this browser has none (or it expired).",
    404: "There is no such page or job here.",
}


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as pages people can read (status kept); media and partial requests get plain text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith(("/media/", "/static/")) or request.query.get("partial") == "1":
            raise
        default = HTTPStatus(exc.status).phrase
        message = _MESSAGES.get(exc.status, default) if exc.reason in ("", default) else exc.reason
        if exc.status == 401 and request.path.startswith("/g/"):
            message = "This link is not valid any more (links work for a limited time). Ask for a new one with /gallery."
        return render(request, "error.html", {
            "status": exc.status, "heading": _HEADINGS.get(exc.status, "Something went wrong"), "message": message,
        }, status=exc.status)  # fmt: skip


async def health(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def bye(request: web.Request) -> web.StreamResponse:
    return render(request, "error.html", {"status": 200, "heading": "Signed out", "message": "This browser no longer has your session."})


def create_app(app: App) -> web.Application:
    web_app = web.Application(middlewares=[auth.session_middleware, error_pages], client_max_size=64 * 1024)
    web_app[CONTEXT] = WebContext(app=app, keys=KeyRing(app.settings.core), templates=environment())
    r = web_app.router
    r.add_get("/g/{token}", auth.open_link)
    r.add_get("/", pages.gallery)
    r.add_get("/jobs/{job_id}", pages.job_page)
    r.add_post("/jobs/{job_id}/{action}", pages.act)
    r.add_post("/confirm/{token}", pages.confirm)
    r.add_get("/media/{job_id}/{which}", files.media)
    r.add_get("/usage", usage.usage_page)
    r.add_get("/admin", diagnostics.overview)
    r.add_get("/admin/remote/{provider}/{remote_id}", diagnostics.show)
    r.add_post("/admin/remote/{provider}/{remote_id}/delete", diagnostics.delete)
    r.add_post("/logout", auth.logout)
    r.add_get("/bye", bye)
    ops = ops_for(app)
    if ops is not None:
        add_routes(web_app, ops)  # /metrics, /healthz, /readyz (bot/observability)
    else:
        r.add_get("/healthz", health)
    r.add_static("/static", str(resources.files("bot.web") / "static"), append_version=False)
    return web_app


class WebServer:
    """The gallery on host:port, started and stopped with the process that holds `app`."""

    def __init__(self, app: App, *, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(create_app(self.app), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port (tests): report the one the OS picked
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        log.info("web gallery on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
