"""Buttons that survive restarts: one DynamicItem whose custom_id carries the action and the job.

`vb:ACTION:JOBID` under a result post, `vbs:ACTION:JOBID` on a status message (see `marks`).
A click means what `bot.core.actions` says the action means; `flows.on_button` runs it.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.adapters.discord_bot import flows, stories
from bot.adapters.discord_bot.marks import RESULT_PREFIX, STATUS_PREFIX
from bot.core.views import TAKE_ACTIONS, Action
from bot.core.errors import InvalidRequest

if TYPE_CHECKING:
    from bot.adapters.discord_bot.host import DiscordHost

_ACTIONS = "|".join(a.value for a in Action if a is not Action.DM)  # DM is a reaction (✉️), not a button
#: A set of takes' Use N / More like N carry the take's number after the job: `vb:use:JOBID:2`.
TEMPLATE = rf"(?P<prefix>{STATUS_PREFIX}|{RESULT_PREFIX}):(?P<action>{_ACTIONS}):(?P<job>[a-z0-9]{{4,32}})(?::(?P<take>[1-4]))?"

#: How each action looks as a button (label, emoji, style).
LOOK: dict[Action, tuple[str, str, discord.ButtonStyle]] = {
    Action.CANCEL: ("Cancel", "✖️", discord.ButtonStyle.danger),
    Action.REROLL: ("Re-roll", "🔁", discord.ButtonStyle.primary),
    Action.REMIX: ("Remix…", "🎨", discord.ButtonStyle.secondary),
    Action.EXTEND: ("Extend…", "➕", discord.ButtonStyle.secondary),
    Action.DELETE: ("Delete", "🗑️", discord.ButtonStyle.danger),
    Action.ANIMATE: ("Animate", "🎬", discord.ButtonStyle.primary),
    Action.REDO_SCENE: ("Redo scene…", "🎞️", discord.ButtonStyle.secondary),
    Action.ADD_SCENE: ("Add scene…", "➕", discord.ButtonStyle.secondary),
    Action.USE: ("Use {k}", "✅", discord.ButtonStyle.success),
    Action.MORE_LIKE: ("More like {k}", "🎲", discord.ButtonStyle.secondary),
}


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(self, action: Action, job_id: str, *, prefix: str = RESULT_PREFIX, take: int | None = None, label: str | None = None) -> None:
        shown, emoji, style = LOOK[action]
        custom_id = f"{prefix}:{action.value}:{job_id}" + (f":{take}" if take is not None else "")
        super().__init__(discord.ui.Button(label=label or shown.format(k=take), emoji=emoji, style=style, custom_id=custom_id))
        self.action = action
        self.job_id = job_id
        self.take = take

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /) -> JobButton:
        take = int(match["take"]) if match["take"] else None
        return cls(Action(match["action"]), match["job"], prefix=match["prefix"], take=take)

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            if self.action is Action.REMIX:
                await interaction.response.send_modal(RemixModal(self.job_id))
            elif self.action is Action.EXTEND:
                await interaction.response.send_modal(ExtendModal(self.job_id))
            elif self.action in (Action.REDO_SCENE, Action.ADD_SCENE):
                await stories.on_story_button(interaction, self.action, self.job_id)
            else:
                await flows.on_button(interaction, self.action, self.job_id, take=self.take)
        except Exception as exc:
            await flows.reply_error(interaction, exc)


class OfferButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"vbc:(?P<verb>confirm|decline):(?P<token>[a-z0-9]{4,32})"):
    """Confirm / Decline under the offer of a request that costs more than this server's threshold."""

    def __init__(self, verb: str, token: str) -> None:
        style = discord.ButtonStyle.success if verb == "confirm" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=verb.capitalize(), style=style, custom_id=f"vbc:{verb}:{token}"))
        self.verb = verb
        self.token = token

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /) -> OfferButton:
        return cls(match["verb"], match["token"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await flows.on_offer(interaction, self.verb, self.token)
        except Exception as exc:
            await flows.reply_error(interaction, exc)


def offer_components(token: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(OfferButton("confirm", token))
    view.add_item(OfferButton("decline", token))
    return view


def components(job_id: str, actions: tuple[Action, ...], *, prefix: str, takes: tuple[int, ...] = ()) -> discord.ui.View | None:
    """The buttons for `actions` (a view's, in its order), or None for no buttons. On a set of
    takes, Use N and More like N come once per finished take, and Re-roll re-rolls them all."""
    shown = [a for a in actions if a in LOOK]
    if not shown:
        return None
    view = discord.ui.View(timeout=None)
    for action in shown:
        if action in TAKE_ACTIONS:
            for k in takes:
                view.add_item(JobButton(action, job_id, prefix=prefix, take=k))
        else:
            label = "Re-roll all" if takes and action is Action.REROLL else None
            view.add_item(JobButton(action, job_id, prefix=prefix, label=label))
    return view


class RemixModal(discord.ui.Modal, title="Remix this video"):
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="New prompt", style=discord.TextStyle.paragraph, max_length=1000, placeholder="the same shot, at night in the rain"
    )

    def __init__(self, job_id: str) -> None:
        super().__init__(custom_id=f"vb:remix-modal:{job_id}")
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await flows.start_action(interaction, Action.REMIX, self.job_id, prompt=self.prompt.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await flows.reply_error(interaction, error)


class ExtendModal(discord.ui.Modal, title="Extend this video"):
    seconds: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Seconds to add", required=False, max_length=3, placeholder="4")
    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="What happens next (optional)", style=discord.TextStyle.paragraph, required=False, max_length=1000
    )

    def __init__(self, job_id: str) -> None:
        super().__init__(custom_id=f"vb:extend-modal:{job_id}")
        self.job_id = job_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        raw = self.seconds.value.strip()
        if raw and not raw.isdigit():
            raise InvalidRequest("Seconds must be a whole number, for example 4.")
        await flows.start_action(
            interaction, Action.EXTEND, self.job_id, prompt=self.prompt.value or None, seconds=int(raw) if raw else None
        )

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await flows.reply_error(interaction, error)


def register(client: discord.Client, adapter: DiscordHost) -> None:
    """Clicks on any message the bot ever posted, also after a restart, come to `JobButton`."""
    client.add_dynamic_items(JobButton, OfferButton, *stories.DYNAMIC_ITEMS)
