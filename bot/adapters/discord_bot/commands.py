"""Slash commands: options become the core's `Command`, run by the shared dispatcher.

Discord's typed options (choices, autocomplete, an attachment) are the parser here; what a
command means, its checks and its answer text are the core's (`bot.core.dispatch`). Jobs a
command starts get their status message through `flows.start_job`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.adapters.discord_bot.flows import adapter_of, interaction_actor, interaction_origin, reply, reply_error, start_job
from bot.adapters.discord_bot.render import code_block, help_content, plain
from bot.adapters.discord_bot.stories import start_preview
from bot.core.commands import Command
from bot.core.dispatch import Reply, run_command
from bot.core.help import deployment_help
from bot.core.models import Job, JobStatus, Origin
from bot.core.sizes import ASPECT_RATIOS, normalise_size
from bot.core.stories import StoryRequest
from bot.core.tenant_settings import KEYS
from bot.core.errors import InvalidRequest
from bot.core.catalog import PipelineInfo

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

MAX_CHOICES = 25  # Discord's cap on autocomplete suggestions
COMMON_SIZES = ("1280x720", "720x1280", "1024x1024", "1792x1024", "1024x1792", "640x360", "256x144")
#: Longest text Discord allows in one message (ephemeral answers are cut to it).
MAX_MESSAGE = 2000
SEED_MAX = 2**31 - 1
STATUSES = [app_commands.Choice(name=s.value, value=s.value) for s in JobStatus]
SETTINGS_CHANGES = [
    app_commands.Choice(name="set for this server (admins)", value="set"),
    app_commands.Choice(name="set for this channel (admins)", value="channel"),
    app_commands.Choice(name="set my own default", value="me"),
    app_commands.Choice(name="unset for this server (admins)", value="unset"),
    app_commands.Choice(name="unset for this channel (admins)", value="unset-channel"),
    app_commands.Choice(name="unset my own default", value="unset-me"),
]
SETTINGS_KEYS = [app_commands.Choice(name=f"{k.name} — {k.help}"[:100], value=k.name) for k in KEYS.values()][:MAX_CHOICES]


# --- autocomplete -----------------------------------------------------------------------------


def _pipelines(adapter: DiscordHost, *, image: bool) -> list[PipelineInfo]:
    return adapter.service.offered_pipelines(image=image)


def _chosen(adapter: DiscordHost, interaction: discord.Interaction, *, image: bool = False) -> PipelineInfo | None:
    name = getattr(interaction.namespace, "pipeline", None) or adapter.service.default_pipeline(image=image)
    return adapter.service.pipeline_info(name) if name else None


def _pipeline_choices(interaction: discord.Interaction, current: str, *, image: bool) -> list[app_commands.Choice[str]]:
    adapter = adapter_of(interaction)
    default = adapter.service.default_pipeline(image=image)
    choices = []
    for p in _pipelines(adapter, image=image):
        if current.lower() not in p.name.lower():
            continue
        label = p.name + (" (default)" if p.name == default else "") + (f" — {p.description}" if p.description else "")
        choices.append(app_commands.Choice(name=label[:100], value=p.name))
    return choices[:MAX_CHOICES]


async def video_pipelines(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return _pipeline_choices(interaction, current, image=False)


async def image_pipelines(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return _pipeline_choices(interaction, current, image=True)


def _size_choices(interaction: discord.Interaction, current: str, *, image: bool) -> list[app_commands.Choice[str]]:
    pipeline = _chosen(adapter_of(interaction), interaction, image=image)
    typed = current.strip().lower()
    options: list[tuple[str, str]] = []
    if pipeline is not None:
        options.append((f"{pipeline.default_size} (default)", pipeline.default_size))
    options += [(f"{ratio} · {size}", ratio) for ratio, size in ASPECT_RATIOS.items()]
    options += [(s, s) for s in COMMON_SIZES if pipeline is None or s != pipeline.default_size]
    return [app_commands.Choice(name=name, value=value) for name, value in options if value.startswith(typed)][:MAX_CHOICES]


async def video_sizes(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return _size_choices(interaction, current, image=False)


async def image_sizes(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return _size_choices(interaction, current, image=True)


async def seconds_choices(interaction: discord.Interaction, current: int | str) -> list[app_commands.Choice[int]]:
    pipeline = _chosen(adapter_of(interaction), interaction)
    default = pipeline.default_seconds if pipeline is not None else 4
    options = sorted({default, 4, 8, 12})
    return [app_commands.Choice(name=f"{s} s" + (" (default)" if s == default else ""), value=s) for s in options][:MAX_CHOICES]


async def job_ids(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The user's recent jobs, newest first, with what they are."""
    adapter = adapter_of(interaction)
    jobs = await adapter.service.list_jobs(origin=interaction_origin(interaction), limit=MAX_CHOICES)
    typed = current.strip().lower()
    return [
        app_commands.Choice(name=f"{j.id} · {j.status.value} · {j.prompt}"[:100], value=j.id)
        for j in jobs
        if j.id.startswith(typed)
    ][:MAX_CHOICES]


