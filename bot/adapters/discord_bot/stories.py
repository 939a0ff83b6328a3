"""Stories in Discord: the plan shown before spending, and the story's own controls.

`/story` answers ephemerally with the plan (look, scene prompts, estimate) and Confirm /
Edit… / Cancel (`vbp:VERB:TOKEN`). Edit… opens a modal with the scenes, one per line, whose
submission updates the same ephemeral preview (with a new token); Confirm's response becomes
the story's public status message (as any new job's); Cancel drops it. Under a story, Redo
scene… answers with an ephemeral select of the scenes (`vbr:JOBID`) and Add scene… opens a
modal with a prompt. The rules (owner, expiry, limits, price) are the core's
(`bot.core.stories`); this module only renders and maps clicks.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord

from bot.adapters.discord_bot.flows import adapter_of, interaction_actor, interaction_origin, reply_error, start_action, start_job
from bot.adapters.discord_bot.render import clip, plain
from bot.core.actions import perform
from bot.core.errors import user_message
from bot.core.models import Job, JobKind, Origin
from bot.core.stories import StoryPreview, StoryRequest, confirm_story, edit_preview, pending_preview, preview_story
from bot.core.uploads import Upload
from bot.core.views import Action, scene_choices

#: Discord's caps: a select's options, a text input's length.
MAX_OPTIONS, INPUT_MAX = 25, 4000
#: Storyboard file name suffix on a story's result post (the video keeps `JOBID.mp4`, see `marks`).
STORYBOARD_SUFFIX = "-storyboard.jpg"


def preview_content(preview: StoryPreview) -> str:
    plan = preview.plan
    lines = [f"**{plain(preview.headline())}**"]
    if plan.look:
        lines.append(f"-# Look: {plain(plan.look)}")
    lines += [plain(line) for line in preview.scene_lines()]
    lines.append(plain(preview.estimate_line()))
    return clip("\n".join(lines))


def preview_components(token: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for verb in ("confirm", "edit", "cancel"):
        view.add_item(PreviewButton(verb, token))
    return view


async def start_preview(interaction: discord.Interaction, request: Callable[[], Awaitable[StoryRequest]]) -> None:
    """`/story`: deferred privately at once (planning may take a text model's while), then the preview."""
    adapter = adapter_of(interaction)
    adapter.acks.enter()
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    finally:
        adapter.acks.leave()
    try:
        preview = await preview_story(adapter.service, await request(), interaction_origin(interaction))
    except Exception as exc:
        await interaction.edit_original_response(content=clip(plain(user_message(exc))))
        return
    await interaction.edit_original_response(content=preview_content(preview), view=preview_components(preview.token))


class PreviewButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"vbp:(?P<verb>confirm|edit|cancel):(?P<token>[a-z0-9]{4,32})"):
    """Confirm / Edit… / Cancel under a story's preview (the service checks owner and expiry)."""

    LOOK = {"confirm": ("Confirm", discord.ButtonStyle.success), "edit": ("Edit…", discord.ButtonStyle.secondary),
            "cancel": ("Cancel", discord.ButtonStyle.secondary)}  # fmt: skip

    def __init__(self, verb: str, token: str) -> None:
        label, style = self.LOOK[verb]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"vbp:{verb}:{token}"))
        self.verb = verb
        self.token = token

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /) -> PreviewButton:
        return cls(match["verb"], match["token"])

    async def callback(self, interaction: discord.Interaction) -> None:
        service = adapter_of(interaction).service
        actor = interaction_actor(interaction)
        try:
            if self.verb == "confirm":

                async def start(origin: Origin) -> Job:
                    # The confirm's response is the story's public status message: its place goes with the story.
                    return await confirm_story(service, self.token, actor, origin=origin)

                await start_job(interaction, start)
            elif self.verb == "edit":
                preview = await pending_preview(service, self.token, actor)
                await interaction.response.send_modal(StoryEditModal(preview))
            else:
                await service.decline(self.token, actor)
                await interaction.response.edit_message(content="Cancelled: nothing was queued or spent.", view=None)
        except Exception as exc:
            await reply_error(interaction, exc)


