"""The gallery grid, a job's page, and the buttons on it (the same core calls as chat)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from bot.core.actions import VIA, perform
from bot.core.errors import JobNotFound, JobStateError, NeedsConfirmation, NotAllowed, user_message
from bot.core.grants import Grant
from bot.core.tenant_settings import Effective
from bot.core.models import DELIVER, PLACE, WEB_ONLY, Job, JobKind, JobStatus, Origin
from bot.core.views import Action, Phase, actions_for, status_view
from bot.web.auth import need, need_post
from bot.web.context import context
from bot.web.disclosure import timeline
from bot.web.files import visible_job
from bot.web.render import render
from bot.core.errors import VideobotError
from storage.gallery import GalleryQuery

PAGE = 24
#: What a web button may ask (DM is a chat gesture; the rest are the chat buttons).
WEB_ACTIONS = {
    a.value: a
    for a in (
        Action.REROLL, Action.REMIX, Action.EXTEND, Action.DELETE, Action.CANCEL, Action.ANIMATE, Action.REDO_SCENE, Action.ADD_SCENE,
        Action.USE, Action.MORE_LIKE,
    )
}  # fmt: skip
#: The Discord adapter posts a job's status message as a reply to this message (flows.STATUS_REPLY_TO).
_DISCORD_REPLY_TO = "status_reply_to"


@dataclass(frozen=True)
class Filters:
    user: str | None = None
    channel: str | None = None
    pipeline: str | None = None
    status: str | None = None
    since: str | None = None  # YYYY-MM-DD, UTC
    until: str | None = None  # YYYY-MM-DD, inclusive
    q: str | None = None

    @classmethod
    def of(cls, query: Any) -> Filters:
        def get(name: str) -> str | None:
            value = (query.get(name) or "").strip()
            return value[:200] or None

        status = get("status")
        if status is not None and status not in {s.value for s in JobStatus}:
            raise web.HTTPBadRequest(reason="unknown status")
        return cls(user=get("user"), channel=get("channel"), pipeline=get("pipeline"), status=status,
                   since=get("from"), until=get("to"), q=get("q"))  # fmt: skip

    def query(self, grant: Grant, *, before: tuple[float, str] | None, limit: int) -> GalleryQuery:
        return GalleryQuery(
            platform=grant.platform, workspace_id=grant.workspace_id, scoped=not grant.operator,
            user_id=self.user, channel_id=self.channel, pipeline=self.pipeline, status=self.status,
            since=_day(self.since), until=_day(self.until, end=True), search=self.q, before=before, limit=limit,
            viewer_user=grant.user_id, viewer_admin=grant.admin,
        )  # fmt: skip

    def params(self) -> dict[str, str]:
        """The filters as query parameters (for the next page's link)."""
        pairs = {"user": self.user, "channel": self.channel, "pipeline": self.pipeline, "status": self.status,
                 "from": self.since, "to": self.until, "q": self.q}  # fmt: skip
        return {k: v for k, v in pairs.items() if v}

    @property
    def active(self) -> bool:
        return bool(self.params())


def _day(text: str | None, *, end: bool = False) -> float | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise web.HTTPBadRequest(reason="dates are YYYY-MM-DD") from None
    return (day + timedelta(days=1) if end else day).timestamp()


def _cursor(text: str | None) -> tuple[float, str] | None:
    if not text:
        return None
    at, _, job_id = text.partition("_")
    try:
        return float(at), job_id
    except ValueError:
        raise web.HTTPBadRequest(reason="bad page cursor") from None


async def gallery(request: web.Request) -> web.StreamResponse:
    """GET /: the grid, newest first; `?partial=1` answers only the cards (infinite scroll)."""
    grant = need(request)
    store = context(request).app.store
    filters = Filters.of(request.query)
    query = filters.query(grant, before=_cursor(request.query.get("after")), limit=PAGE + 1)
    jobs = await store.gallery(query)
    more = len(jobs) > PAGE
    jobs = jobs[:PAGE]
    after = f"{jobs[-1].created_at!r}_{jobs[-1].id}" if more else None
    page = {"jobs": jobs, "after": after, "filters": filters, "next_params": {**filters.params(), "after": after} if after else None}
    if request.query.get("partial") == "1":
        response = render(request, "_cards.html", page)
        if after:
            response.headers["X-Next-After"] = after
        return response
    facets = await store.gallery_facets(query)
    return render(request, "gallery.html", {**page, "facets": facets, "statuses": [s.value for s in JobStatus]})


async def job_page(request: web.Request) -> web.StreamResponse:
    grant = need(request)
    store = context(request).app.store
    job = await visible_job(request, request.match_info["job_id"])
    parent = await store.get(job.parent_id) if job.parent_id else None
    if parent is not None and (parent.deleted_at is not None or not grant.can_see(parent)):
        parent = None
    children = [c for c in await store.children(job.id) if c.deleted_at is None and grant.can_see(c)]
    scenes = _scenes(children) if job.kind is JobKind.STORY else []
    takes = sorted((c for c in children if c.state.get("take")), key=lambda c: int(c.state["take"]))
    others = [c for c in children if not c.state.get("story_scene") and not c.state.get("take")]
    view = status_view(job)
    may_act = grant.owns(job) or grant.admin
    buttons = [a for a in actions_for(job, view.phase) if a.value in WEB_ACTIONS] if may_act else []
    return render(request, "job.html", {
        "job": job, "view": view, "parent": parent, "children": others, "scenes": scenes, "takes": takes,
        "events": timeline(await store.events(job.id), grant), "buttons": buttons, "timings": _timings(job),
        "is_video": _is_video(job), "phase_done": view.phase is Phase.DONE,
    })  # fmt: skip


def _scenes(children: list[Job]) -> list[Job]:
    """A story's scenes in order: for each scene number the latest attempt (a retried scene has two rows)."""
    best: dict[int, Job] = {}
    for child in children:
        k = child.state.get("story_scene")
        if isinstance(k, int) and (k not in best or child.created_at >= best[k].created_at):
            best[k] = child
    return [best[k] for k in sorted(best)]


def _is_video(job: Job) -> bool:
    return job.kind is not JobKind.IMAGE and bool(job.output_path) and str(job.output_path).lower().endswith((".mp4", ".webm", ".mov"))


def _timings(job: Job) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    if job.started_at:
        rows.append(("waited in queue", job.started_at - job.created_at))
    if job.started_at and job.finished_at:
        rows.append(("ran for", job.finished_at - job.started_at))
    if job.finished_at:
        rows.append(("asked to done", job.finished_at - job.created_at))
    return rows


async def web_origin(original: Job, grant: Grant, rules: Effective) -> Origin:
    """Where a job started from the web lives. The operator acts for the original's owner; the
    owner's new job goes where the original was asked; someone else's goes there only when the
    original is public and the tenant's reuse rule lets others reuse jobs in their channels. Else
    (a private or direct original, or reuse "owner") the new job's result shows on its web page
    alone: nothing of the asker's is posted into a place they may not see."""
    o = original.origin
    extra: dict[str, Any] = {VIA: "web"}
    if o.extra.get("thread_ts"):
        extra["thread_ts"] = o.extra["thread_ts"]
    reply_to = o.result_message_id or o.status_message_id
    if o.platform == "discord" and reply_to:
        extra[_DISCORD_REPLY_TO] = reply_to
    if PLACE in o.extra:
        extra[PLACE] = o.extra[PLACE]
    if grant.operator or grant.user_id == o.user_id:
        user_id, name = (o.user_id, o.user_name) if grant.operator else (grant.user_id, grant.user_name)
        return Origin(platform=o.platform, workspace_id=o.workspace_id, channel_id=o.channel_id, user_id=user_id, user_name=name, extra=extra)
    if not o.private and rules.get("reuse", "channel") in ("channel", "tenant"):
        return Origin(platform=o.platform, workspace_id=o.workspace_id, channel_id=o.channel_id, user_id=grant.user_id, user_name=grant.user_name, extra=extra)
    web_only = {VIA: "web", DELIVER: WEB_ONLY, PLACE: "direct" if grant.direct else "private"}
    return Origin(platform=o.platform, workspace_id=o.workspace_id, channel_id=None, user_id=grant.user_id, user_name=grant.user_name, extra=web_only)


async def act(request: web.Request) -> web.StreamResponse:
    """POST /jobs/{id}/{action}: re-roll, remix, extend, delete (and cancel, animate) as in chat."""
    grant, form = await need_post(request)
    action = WEB_ACTIONS.get(request.match_info["action"])
    if action is None:
        raise web.HTTPNotFound(reason="no such action")
    job = await visible_job(request, request.match_info["job_id"])
    service = context(request).app.service
    try:
        seconds = int(form["seconds"]) if form.get("seconds") else None
        scene = int(form["scene"]) if form.get("scene") else None
        take = int(form["take"]) if form.get("take") else None
    except ValueError:
        raise web.HTTPBadRequest(reason="seconds, scene and take are whole numbers") from None
    try:
        outcome = await perform(
            service, action, job.id, actor=grant.actor(), origin=await web_origin(job, grant, await service.admission.rules(job.origin)),
            prompt=form.get("prompt") or None, seconds=seconds, scene=scene, take=take,
        )  # fmt: skip
    except NeedsConfirmation as offer:
        return render(request, "confirm.html", {"job": job, "offer": offer, "text": user_message(offer)})
    except VideobotError as exc:
        raise http_error(exc, missing="no such job") from None
    if outcome.started:
        await context(request).app.announce(outcome.job)  # its status card in chat now, not with its result
    if action is Action.DELETE:
        raise web.HTTPSeeOther("/")  # the job's page is gone with it
    raise web.HTTPSeeOther(f"/jobs/{outcome.job.id}" if outcome.started else f"/jobs/{job.id}")


async def confirm(request: web.Request) -> web.StreamResponse:
    """POST /confirm/{token}: a costly request the asker confirmed (or declined) in the browser."""
    grant, form = await need_post(request)
    service = context(request).app.service
    token = request.match_info["token"]
    try:
        if form.get("decline"):
            await service.decline(token, grant.actor())
            raise web.HTTPSeeOther("/")
        job = await service.confirm(token, grant.actor())
    except VideobotError as exc:
        raise http_error(exc, missing="no such offer") from None
    await context(request).app.announce(job)
    raise web.HTTPSeeOther(f"/jobs/{job.id}")


def http_error(exc: VideobotError, *, missing: str) -> web.HTTPException:
    """The core's refusals as HTTP answers (the same refusals chat shows as text): unknown or another
    tenant's -> 404, not yours -> 403, not in a state for it -> 409, anything else wrong -> 400."""
    if isinstance(exc, JobNotFound):
        return web.HTTPNotFound(reason=missing)
    if isinstance(exc, NotAllowed):
        return web.HTTPForbidden(reason=user_message(exc))
    if isinstance(exc, JobStateError):
        return web.HTTPConflict(reason=user_message(exc))
    return web.HTTPBadRequest(reason=user_message(exc))

