"""Server-side templates (Jinja2, autoescaped): no build step, no CDN, works offline."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from bot.core.models import Job, JobKind
from bot.core.render import job_title
from bot.web.auth import csrf_for, grant_of
from bot.web.context import context


def environment() -> jinja2.Environment:
    folder = resources.files("bot.web") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)), autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters.update(when=when, ago=ago, money=money, span=span, plain=plain, query=lambda d: urlencode(d))
    env.globals.update(job_title=job_title, length=length)
    return env


def render(request: web.Request, name: str, data: dict[str, Any], *, status: int = 200) -> web.Response:
    ctx = context(request)
    grant = grant_of(request)
    page = ctx.templates.get_template(name).render(grant=grant, csrf=csrf_for(request), path=request.path, **data)
    return web.Response(text=page, content_type="text/html", charset="utf-8", status=status)


def plain(line: str) -> str:
    """A chat status line without its leading emoji (a browser without an emoji font shows boxes)."""
    return re.sub(r"^[^\w(]+", "", line)


def length(job: Job) -> int:
    """Seconds of video: a story's scenes together (its params hold one scene's)."""
    scenes = job.state.get("plan", {}).get("scenes") if job.kind is JobKind.STORY else None
    return job.params.seconds * (len(scenes) if scenes else 1)


def when(ts: float | None) -> str:
    if not ts:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts: float | None) -> str:
    if not ts:
        return ""
    seconds = max(0.0, datetime.now(UTC).timestamp() - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 0.1 or value == 0 else f"${value:.4f}"


def span(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"