class StoryEditModal(discord.ui.Modal, title="Edit the story"):
    def __init__(self, preview: StoryPreview) -> None:
        super().__init__(custom_id=f"vbp:edit-modal:{preview.token}")
        self.token = preview.token
        self.scenes: discord.ui.TextInput[Any] = discord.ui.TextInput(
            label="Scenes, one per line", style=discord.TextStyle.paragraph, max_length=INPUT_MAX,
            default="\n".join(preview.plan.scenes)[:INPUT_MAX],
        )  # fmt: skip
        self.add_item(self.scenes)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        service = adapter_of(interaction).service
        preview = await edit_preview(service, self.token, self.scenes.value, interaction_actor(interaction))
        # The same private message shows the edited plan, its buttons carrying the new token.
        await interaction.response.edit_message(content=preview_content(preview), view=preview_components(preview.token))

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await reply_error(interaction, error)


# --- under a story ------------------------------------------------------------------------------


async def on_story_button(interaction: discord.Interaction, action: Action, job_id: str) -> None:
    """Redo scene… (a private picker of the scenes) or Add scene… (a modal)."""
    if action is Action.ADD_SCENE:
        await interaction.response.send_modal(AddSceneModal(job_id))
        return
    adapter = adapter_of(interaction)
    job = await adapter.service.get_for(job_id, interaction_origin(interaction))
    view = discord.ui.View(timeout=None)
    view.add_item(ScenePicker(job))
    await interaction.response.send_message("Which scene should be made again?", view=view, ephemeral=True)


class ScenePicker(discord.ui.DynamicItem[discord.ui.Select[Any]], template=r"vbr:(?P<job>[a-z0-9]{4,32})"):
    """The scenes of a story: the one picked is made again (`Action.REDO_SCENE`)."""

    def __init__(self, job: Job | None = None, *, job_id: str | None = None) -> None:
        options = [discord.SelectOption(label=label[:100], value=str(k)) for k, label in scene_choices(job)[:MAX_OPTIONS]] if job else []
        ident = job.id if job is not None else job_id or ""
        super().__init__(discord.ui.Select(custom_id=f"vbr:{ident}", placeholder="Redo scene…", options=options or [discord.SelectOption(label="-")]))
        self.job_id = ident

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /) -> ScenePicker:
        return cls(job_id=match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            scene = int((interaction.data or {}).get("values", ["0"])[0])  # type: ignore[union-attr]
            adapter = adapter_of(interaction)
            actor = interaction_actor(interaction)

            async def start(origin: Origin) -> Job:
                return (await perform(adapter.service, Action.REDO_SCENE, self.job_id, actor=actor, origin=origin, scene=scene)).job

            await start_job(interaction, start)
        except Exception as exc:
            await reply_error(interaction, exc)


class AddSceneModal(discord.ui.Modal, title="Add a scene"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What happens next", style=discord.TextStyle.paragraph, max_length=1000, placeholder="the ship reaches the harbour"
    )

    def __init__(self, job_id: str) -> None:
        super().__init__(custom_id=f"vb:add-scene-modal:{job_id}")
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await start_action(interaction, Action.ADD_SCENE, self.job_id, prompt=self.prompt.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await reply_error(interaction, error)


def result_files(job: Job, upload: Upload) -> list[discord.File]:
    """The result post's files: the video, and for a story its storyboard (numbered first frames)."""
    assert upload.path is not None
    files = [discord.File(upload.path, filename=upload.filename)]
    board = job.thumbnail_path
    if job.kind is JobKind.STORY and not upload.is_still and board and Path(board).exists():
        files.append(discord.File(board, filename=f"{job.id}{STORYBOARD_SUFFIX}"))
    return files


DYNAMIC_ITEMS = (PreviewButton, ScenePicker)
