"""The usage page (admins): spend per day, per user, per pipeline against the daily budgets;
success rate and median time to deliver per pipeline; the A/B splits' arms side by side.

One read of the window's rows (cost as the spend gate counts it: the store's `job_outcomes`),
grouped here; scenes of a story are left out (the story row carries their cost).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bot.core.budget import day_start
from bot.core.grants import Grant
from bot.core.models import Origin
from bot.web import charts
from bot.web.auth import need_admin
from bot.web.context import context
from bot.web.render import render, span


@dataclass
class Outcomes:
    jobs: int = 0
    completed: int = 0
    failed: int = 0
    spend: float = 0.0
    durations: list[float] = field(default_factory=list)

    def add(self, status: str, created: float, finished: float | None, cost: float) -> None:
        self.jobs += 1
        self.spend += cost
        if status == "completed":
            self.completed += 1
            if finished is not None:
                self.durations.append(finished - created)
        elif status == "failed":
            self.failed += 1

    @property
    def success(self) -> float | None:
        decided = self.completed + self.failed
        return self.completed / decided if decided else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.durations) if self.durations else None


async def usage_page(request: web.Request) -> web.StreamResponse:
    grant = need_admin(request)
    ctx = context(request)
    try:
        days = min(max(int(request.query.get("days", "30")), 1), 365)
    except ValueError:
        raise web.HTTPBadRequest(reason="days is a whole number") from None
    today = day_start()
    since = today - (days - 1) * 86400
    outcomes = await ctx.app.store.job_outcomes(
        since=since, platform=grant.platform, workspace_id=grant.workspace_id, scoped=not grant.operator, include_scenes=False
    )
    rows = [(o.created_at, o.finished_at, o.status.value, o.pipeline, o.user_id, o.user_name, o.ab_split, o.ab_arm, o.cost) for o in outcomes]
    per_day = {_date(since + i * 86400): 0.0 for i in range(days)}
    users: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, Outcomes] = {}
    splits: dict[tuple[str, str], Outcomes] = {}
    total = Outcomes()
    for created, finished, status, pipeline, user, name, split, arm, cost in rows:
        cost = float(cost or 0.0)
        per_day[_date(created)] = per_day.get(_date(created), 0.0) + cost
        who = users.setdefault(user, {"name": name or user, "jobs": 0, "spend": 0.0, "today": 0.0})
        who["jobs"] += 1
        who["spend"] += cost
        if created >= today:
            who["today"] += cost
        pipelines.setdefault(pipeline, Outcomes()).add(status, created, finished, cost)
        total.add(status, created, finished, cost)
        if split:
            splits.setdefault((split, arm or pipeline), Outcomes()).add(status, created, finished, cost)
    user_budget, tenant_budget = await _budgets(ctx, grant)
    by_user = sorted(users.items(), key=lambda kv: -kv[1]["spend"])
    by_pipeline = sorted(pipelines.items(), key=lambda kv: -kv[1].jobs)
    return render(request, "usage.html", {
        "days": days, "total": total, "today_spend": per_day.get(_date(today), 0.0),
        "user_budget": user_budget, "tenant_budget": tenant_budget,
        "by_user": by_user, "by_pipeline": by_pipeline, "splits": sorted(splits.items()),
        "day_chart": charts.bars([(d[5:], v) for d, v in per_day.items()], limit=tenant_budget, limit_label="daily budget"),
        "user_chart": charts.hbars(
            [(u["name"], u["today"], f"${u['today']:.2f} today") for _, u in by_user[:12]], limit=user_budget, limit_label="per user"
        ) if by_user else None,
        "pipeline_chart": charts.hbars(
            [(p, o.success or 0.0, _rate(o)) for p, o in by_pipeline[:12]], percent=True
        ) if by_pipeline else None,
    })  # fmt: skip


async def _budgets(ctx: Any, grant: Grant) -> tuple[float | None, float | None]:
    """The daily budgets that apply to the tenant (its settings over the environment's)."""
    core = ctx.settings
    if grant.operator:
        return core.daily_budget_user_usd, core.daily_budget_workspace_usd
    here = await ctx.app.service.tenant_settings.effective(Origin(platform=grant.platform or "", workspace_id=grant.workspace_id, user_id=grant.user_id))
    return here.get("user_budget_usd"), here.get("tenant_budget_usd") if grant.workspace_id else None


def _rate(o: Outcomes) -> str:
    rate = f"{o.success:.0%}" if o.success is not None else "–"
    median = f", {span(o.median)}" if o.median is not None else ""
    return rate + median


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
