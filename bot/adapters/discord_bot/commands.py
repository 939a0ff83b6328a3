"""Slash commands: translate options into service calls; the service decides everything else."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.adapters.discord_bot.flows import adapter_of, reply_error, start_job
from bot.core.models import Actor, GenerateRequest, Job, JobKind, Origin
from bot.core.render import job_row, job_title
from providers.base import Capability
from providers.errors import InvalidRequest
from providers.pipeline import Pipeline

if TYPE_CHECKING:
    from bot.adapters.discord_bot.client import DiscordAdapter

MAX_CHOICES = 25  # Discord's cap on autocomplete suggestions
COMMON_SIZES = ("1280x720", "720x1280", "1024x1024", "1792x1024", "1024x1792", "640x360", "256x144")


def _pipelines(adapter: DiscordAdapter, capability: Capability) -> list[Pipeline]:
    registry = adapter.app.registry
    found = []
    for name in registry.names():
        try:
            pipeline = registry.get(name)
        except Exception:  # a pipeline that cannot even be built is not offered
            continue
        if capability in pipeline.capabilities and (capability is Capability.TEXT_TO_IMAGE or pipeline.video is not None):
            found.append(pipeline)
    return found


def _chosen(adapter: DiscordAdapter, interaction: discord.Interaction, *, image: bool = False) -> Pipeline | None:
    name = getattr(interaction.namespace, "pipeline", None) or adapter.app.service.default_pipeline(image=image)
    registry = adapter.app.registry
    if name and name in registry:
        try:
            return registry.get(name)
        except Exception:
            return None
    return None


async def video_pipelines(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    adapter = adapter_of(interaction)
    return [
        app_commands.Choice(name=f"{p.name} — {p.description}"[:100] if p.description else p.name, value=p.name)
        for p in _pipelines(adapter, Capability.TEXT_TO_VIDEO)
        if current.lower() in p.name.lower()
    ][:MAX_CHOICES]


async def image_pipelines(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    adapter = adapter_of(interaction)
    return [
        app_commands.Choice(name=p.name, value=p.name)
        for p in _pipelines(adapter, Capability.TEXT_TO_IMAGE)
        if p.video is None and current.lower() in p.name.lower()
    ][:MAX_CHOICES]


async def sizes(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    pipeline = _chosen(adapter_of(interaction), interaction)
    options = [pipeline.default_size] if pipeline is not None else []
    options += [s for s in COMMON_SIZES if s not in options]
    return [app_commands.Choice(name=s, value=s) for s in options if s.startswith(current.strip().lower())][:MAX_CHOICES]


async def seconds_choices(interaction: discord.Interaction, current: int | str) -> list[app_commands.Choice[int]]:
    pipeline = _chosen(adapter_of(interaction), interaction)
    default = pipeline.default_seconds if pipeline is not None else 4
    options = sorted({default, 4, 8, 12})
    return [app_commands.Choice(name=f"{s} s" + (" (default)" if s == default else ""), value=s) for s in options][:MAX_CHOICES]


def check_attachment(image: discord.Attachment, max_mb: float) -> None:
    """Refuse before anything is downloaded or billed: Discord tells us type and size up front."""
    if not (image.content_type or "").startswith("image/"):
        raise InvalidRequest(f"'{image.filename}' is not an image. Attach a PNG, JPEG or WebP.")
    if image.size > max_mb * 1_000_000:
        raise InvalidRequest(f"The image is {image.size / 1e6:.1f} MB; the limit is {max_mb:g} MB. Attach a smaller one.")


def register(tree: app_commands.CommandTree[Any], adapter: DiscordAdapter) -> None:
    service = adapter.app.service

    @tree.command(name="video", description="Make a video from a prompt (and optionally a starting image)")
    @app_commands.describe(
        prompt="What the video shows",
        seconds="Length in seconds",
        size="WIDTHxHEIGHT, e.g. 1280x720",
        pipeline="Which pipeline makes it",
        model="A model id of that pipeline",
        image="A starting image (PNG, JPEG or WebP)",
    )
    @app_commands.autocomplete(pipeline=video_pipelines, size=sizes, seconds=seconds_choices)
    async def video(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        seconds: app_commands.Range[int, 1, 120] | None = None,
        size: str | None = None,
        pipeline: str | None = None,
        model: str | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        if image is not None:
            check_attachment(image, adapter.app.settings.core.max_image_mb)

        async def submit(origin: Origin) -> Job:
            data = await image.read() if image is not None else None
            request = GenerateRequest(
                prompt=prompt, seconds=seconds, size=size, pipeline=pipeline, model=model,
                image_bytes=data, image_name=image.filename if image is not None else None,
            )  # fmt: skip
            return await service.submit(request, origin)

        await start_job(interaction, submit)

    @tree.command(name="image", description="Make a still image from a prompt")
    @app_commands.describe(prompt="What the image shows", size="WIDTHxHEIGHT", pipeline="Which image pipeline")
    @app_commands.autocomplete(pipeline=image_pipelines, size=sizes)
    async def image_cmd(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        size: str | None = None,
        pipeline: str | None = None,
    ) -> None:
        request = GenerateRequest(prompt=prompt, kind=JobKind.IMAGE, size=size, pipeline=pipeline)
        await start_job(interaction, lambda origin: service.submit(request, origin))

    @tree.command(name="jobs", description="Your recent jobs")
    async def jobs(interaction: discord.Interaction) -> None:
        found = await service.list_jobs(origin=adapter.origin_for(interaction), limit=10)
        if not found:
            text = "You have no jobs yet. Try `/video a teal coupe crossing a desert at noon`."
        else:
            text = "```\n" + "\n".join(job_row(j) for j in found)[:1900] + "\n```"
        await interaction.response.send_message(text, ephemeral=True)

    @tree.command(name="job", description="One job in full")
    @app_commands.describe(id="The job id (from /jobs)")
    async def job(interaction: discord.Interaction, id: str) -> None:
        found = await service.get_for(id, adapter.origin_for(interaction))
        lines = [f"**{job_title(found)}**", f"> {found.prompt[:500]}", f"status: {found.status.value} ({found.progress}%)"]
        if found.error_message:
            lines.append(f"error: {found.error_message}")
        if found.origin.result_message_id and found.origin.channel_id and found.origin.workspace_id:
            lines.append(
                f"result: https://discord.com/channels/{found.origin.workspace_id}/{found.origin.channel_id}/{found.origin.result_message_id}"
            )
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @tree.command(name="cancel", description="Stop one of your queued or running jobs")
    @app_commands.describe(id="The job id (from /jobs)")
    async def cancel(interaction: discord.Interaction, id: str) -> None:
        done = await service.cancel(id, Actor(user_id=str(interaction.user.id)))
        await interaction.response.send_message(f"Job {done.id} is {done.status.value}.", ephemeral=True)

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await reply_error(interaction, original)
