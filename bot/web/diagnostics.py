"""Admin diagnostics: the provider's own view of our videos, and who runs the jobs.

- OpenAI Videos protocol (the `sora` pipeline's provider, as `videobot remote` uses it):
  list, show and delete remote videos.
- Runway: its API has no listing, so the list is the tasks our jobs hold (their remote ids),
  each shown and deleted live through the Runway SDK (delete also stops a running task).
- Runners (operator only): which processes hold leases on unfinished jobs.

A tenant's admin sees only remote videos that belong to their tenant's jobs (anything else is a
404, as for jobs); the operator sees everything the key can see, including what the bot lost.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from bot.core.errors import user_message
from bot.core.grants import Grant
from bot.core.heartbeat import ALIVE_INTERVALS
from bot.web.auth import need_admin, need_post
from bot.web.context import WebContext, context
from bot.web.render import render
from bot.core.errors import VideobotError
from providers.openai_videos import OpenAIVideoProvider
from providers.runway import RunwayVideoProvider

log = logging.getLogger(__name__)
#: How many remote videos or tasks a page lists.
LIMIT = 50
PROVIDERS = ("openai", "runway")


def openai_provider(ctx: WebContext) -> OpenAIVideoProvider | None:
    registry = ctx.app.registry
    if "sora" not in registry:
        return None
    pipeline = registry.get("sora")
    return pipeline.video if pipeline.configured and isinstance(pipeline.video, OpenAIVideoProvider) else None


def runway_provider(ctx: WebContext) -> RunwayVideoProvider | None:
    registry = ctx.app.registry
    if "runway" not in registry:
        return None
    pipeline = registry.get("runway")
    return pipeline.video if pipeline.configured and isinstance(pipeline.video, RunwayVideoProvider) else None


async def our_remote_jobs(ctx: WebContext, grant: Grant, *, provider: str | None = None, limit: int = 500) -> dict[str, tuple[str, str]]:
    """remote id -> (our job id, status) for the jobs this grant may see (newest first)."""
    rows = await ctx.app.store.remote_jobs(
        platform=grant.platform, workspace_id=grant.workspace_id, scoped=not grant.operator, provider=provider, limit=limit
    )
    return {r.remote_id: (r.job_id, r.status.value) for r in rows}


async def overview(request: web.Request) -> web.StreamResponse:
    grant = need_admin(request)
    ctx = context(request)
    ours = await our_remote_jobs(ctx, grant)
    openai: dict[str, Any] = {"configured": False}
    if (provider := openai_provider(ctx)) is not None:
        openai["configured"] = True
        try:
            videos = await provider.list_remote(limit=LIMIT if grant.operator else 100)
            openai["videos"] = [v for v in videos if grant.operator or v.id in ours][:LIMIT]
        except VideobotError as exc:
            openai["error"] = user_message(exc)
    runway: dict[str, Any] = {"configured": runway_provider(ctx) is not None}
    if runway["configured"]:
        tasks = await our_remote_jobs(ctx, grant, provider="runway", limit=LIMIT)
        runway["tasks"] = [(remote, job_id, status) for remote, (job_id, status) in tasks.items()]
    runners: list[tuple[Any, ...]] = []
    processes: list[tuple[Any, ...]] = []
    queue = None
    if grant.operator:
        runners = [(h.owner, h.jobs, h.until) for h in await ctx.app.store.lease_holders()]
        # The processes serving this database, as `videobot status` lists them (their heartbeats).
        now, silent_after = time.time(), ALIVE_INTERVALS * ctx.settings.heartbeat_seconds
        processes = [
            (w.role, w.host, w.pid, w.held, w.last_seen, now - w.last_seen <= silent_after)
            for w in sorted(await ctx.app.store.workers(), key=lambda w: (w.role, w.host, w.pid))
        ]
        queue = await ctx.app.store.queue_stats()
    flash = None
    if deleted := request.query.get("deleted"):
        flash = f"Deleted {deleted[:100]} at the provider."
    elif kept := request.query.get("kept"):
        flash = f"The provider did not delete {kept[:100]}."
    return render(request, "diagnostics.html", {"openai": openai, "runway": runway, "ours": ours, "runners": runners, "processes": processes, "queue": queue, "flash": flash})


async def show(request: web.Request) -> web.StreamResponse:
    grant = need_admin(request)
    ctx = context(request)
    which, remote_id = request.match_info["provider"], request.match_info["remote_id"]
    ours = await _check_ours(ctx, grant, remote_id)
    try:
        if which == "openai":
            provider = _need(openai_provider(ctx))
            data = (await provider.show_remote(remote_id)).model_dump(mode="json")
        elif which == "runway":
            runway = _need(runway_provider(ctx))
            task = await runway.client.tasks.retrieve(remote_id)
            data = task.model_dump(mode="json")
        else:
            raise web.HTTPNotFound(reason="no such provider")
    except VideobotError as exc:
        raise web.HTTPBadGateway(reason=user_message(exc)) from None
    except web.HTTPException:
        raise
    except Exception as exc:  # the SDK's own errors (not found, auth): say what the provider said
        status = getattr(exc, "status_code", None)
        if status == 404:
            raise web.HTTPNotFound(reason=f"{which} has no {remote_id}") from None
        log.warning("diagnostics: %s show %s failed", which, remote_id, exc_info=True)
        raise web.HTTPBadGateway(reason=f"{which} did not answer as expected ({type(exc).__name__})") from None
    return render(request, "remote.html", {
        "which": which, "remote_id": remote_id, "ours": ours, "data": json.dumps(data, indent=2, sort_keys=True, default=str),
        "status": data.get("status"),
    })  # fmt: skip


async def delete(request: web.Request) -> web.StreamResponse:
    grant, _ = await need_post(request)
    if not grant.admin:
        raise web.HTTPForbidden(reason="admins only")
    ctx = context(request)
    which, remote_id = request.match_info["provider"], request.match_info["remote_id"]
    await _check_ours(ctx, grant, remote_id)
    try:
        if which == "openai":
            deleted = await _need(openai_provider(ctx)).delete_remote(remote_id)
        elif which == "runway":
            await _need(runway_provider(ctx)).cancel(remote_id)  # DELETE /v1/tasks/{id}: cancels or deletes
            deleted = True
        else:
            raise web.HTTPNotFound(reason="no such provider")
    except VideobotError as exc:
        raise web.HTTPBadGateway(reason=user_message(exc)) from None
    log.info("diagnostics: %s deleted %s remote %s (%s)", grant.user_id, which, remote_id, deleted)
    raise web.HTTPSeeOther(f"/admin?deleted={remote_id}" if deleted else f"/admin?kept={remote_id}")


async def _check_ours(ctx: WebContext, grant: Grant, remote_id: str) -> tuple[str, str] | None:
    """Our job for this remote id; for a tenant's admin a remote id not of their tenant is a 404."""
    rows = await ctx.app.store.remote_jobs(
        platform=grant.platform, workspace_id=grant.workspace_id, scoped=not grant.operator, remote_id=remote_id, limit=1
    )
    if not rows and not grant.operator:
        raise web.HTTPNotFound(reason="no such remote video here")
    return (rows[0].job_id, rows[0].status.value) if rows else None


def _need(provider: Any) -> Any:
    if provider is None:
        raise web.HTTPNotFound(reason="that provider is not configured here")
    return provider
