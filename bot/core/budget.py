"""Money: what a job will cost before it is sent, what was spent today, and the daily budgets.

A job counts against the day (UTC) it was created on: at its estimate while it runs
(the money is as good as spent), at its actual cost once finished. A failed or
cancelled job counts what the provider billed (Runway refunds most failures), plus
an image step that was already paid for.
"""
from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from bot.core.errors import BudgetExceeded
from bot.core.models import Job, JobKind, Origin
from providers.base import ImageRequest, VideoRequest
from providers.pipeline import Pipeline
from storage.contract import Store
from storage.spend import OverBudget, SpendLimit


def day_start(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def estimate_job_cost(pipeline: Pipeline, request: VideoRequest, job: Job) -> float | None:
    """Video step plus image step when the pipeline makes the first frame; None when unknown."""
    if pipeline.video is None:
        return None
    video = pipeline.video.estimate_cost(request)
    if video is None or not pipeline.uses_image_step(request) or pipeline.image is None:
        return video
    image = pipeline.image.estimate_cost(
        ImageRequest(prompt=job.prompt, size=request.size, seed=job.params.seed, quality=job.params.options.get("quality"))
    )
    return None if image is None else round(video + image, 4)


class Usage(BaseModel):
    user_spent: float
    user_budget: float | None
    workspace_spent: float | None = None
    workspace_budget: float | None = None

    def text(self) -> str:
        lines = [f"Today (UTC) you have spent ${self.user_spent:.2f}" + _of(self.user_budget, self.user_spent, "your") + "."]
        if self.workspace_spent is not None:
            lines.append(f"This workspace has spent ${self.workspace_spent:.2f}" + _of(self.workspace_budget, self.workspace_spent, "its") + ".")
        return "\n".join(lines)


def _of(budget: float | None, spent: float, whose: str) -> str:
    if budget is None:
        return " (no daily budget)"
    return f" of {whose} ${budget:.2f} daily budget (${max(budget - spent, 0):.2f} left)"


class PipelineStats(BaseModel):
    pipeline: str
    jobs: int
    completed: int
    failed: int
    success_rate: float | None
    median_seconds: float | None
    cost: float
    #: GPU time self-hosted providers (ComfyUI) reported, in seconds.
    gpu_seconds: float = 0.0


class Ledger:
    """Reads over the job table for spending and outcomes (typed store queries, one per backend)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def spent(self, *, platform: str, user_id: str | None = None, workspace_id: str | None = None, since: float | None = None) -> float:
        total = await self._store.spend_since(
            platform=platform, since=since if since is not None else day_start(), user_id=user_id, workspace_id=workspace_id
        )
        return round(total, 4)

    async def spent_by_user(self, *, since: float | None = None, user_id: str | None = None) -> list[tuple[str, str, str | None, int, float]]:
        """(platform, user, workspace, jobs, spent) per user, dearest first."""
        rows = await self._store.top_spenders(since=since if since is not None else day_start(), user_id=user_id)
        return [(r.platform, r.user_id, r.workspace_id, r.jobs, round(r.spent, 4)) for r in rows]

    async def pipeline_stats(self, *, since: float = 0.0) -> list[PipelineStats]:
        rows: dict[str, list[tuple[str, float, float | None, float]]] = {}
        gpu: dict[str, float] = {}
        for o in await self._store.job_outcomes(since=since, exclude_kinds=[JobKind.IMAGE]):
            rows.setdefault(o.pipeline, []).append((o.status.value, o.created_at, o.finished_at, o.cost))
            gpu[o.pipeline] = gpu.get(o.pipeline, 0.0) + o.gpu_seconds
        out = []
        for pipeline, items in sorted(rows.items()):
            completed = [i for i in items if i[0] == "completed"]
            failed = [i for i in items if i[0] == "failed"]
            durations = [i[2] - i[1] for i in completed if i[2] is not None]
            decided = len(completed) + len(failed)
            out.append(PipelineStats(
                pipeline=pipeline, jobs=len(items), completed=len(completed), failed=len(failed),
                success_rate=len(completed) / decided if decided else None,
                median_seconds=statistics.median(durations) if durations else None,
                cost=round(sum(i[3] for i in items), 4),
                gpu_seconds=round(gpu.get(pipeline, 0.0), 1),
            ))  # fmt: skip
        return out


class BudgetGuard:
    """Refuses a job that would take its user or workspace over the daily budget."""

    def __init__(self, store: Store, *, user_budget: float | None, workspace_budget: float | None) -> None:
        self.ledger = Ledger(store)
        self.user_budget = user_budget
        self.workspace_budget = workspace_budget

    def limits_for(
        self, origin: Origin, *, user_budget: float | None = None, workspace_budget: float | None = None, overridden: bool = False
    ) -> list[SpendLimit]:
        """The daily limits a job of `origin` is reserved against, in the store's own transaction.
        `overridden`: the given budgets (a tenant's settings) replace the environment's."""
        user = user_budget if overridden else self.user_budget
        workspace = workspace_budget if overridden else self.workspace_budget
        since = day_start()
        limits: list[SpendLimit] = []
        if user is not None:
            limits.append(SpendLimit(origin.platform, user, since, "your", user_id=origin.user_id))
        if workspace is not None and origin.workspace_id:
            limits.append(SpendLimit(origin.platform, workspace, since, "this workspace's", workspace_id=origin.workspace_id))
        return limits

    @staticmethod
    def refusal(over: OverBudget) -> BudgetExceeded:
        left = max(over.limit.limit - over.spent, 0.0)
        return BudgetExceeded(
            f"This job costs about ${over.cost:.2f}; you have ${left:.2f} left of {over.limit.whose} ${over.limit.limit:.2f} daily budget. "
            "It resets at midnight UTC; a shorter clip or another --pipeline may fit."
        )

    async def usage(self, origin: Origin) -> Usage:
        usage = Usage(
            user_spent=await self.ledger.spent(platform=origin.platform, user_id=origin.user_id),
            user_budget=self.user_budget,
        )
        if origin.workspace_id:
            usage.workspace_spent = await self.ledger.spent(platform=origin.platform, workspace_id=origin.workspace_id)
            usage.workspace_budget = self.workspace_budget
        return usage
