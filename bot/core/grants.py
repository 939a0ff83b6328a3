"""Who may browse the web gallery: signed, expiring grants bound to one user in one tenant.

`/gallery` in chat answers with a personal link (`PUBLIC_URL/g/TOKEN`) that holds a grant of
kind "link"; opening it sets a session cookie holding a grant of kind "session" (with a random
session id the CSRF tokens derive from). `videobot web --link` makes an operator grant: every
tenant, admin pages included. A grant is `base64url(json).base64url(hmac-sha256)`, signed with
VIDEOBOT_WEB_SECRET (or a random secret kept in the data dir, shared by every process on it).
Nothing is stored server-side: a grant is valid while its signature holds and it has not expired.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from pydantic import BaseModel, ValidationError

from bot.config import CoreSettings
from bot.core import signing_key
from bot.core.models import Actor, Job, Origin, Tenant

SECRET_FILE = signing_key.FILE_NAME


class Grant(BaseModel):
    kind: str  # "link" | "session"
    user_id: str
    user_name: str | None = None
    #: The tenant; None with `operator` (every tenant).
    platform: str | None = None
    workspace_id: str | None = None
    is_admin: bool = False
    operator: bool = False
    #: Asked for from a direct conversation: that person's own tenant, without admins.
    direct: bool = False
    expires_at: float
    #: A session's id (CSRF tokens are derived from it).
    sid: str | None = None

    @property
    def tenant(self) -> Tenant | None:
        if self.operator:
            return None
        return Tenant(platform=self.platform or "", workspace_id=self.workspace_id, owner=self.user_id if self.direct else None)

    @property
    def admin(self) -> bool:
        return self.operator or (self.is_admin and not self.direct)

    def actor(self) -> Actor:
        if self.operator:
            return Actor(user_id=self.user_id, is_admin=True, platform="cli")
        return Actor(user_id=self.user_id, is_admin=self.admin, platform=self.platform, workspace_id=self.workspace_id, direct=self.direct)

    def can_see(self, job: Job) -> bool:
        """The operator sees every job; anyone else their tenant's, and of those the private ones
        only when they own them or are an admin there."""
        return self.operator or self.actor().sees(job)

    def owns(self, job: Job) -> bool:
        return self.operator or (job.origin.platform == self.platform and job.origin.user_id == self.user_id)


class BadGrant(Exception):
    """Not signed by us, altered, of the wrong kind, or expired."""


def secret(settings: CoreSettings) -> bytes:
    """VIDEOBOT_WEB_SECRET, else a random secret made once and kept (0600) in the data dir;
    a key under 32 bytes is refused (`bot.core.signing_key`)."""
    return signing_key.load(settings)


def sign(grant: Grant, key: bytes) -> str:
    body = _b64(json.dumps(grant.model_dump(exclude_none=True), separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_mac(key, body))}"


def read(token: str, key: bytes, *, kind: str, now: float | None = None) -> Grant:
    body, dot, mac = token.partition(".")
    if not dot or not hmac.compare_digest(_b64(_mac(key, body)), mac):
        raise BadGrant("bad signature")
    try:
        grant = Grant.model_validate_json(_unb64(body))
    except (ValidationError, ValueError) as exc:
        raise BadGrant("unreadable") from exc
    if grant.kind != kind:
        raise BadGrant(f"not a {kind}")
    if grant.expires_at < (now if now is not None else time.time()):
        raise BadGrant("expired")
    return grant


def csrf_token(key: bytes, sid: str) -> str:
    return _b64(hmac.new(key, f"csrf:{sid}".encode(), hashlib.sha256).digest())


def link_grant(origin: Origin, actor: Actor, settings: CoreSettings, *, operator: bool = False) -> Grant:
    return Grant(
        kind="link", user_id=origin.user_id, user_name=origin.user_name,
        platform=None if operator else origin.platform, workspace_id=None if operator else origin.workspace_id,
        is_admin=operator or (actor.is_admin and not origin.direct), operator=operator, direct=not operator and origin.direct,
        expires_at=time.time() + settings.web_link_minutes * 60,
    )  # fmt: skip


def base_url(settings: CoreSettings) -> str | None:
    """Where the gallery is reached: VIDEOBOT_PUBLIC_URL, else this machine when a port is set."""
    if settings.public_url:
        return settings.public_url
    if settings.web_port:
        host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
        return f"http://{host}:{settings.web_port}"
    return None


def personal_link(origin: Origin, actor: Actor, settings: CoreSettings, *, operator: bool = False) -> str | None:
    """A signed link for this person (their tenant; admin pages if they are an admin there), or
    None when the gallery is not set up here."""
    base = base_url(settings)
    if base is None:
        return None
    grant = link_grant(origin, actor, settings, operator=operator)
    return f"{base}/g/{sign(grant, secret(settings))}"


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
