"""What this deployment offers, for `/video help` (Slack) and `/help` (console).

SHIM (issue 10): platform-neutral, so it belongs in the core (for example
`bot.core.render.deployment_help(service, upload_limit=None)` used by `run_command`'s
help reply). It lives here until then; it imports nothing of Slack.
"""
from __future__ import annotations

from bot.core.service import JobService
from bot.core.uploads import mb
from providers.base import Capability


def deployment_help(service: JobService, *, upload_limit: int | None = None) -> str:
    """The configured pipelines (defaults marked, with their default length and size) and the limits."""
    default_video = service.default_pipeline(image=False)
    default_image = service.default_pipeline(image=True)
    videos: list[str] = []
    images: list[str] = []
    missing: list[str] = []
    for name in service.pipelines():
        pipeline = service.registry.get(name)
        if not pipeline.configured:
            missing.append(name)
            continue
        if pipeline.video is None:
            mark = " (default)" if name == default_image else ""
            images.append(f"{name}{mark}, {pipeline.default_size}")
            continue
        mark = " (default)" if name == default_video else ""
        can = [label for cap, label in ((Capability.IMAGE_TO_VIDEO, "animate"), (Capability.REMIX, "remix"), (Capability.EXTEND, "extend")) if cap in pipeline.capabilities]
        videos.append(f"{name}{mark}, {pipeline.default_seconds} s at {pipeline.default_size}" + (f", {'/'.join(can)}" if can else ""))
    settings = service.settings
    lines = ["This bot offers:"]
    if videos:
        lines.append("  video pipelines: " + "; ".join(videos))
    if images:
        lines.append("  image pipelines: " + "; ".join(images))
    if missing:
        lines.append("  not configured here: " + ", ".join(missing))
    limits = [
        f"prompts up to {settings.max_prompt_chars} characters",
        f"{settings.max_queued_per_user} jobs waiting or running per person",
        f"input images up to {settings.max_image_mb:g} MB",
    ]
    if upload_limit is not None:
        size = f"{upload_limit / (1 << 30):.1f} GB" if upload_limit >= 1 << 30 else mb(upload_limit)
        limits.append(f"results over {size} are re-encoded to fit, else posted as a still")
    lines.append("  limits: " + "; ".join(limits))
    budgets = []
    if settings.daily_budget_user_usd is not None:
        budgets.append(f"${settings.daily_budget_user_usd:.2f} per person")
    if settings.daily_budget_workspace_usd is not None:
        budgets.append(f"${settings.daily_budget_workspace_usd:.2f} per workspace")
    if budgets:
        lines.append("  daily budget (UTC): " + ", ".join(budgets))
    return "\n".join(lines)
