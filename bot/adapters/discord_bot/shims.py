"""SHIMS: small stand-ins for what the core and the settings do not offer yet.

Each one is a request to the lead (see the helper's report); when the real thing lands,
the adapter switches to it and the shim goes. Nothing here decides policy: the help text
is built from the service, the registry and the settings; the size goes through the one
chat parser; the pacing numbers are settings.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.core.commands import parse_command
from bot.core.pacing import RateScheduler, SchedulerPool
from bot.core.service import JobService
from providers.base import Capability
from providers.errors import InvalidRequest

P = TypeVar("P")


# --- SHIM 1: the status-edit budget belongs in DiscordSettings --------------------------------


class _Pacing(BaseSettings):
    """DISCORD_STATUS_EDITS_PER_WINDOW edits per DISCORD_STATUS_EDIT_WINDOW_SECONDS, per channel
    (bot-token edits) and per interaction webhook (token edits). Discord allows about 5 per 5 s."""

    model_config = SettingsConfigDict(env_prefix="DISCORD_", env_file=".env", extra="ignore", case_sensitive=False)

    status_edits_per_window: int = Field(default=5, ge=1, le=50)
    status_edit_window_seconds: float = Field(default=5.0, gt=0, le=300)


def pacing(settings: Any) -> tuple[int, float]:
    """(edits, per seconds): from DiscordSettings once it has the fields, else from the environment."""
    edits = getattr(settings, "status_edits_per_window", None)
    window = getattr(settings, "status_edit_window_seconds", None)
    if edits is None or window is None:
        shim = _Pacing()
        edits, window = shim.status_edits_per_window, shim.status_edit_window_seconds
    return int(edits), float(window)


# --- SHIM 2: a size or aspect ratio, normalised by the one chat parser ------------------------

#: The ratios the core's parser knows (bot.core.commands._RATIOS is private).
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")


def normalise_size(value: str) -> str:
    """`16:9` → `1280x720` as `/video --size 16:9` would; WxH as given (the service checks it)."""
    text = value.strip()
    if not text or any(ch.isspace() for ch in text):
        raise InvalidRequest(f"'{value}' is not a size. Give WIDTHxHEIGHT (1280x720) or a ratio ({', '.join(ASPECT_RATIOS)}).")
    return parse_command(f"/video --size {text}").flags["size"]


# --- SHIM 3: /help for this deployment (one core function should build it for every platform) --


def deployment_help(service: JobService) -> str:
    """The commands, this deployment's configured pipelines and its limits."""
    registry = service.registry
    settings = service.settings
    video_default = service.default_pipeline(image=False)
    image_default = service.default_pipeline(image=True)
    videos: list[str] = []
    images: list[str] = []
    for name in registry.names():
        try:
            pipeline = registry.get(name)
        except Exception:  # a pipeline that cannot even be built is not offered
            continue
        if not pipeline.configured:
            continue
        default = name in (video_default, image_default)
        about = f" — {pipeline.description}" if pipeline.description else ""
        if pipeline.video is None and Capability.TEXT_TO_IMAGE in pipeline.capabilities:
            images.append(f"`{name}`{' (default)' if default else ''}: {pipeline.default_size}{about}")
        elif pipeline.video is not None:
            shape = f"{pipeline.default_seconds}s · {pipeline.default_size}"
            videos.append(f"`{name}`{' (default)' if default else ''}: {shape}{about}")
    limits = [
        f"prompts up to {settings.max_prompt_chars} characters",
        f"{settings.max_queued_per_user} jobs waiting or running per person ({settings.max_running_per_user} at a time)",
        f"starting images up to {settings.max_image_mb:g} MB",
    ]
    if settings.daily_budget_user_usd is not None:
        limits.append(f"${settings.daily_budget_user_usd:.2f} a day per person")
    if settings.daily_budget_workspace_usd is not None:
        limits.append(f"${settings.daily_budget_workspace_usd:.2f} a day for this server")
    if settings.retention_days:
        limits.append(f"files kept {settings.retention_days:g} days")
    lines = [
        "**Commands**",
        "`/video prompt` (pipeline, size or aspect ratio, seconds, seed, audio, a starting image) · "
        "`/image prompt` · `/story scene | scene | …` (or a premise and a number of scenes) · `/jobs` · `/job id` · `/remix id prompt` · `/extend id` · `/reroll id` · "
        "`/cancel id` · `/delete id` · `/usage` · `/settings` · `/confirm code` · `/decline code` · `/help`",
        "Buttons: **Cancel** while a job runs; under a video **Re-roll**, **Remix…**, **Extend…**, **Delete**; "
        "under an image **Animate**, **Re-roll**, **Delete**. Reactions: 🔁 re-roll, ❌ cancel or delete, "
        "✉️ the file by DM, 🎬 animate an image.",
        "**Video pipelines**",
        *(f"• {line}" for line in videos or ["none configured"]),
        "**Image pipelines**",
        *(f"• {line}" for line in images or ["none configured"]),
        "**Limits**",
        *(f"• {line}" for line in limits),
    ]
    return "\n".join(lines)


# --- SHIM 4: retiring a scheduler, and a bounded `sent` record ---------------------------------


class RetiringPool(SchedulerPool[P]):
    """A SchedulerPool that can drop the scheduler of a limit that is done with (an interaction
    webhook whose token expired or whose job finished): one per command otherwise piles up for
    the life of the process. Also keeps each scheduler's `sent` record bounded (it grows by one
    entry per send, forever). Both want a home in bot.core.pacing."""

    SENT_KEPT = 1000

    def find(self, limit_key: Hashable) -> RateScheduler[P] | None:
        return self._schedulers.get(limit_key)

    async def retire(self, limit_key: Hashable) -> None:
        scheduler = self._schedulers.get(limit_key)
        if scheduler is None:
            return
        await scheduler.drain()
        # No await between the check and the removal: an offer after this gets a new scheduler.
        if scheduler.pending() == 0 and self._schedulers.get(limit_key) is scheduler:
            del self._schedulers[limit_key]
            await scheduler.close()

    def trim(self, limit_key: Hashable) -> None:
        scheduler = self._schedulers.get(limit_key)
        if scheduler is not None and len(scheduler.sent) > 2 * self.SENT_KEPT:
            del scheduler.sent[: -self.SENT_KEPT]
