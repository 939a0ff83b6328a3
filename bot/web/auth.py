"""Grants in the browser: the personal link sets a session cookie; every page needs it.

- GET /g/TOKEN: a signed link grant (bound to one user and tenant, expiring) becomes a
  session cookie (HttpOnly, SameSite=Lax, Secure behind https) and a redirect to the gallery.
- No session: 401 (a page saying to ask /gallery in chat). Admin pages without admin: 403.
- Every state change is a POST carrying `csrf`, an HMAC of the session id: missing or wrong: 403.
  (SameSite=Lax already keeps the cookie off cross-site POSTs; the token holds without it.)
"""
from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from aiohttp import web

from bot.core.errors import ConfigError
from bot.core.grants import BadGrant, Grant, csrf_token, read, sign
from bot.web.context import WebContext, context

log = logging.getLogger(__name__)
COOKIE = "videobot_session"
GRANT_KEY = web.RequestKey("grant", object)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = context(request)
    try:
        key = ctx.key
    except ConfigError as exc:  # the key file was replaced by a short one while we run: sign nothing, check nothing
        log.error("web gallery refuses requests: %s", exc.message)
        return web.Response(status=503, text="The gallery is unavailable: its signing key is not usable (the operator's log says why).")
    grant: Grant | None = None
    token = request.cookies.get(COOKIE)
    if token:
        try:
            grant = read(token, key, kind="session")
        except BadGrant:
            grant = None
    request[GRANT_KEY] = grant
    response = await handler(request)
    # Pages hold tenant data: not for shared caches, never framed, no referrer with the link in it.
    response.headers.setdefault("Cache-Control", "private, no-store" if not request.path.startswith("/static/") else "public, max-age=3600")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    return response


def grant_of(request: web.Request) -> Grant | None:
    return request.get(GRANT_KEY)  # type: ignore[return-value]


class Unauthorized(web.HTTPUnauthorized):
    pass


def need(request: web.Request) -> Grant:
    """The session's grant, or 401."""
    grant = grant_of(request)
    if grant is None:
        raise Unauthorized()
    return grant


def need_admin(request: web.Request) -> Grant:
    grant = need(request)
    if not grant.admin:
        raise web.HTTPForbidden(reason="admins only")
    return grant


def csrf_for(request: web.Request) -> str:
    grant = grant_of(request)
    if grant is None or grant.sid is None:
        return ""
    return csrf_token(context(request).key, grant.sid)


async def need_post(request: web.Request) -> tuple[Grant, dict[str, str]]:
    """A state-changing request: a session (401) and its CSRF token in the form (403)."""
    grant = need(request)
    form = {k: str(v) for k, v in (await request.post()).items() if isinstance(v, str)}
    sent = form.get("csrf", "")
    if not sent or grant.sid is None or not hmac.compare_digest(sent, csrf_token(context(request).key, grant.sid)):
        raise web.HTTPForbidden(reason="missing or wrong CSRF token")
    return grant, form


async def open_link(request: web.Request) -> web.StreamResponse:
    """GET /g/TOKEN: a personal link becomes a browser session."""
    ctx = context(request)
    try:
        link = read(request.match_info["token"], ctx.key, kind="link")
    except BadGrant:
        raise Unauthorized(reason="link not valid") from None
    session = link.model_copy(update={
        "kind": "session", "sid": secrets.token_urlsafe(16),
        "expires_at": time.time() + ctx.settings.web_session_hours * 3600,
    })  # fmt: skip
    response = web.HTTPSeeOther(local_target(request.query.get("next", "/")))
    set_session(response, session, ctx, secure=request.secure or (ctx.settings.public_url or "").startswith("https://"))
    raise response


#: Where a link may land: the gallery's own pages (and their query strings), nothing else.
_LOCAL_PAGE = re.compile(r"/(?:jobs/[A-Za-z0-9_-]{1,64}|usage|admin)?(?:\?[A-Za-z0-9._~%=&+-]*)?")


def local_target(raw: str) -> str:
    """`next` if it names one of our pages, else `/`. Browsers drop tabs and newlines from a
    Location and read a backslash as a slash, so `/%09/evil.example` would leave the site: any
    control character or backslash, raw or percent-decoded (twice: double encoding) refuses it."""
    forms = [raw, unquote(raw)]
    forms.append(unquote(forms[-1]))
    if any(c == "\\" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for text in forms for c in text):
        return "/"
    return raw if _LOCAL_PAGE.fullmatch(raw) else "/"


def set_session(response: web.StreamResponse, grant: Grant, ctx: WebContext, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE, sign(grant, ctx.key), max_age=int(ctx.settings.web_session_hours * 3600), httponly=True,
        samesite="Lax", secure=secure, path="/",
    )  # fmt: skip


async def logout(request: web.Request) -> web.StreamResponse:
    await need_post(request)
    response = web.HTTPSeeOther("/bye")
    response.del_cookie(COOKIE, path="/")
    raise response