# --- options to requests ------------------------------------------------------------------------


def check_attachment(image: discord.Attachment, max_mb: float) -> None:
    """Refuse before anything is downloaded or billed: Discord tells us type and size up front."""
    if not (image.content_type or "").startswith("image/"):
        raise InvalidRequest(f"'{image.filename}' is not an image. Attach a PNG, JPEG or WebP.")
    if image.size > max_mb * 1_000_000:
        raise InvalidRequest(f"The image is {image.size / 1e6:.1f} MB; the limit is {max_mb:g} MB. Attach a smaller one.")


def command(name: str, *words: str | None, **flags: Any) -> Command:
    """The core's Command for what the options say (None and empty options left out)."""
    return Command(
        name=name,
        words=[w for w in words if w],
        flags={k: ("yes" if v is True else str(v)) for k, v in flags.items() if v is not None and v is not False},
    )


def _code(text: str) -> str:
    return code_block(text[: MAX_MESSAGE - 16])


def register(tree: app_commands.CommandTree[Any], adapter: DiscordHost) -> None:
    service = adapter.service

    async def run(interaction: discord.Interaction, cmd: Command) -> Reply:
        """A command that answers with text (the core's words)."""
        return await run_command(service, cmd, interaction_origin(interaction), interaction_actor(interaction))

    async def start(interaction: discord.Interaction, cmd: Command) -> None:
        """A command that starts a job: deferred, its response becomes the job's status message."""

        async def submit(origin: Origin) -> Job:
            answer = await run_command(service, cmd, origin, interaction_actor(interaction))
            assert answer.job is not None
            return answer.job

        await start_job(interaction, submit)

    @tree.command(name="video", description="Make a video from a prompt (and optionally a starting image)")
    @app_commands.describe(
        prompt="What the video shows",
        pipeline="Which pipeline makes it",
        size=f"WIDTHxHEIGHT or an aspect ratio ({', '.join(ASPECT_RATIOS)})",
        seconds="Length in seconds",
        seed="The same seed and prompt make the same video",
        audio="Ask for a soundtrack (where the pipeline can make one)",
        image="A starting image (PNG, JPEG or WebP)",
        model="A model id of that pipeline",
        takes="Several versions at once, side by side (1-4)",
    )
    @app_commands.autocomplete(pipeline=video_pipelines, size=video_sizes, seconds=seconds_choices)
    async def video(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        pipeline: str | None = None,
        size: str | None = None,
        seconds: app_commands.Range[int, 1, 120] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        audio: bool | None = None,
        image: discord.Attachment | None = None,
        model: str | None = None,
        takes: app_commands.Range[int, 1, 4] | None = None,
    ) -> None:
        if image is not None:
            check_attachment(image, service.settings.max_image_mb)
        cmd = command(
            "video", prompt, pipeline=pipeline, size=normalise_size(size) if size else None, seconds=seconds, seed=seed,
            audio=audio, model=model, takes=takes,
        )  # fmt: skip

        async def submit(origin: Origin) -> Job:
            request = cmd.generate_request()
            if image is not None:  # the one thing a typed command cannot carry
                request = request.model_copy(update={"image_bytes": await image.read(), "image_name": image.filename})
            return await service.submit(request, origin)

        await start_job(interaction, submit)

    @tree.command(name="image", description="Make a still image from a prompt")
    @app_commands.describe(
        prompt="What the image shows", pipeline="Which image pipeline", size="WIDTHxHEIGHT or an aspect ratio", seed="A fixed seed",
        takes="Several versions at once, side by side (1-4)",
    )
    @app_commands.autocomplete(pipeline=image_pipelines, size=image_sizes)
    async def image_cmd(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        pipeline: str | None = None,
        size: str | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        takes: app_commands.Range[int, 1, 4] | None = None,
    ) -> None:
        size = normalise_size(size) if size else None
        await start(interaction, command("image", prompt, pipeline=pipeline, size=size, seed=seed, takes=takes))

    @tree.command(name="story", description="One video of several scenes, each continuing the last")
    @app_commands.describe(
        script="Scenes separated by | (scene one | scene two | ...), or a premise to plan into scenes",
        scenes="How many scenes to plan a premise into",
        seconds="Seconds per scene",
        transition="How scenes meet",
        pipeline="Which pipeline makes the scenes",
        size="WIDTHxHEIGHT or an aspect ratio",
        seed="A fixed seed",
        image="A starting image for the first scene (PNG, JPEG or WebP)",
    )
    @app_commands.choices(transition=[app_commands.Choice(name=t, value=t) for t in ("cut", "fade")])
    @app_commands.autocomplete(pipeline=video_pipelines, size=video_sizes, seconds=seconds_choices)
    async def story(
        interaction: discord.Interaction,
        script: app_commands.Range[str, 1, 4000],
        scenes: app_commands.Range[int, 1, 12] | None = None,
        seconds: app_commands.Range[int, 1, 120] | None = None,
        transition: str | None = None,
        pipeline: str | None = None,
        size: str | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        if image is not None:
            check_attachment(image, service.settings.max_image_mb)
        cmd = command(
            "story", script, scenes=scenes, seconds=seconds, transition=transition, pipeline=pipeline,
            size=normalise_size(size) if size else None, seed=seed,
        )  # fmt: skip

        async def request() -> StoryRequest:
            planned = cmd.story_request()
            if image is not None:  # the one thing a typed command cannot carry
                planned = planned.model_copy(update={"image_bytes": await image.read(), "image_name": image.filename})
            return planned

        # The plan is shown privately first; its Confirm starts the story (stories.py).
        await start_preview(interaction, request)

    @tree.command(name="jobs", description="Your recent jobs")
    @app_commands.describe(status="Only jobs in this state", limit="How many (10 unless you say)")
    @app_commands.choices(status=STATUSES)
    async def jobs(interaction: discord.Interaction, status: str | None = None, limit: app_commands.Range[int, 1, 25] | None = None) -> None:
        text = (await run(interaction, command("jobs", status=status, limit=limit))).text
        await reply(interaction, plain(text) if text.startswith("You have no jobs") else _code(text))

    @tree.command(name="job", description="One job in full")
    @app_commands.describe(id="The job id (from /jobs)")
    @app_commands.autocomplete(id=job_ids)
    async def job(interaction: discord.Interaction, id: str) -> None:
        answer = await run(interaction, command("job", id))
        text = plain(answer.text)
        found = answer.job
        if found is not None and found.origin.platform == "discord" and found.origin.result_message_id and found.origin.channel_id:
            where = found.origin.workspace_id or "@me"
            text += f"\nresult: https://discord.com/channels/{where}/{found.origin.channel_id}/{found.origin.result_message_id}"
        await reply(interaction, text[:MAX_MESSAGE])

    @tree.command(name="remix", description="The same video again with a new prompt")
    @app_commands.describe(id="The job id of a finished video", prompt="The new prompt")
    @app_commands.autocomplete(id=job_ids)
    async def remix(interaction: discord.Interaction, id: str, prompt: app_commands.Range[str, 1, 4000]) -> None:
        await start(interaction, command("remix", id, prompt))

    @tree.command(name="extend", description="Make a finished video longer")
    @app_commands.describe(id="The job id of a finished video", seconds="Seconds to add", prompt="What happens next (optional)")
    @app_commands.autocomplete(id=job_ids)
    async def extend(
        interaction: discord.Interaction, id: str, seconds: app_commands.Range[int, 1, 120] | None = None, prompt: str | None = None
    ) -> None:
        await start(interaction, command("extend", id, prompt, seconds=seconds))

    @tree.command(name="reroll", description="The same prompt again, with a new seed")
    @app_commands.describe(id="The job id")
    @app_commands.autocomplete(id=job_ids)
    async def reroll(interaction: discord.Interaction, id: str) -> None:
        await start(interaction, command("reroll", id))

    @tree.command(name="use", description="One take of a set, posted alone with its own buttons (nothing is made again)")
    @app_commands.describe(id="The set's job id", take="The take's number")
    @app_commands.autocomplete(id=job_ids)
    async def use(interaction: discord.Interaction, id: str, take: app_commands.Range[int, 1, 4]) -> None:
        await start(interaction, command("use", id, str(take)))

    @tree.command(name="more", description="New takes starting from one take of a set")
    @app_commands.describe(id="The set's job id", take="The take's number")
    @app_commands.autocomplete(id=job_ids)
    async def more(interaction: discord.Interaction, id: str, take: app_commands.Range[int, 1, 4]) -> None:
        await start(interaction, command("more", id, str(take)))

    @tree.command(name="animate", description="A video from an image result (its prompt, or a new one)")
    @app_commands.describe(id="The job id of a finished image", prompt="What happens (the image's prompt unless you say)", seconds="Length in seconds")
    @app_commands.autocomplete(id=job_ids)
    async def animate(
        interaction: discord.Interaction, id: str, prompt: str | None = None, seconds: app_commands.Range[int, 1, 120] | None = None
    ) -> None:
        await start(interaction, command("animate", id, prompt, seconds=seconds))

    @tree.command(name="cancel", description="Stop one of your queued or running jobs")
    @app_commands.describe(id="The job id (from /jobs)")
    @app_commands.autocomplete(id=job_ids)
    async def cancel(interaction: discord.Interaction, id: str) -> None:
        await reply(interaction, plain((await run(interaction, command("cancel", id))).text))

    @tree.command(name="delete", description="Remove one of your jobs and its files")
    @app_commands.describe(id="The job id (from /jobs)")
    @app_commands.autocomplete(id=job_ids)
    async def delete(interaction: discord.Interaction, id: str) -> None:
        answer = await run(interaction, command("delete", id))
        if answer.job is not None and answer.job.origin.platform == "discord":
            adapter.surface.show_deleted(answer.job)
        await reply(interaction, plain(answer.text))

    @tree.command(name="confirm", description="Start a request that waits for your Confirm (it costs more than usual)")
    @app_commands.describe(token="The code in the offer")
    async def confirm(interaction: discord.Interaction, token: str) -> None:
        # The job's status message is the offer the request got: its events edit it from now on.
        await reply(interaction, plain((await run(interaction, command("confirm", token))).text))

    @tree.command(name="decline", description="Drop a request that waits for your Confirm; nothing is spent")
    @app_commands.describe(token="The code in the offer")
    async def decline(interaction: discord.Interaction, token: str) -> None:
        await reply(interaction, plain((await run(interaction, command("decline", token))).text))

    @tree.command(name="settings", description="What applies to you here, and where it comes from; admins change it")
    @app_commands.describe(
        change="What to change (leave empty to see the settings)", key="Which setting", value="The new value (for unset: none)"
    )
    @app_commands.choices(change=SETTINGS_CHANGES, key=SETTINGS_KEYS)
    async def settings(interaction: discord.Interaction, change: str | None = None, key: str | None = None, value: str | None = None) -> None:
        if change is None:
            words: list[str | None] = []
        elif change.startswith("unset"):
            words = ["unset", key, change.partition("-")[2] or None]
        else:
            words = [change, key, value]
        if change is not None and (key is None or (not change.startswith("unset") and not value)):
            raise InvalidRequest("Pick a setting (key) and give it a value, for example: change set, key max_seconds, value 8.")
        await reply(interaction, plain((await run(interaction, command("settings", *words))).text)[:MAX_MESSAGE])

    @tree.command(name="usage", description="What you spent today, and your budget")
    async def usage(interaction: discord.Interaction) -> None:
        await reply(interaction, plain((await run(interaction, command("usage"))).text))

    @tree.command(name="gallery", description="A personal link to the web gallery (only you see it)")
    async def gallery(interaction: discord.Interaction) -> None:
        await reply(interaction, plain((await run(interaction, command("gallery"))).text))

    @tree.command(name="help", description="What this bot can do here: commands, pipelines, limits")
    async def help_cmd(interaction: discord.Interaction) -> None:
        offers = await deployment_help(service, interaction_origin(interaction), upload_limit=interaction.filesize_limit)
        options = {c.name: [p.name for p in c.parameters] for c in tree.get_commands() if isinstance(c, app_commands.Command)}
        await reply(interaction, help_content(offers, options))

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await reply_error(interaction, original)

