"""Result buttons that survive restarts: DynamicItems whose custom_id carries the job id."""
from __future__ import annotations

import re
from typing import Any

import discord

from bot.adapters.discord_bot.flows import adapter_of, reply_error, start_job
from bot.core.models import Actor, Job, JobKind

JOB_ID = r"(?P<job>[a-z0-9]{4,32})"


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"vb:base:" + JOB_ID):
    """Base: one job id in the custom_id, `action` decides what a click does."""

    verb: str = ""
    label: str = ""
    emoji: str = ""
    style = discord.ButtonStyle.secondary

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(label=self.label, emoji=self.emoji, style=self.style, custom_id=f"vb:{self.verb}:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /) -> _JobButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await self.action(interaction)
        except Exception as exc:
            await reply_error(interaction, exc)

    async def action(self, interaction: discord.Interaction) -> None:
        raise NotImplementedError


class RerollButton(_JobButton, template=r"vb:reroll:" + JOB_ID):
    verb, label, emoji = "reroll", "Re-roll", "🔁"
    style = discord.ButtonStyle.primary

    async def action(self, interaction: discord.Interaction) -> None:
        service = adapter_of(interaction).app.service
        await start_job(interaction, lambda origin: service.reroll(self.job_id, origin))


class RemixButton(_JobButton, template=r"vb:remix:" + JOB_ID):
    verb, label, emoji = "remix", "Remix…", "🎨"

    async def action(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(RemixModal(self.job_id))


class ExtendButton(_JobButton, template=r"vb:extend:" + JOB_ID):
    verb, label, emoji = "extend", "Extend…", "➕"

    async def action(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(ExtendModal(self.job_id))


class DeleteButton(_JobButton, template=r"vb:delete:" + JOB_ID):
    verb, label, emoji = "delete", "Delete", "🗑️"
    style = discord.ButtonStyle.danger

    async def action(self, interaction: discord.Interaction) -> None:
        # The owner, bot admins (service) and members who may manage this guild.
        perms = interaction.permissions
        admin = bool(perms and (perms.manage_guild or perms.administrator or perms.manage_messages))
        actor = Actor.of(adapter_of(interaction).origin_for(interaction), is_admin=admin)
        job = await adapter_of(interaction).app.service.delete(self.job_id, actor)
        await interaction.response.edit_message(
            content=f"🗑️ Job {job.id} was deleted by {interaction.user.mention}.", attachments=[], view=None
        )


class RemixModal(discord.ui.Modal, title="Remix this video"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="New prompt", style=discord.TextStyle.paragraph, max_length=1000, placeholder="the same shot, at night in the rain"
    )

    def __init__(self, job_id: str) -> None:
        super().__init__(custom_id=f"vb:remix-modal:{job_id}")
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        service = adapter_of(interaction).app.service
        await start_job(interaction, lambda origin: service.remix(self.job_id, self.prompt.value, origin))

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await reply_error(interaction, error)


class ExtendModal(discord.ui.Modal, title="Extend this video"):
    seconds: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Seconds to add", required=False, max_length=3, placeholder="4")
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What happens next (optional)", style=discord.TextStyle.paragraph, required=False, max_length=1000
    )

    def __init__(self, job_id: str) -> None:
        super().__init__(custom_id=f"vb:extend-modal:{job_id}")
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        service = adapter_of(interaction).app.service
        raw = self.seconds.value.strip()
        if raw and not raw.isdigit():
            from providers.errors import InvalidRequest

            await reply_error(interaction, InvalidRequest("Seconds must be a whole number, for example 4."))
            return
        seconds = int(raw) if raw else None
        await start_job(interaction, lambda origin: service.extend(self.job_id, origin, seconds=seconds, prompt=self.prompt.value or None))

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await reply_error(interaction, error)


DYNAMIC_ITEMS: tuple[type[_JobButton], ...] = (RerollButton, RemixButton, ExtendButton, DeleteButton)


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job.id))
    if job.kind is not JobKind.IMAGE:
        view.add_item(RemixButton(job.id))
        view.add_item(ExtendButton(job.id))
    view.add_item(DeleteButton(job.id))
    return view
