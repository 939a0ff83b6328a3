"""`/help`: what this deployment offers, once, for every platform.

The core decides the content: the commands, the buttons and reactions, the configured
pipelines (defaults marked, allowed here), and the limits that apply to the caller (their
tenant's settings over the environment's). Each platform renders a `DeploymentHelp` in its
own syntax (Slack's `/video remix ...`, Discord's options, the console's typed commands);
`plain_text` is the console's and the CLI's rendering.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from bot.core.models import Origin
from bot.core.sizes import ASPECT_RATIOS
from bot.core.views import Action
from providers.base import Capability

if TYPE_CHECKING:
    from bot.core.service import JobService


@dataclass(frozen=True)
class CommandHelp:
    name: str
    #: What follows the command when typed (`JOB_ID PROMPT`), in the console's syntax.
    args: str
    what: str


#: Every chat command, in the order help lists them (the parser's COMMANDS, explained).
COMMANDS: tuple[CommandHelp, ...] = (
    CommandHelp("video", "PROMPT [--seconds N] [--size WxH|16:9] [--pipeline NAME] [--seed N] [--audio] [--takes N]", "a video from a prompt"),
    CommandHelp("image", "PROMPT [--size WxH] [--pipeline NAME] [--seed N] [--takes N]", "a still image"),
    CommandHelp("story", "SCENE | SCENE | ...  or  PREMISE --scenes N", "one video of several scenes, each continuing the last"),
    CommandHelp("jobs", "", "your recent jobs"),
    CommandHelp("job", "JOB_ID", "one job in full"),
    CommandHelp("remix", "JOB_ID PROMPT", "the same video again with a new prompt"),
    CommandHelp("extend", "JOB_ID [--seconds N] [PROMPT]", "the video made longer"),
    CommandHelp("reroll", "JOB_ID", "the same prompt, a new seed"),
    CommandHelp("animate", "JOB_ID [PROMPT]", "a video from an image result"),
    CommandHelp("use", "JOB_ID N", "take N of a set, alone (free)"),
    CommandHelp("more", "JOB_ID N", "new takes from take N"),
    CommandHelp("cancel", "JOB_ID", "stop a queued or running job"),
    CommandHelp("delete", "JOB_ID", "remove a job and its files"),
    CommandHelp("usage", "", "what you spent today, and your budget"),
    CommandHelp("settings", "[set|channel|me KEY VALUE]", "what applies here and why; admins change it"),
    CommandHelp("gallery", "", "a personal link to the web gallery: every video, its lineage and cost"),
    CommandHelp("confirm", "CODE", "start a request that waits for your OK"),
    CommandHelp("decline", "CODE", "drop a request that waits for your OK"),
    CommandHelp("help", "", "this list"),
)

#: Buttons each state offers (the same as `bot.core.views`), as help describes them.
BUTTONS: tuple[tuple[str, tuple[Action, ...]], ...] = (
    ("while a job runs", (Action.CANCEL,)),
    ("under a video", (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DELETE)),
    ("under an image", (Action.ANIMATE, Action.REROLL, Action.DELETE)),
    ("under takes", (Action.USE, Action.MORE_LIKE, Action.REROLL, Action.DELETE)),
)
BUTTON_LABELS = {
    Action.CANCEL: "Cancel", Action.REROLL: "Re-roll", Action.REMIX: "Remix…", Action.EXTEND: "Extend…",
    Action.DELETE: "Delete", Action.ANIMATE: "Animate", Action.DM: "Send to me", Action.USE: "Use N", Action.MORE_LIKE: "More like N",
}  # fmt: skip
#: What a reaction does, by the action it maps to (`bot.core.actions.REACTIONS`).
REACTION_MEANINGS = {
    Action.REROLL: "re-roll", Action.CANCEL: "cancel a running job, delete a finished one",
    Action.DM: "the file sent to you privately", Action.ANIMATE: "animate an image", Action.USE: "use that take",
}  # fmt: skip


def plain_commands(prefix: str = "/") -> str:
    """The command list as typed on the console (and the text answer of `help` anywhere)."""
    rows = [(f"{prefix}{c.name} {c.args}".rstrip(), c.what) for c in COMMANDS]
    width = 38  # the short commands line up; the long ones (video, image, story) run on
    return "Commands:\n" + "\n".join(f"  {usage:<{width}}  {what}" for usage, what in rows)


class Offer(BaseModel):
    """One configured pipeline as help shows it."""

    name: str
    kind: str  # "video" or "image"
    default: bool
    seconds: int | None
    size: str
    #: What else it can do: "animate", "remix", "extend".
    can: tuple[str, ...] = ()
    description: str = ""

    def summary(self) -> str:
        """`4 s at 1280x720; animate/remix/extend` (the name is the platform's to decorate)."""
        shape = f"{self.seconds} s at {self.size}" if self.kind == "video" else self.size
        return shape + (f"; {'/'.join(self.can)}" if self.can else "")


class DeploymentHelp(BaseModel):
    commands: tuple[CommandHelp, ...] = COMMANDS
    videos: tuple[Offer, ...] = ()
    images: tuple[Offer, ...] = ()
    #: Pipelines known but not configured (for the operator; chat platforms leave them out).
    unconfigured: tuple[str, ...] = ()
    #: Sentences, each one limit that applies to the caller.
    limits: tuple[str, ...] = ()

    def buttons(self) -> list[str]:
        return [f"{where}: {', '.join(BUTTON_LABELS[a] for a in actions)}" for where, actions in BUTTONS]

    @staticmethod
    def reactions(emoji: dict[str, Action]) -> list[str]:
        """`🔁 re-roll`... for the reactions a platform understands (its names → actions)."""
        return [f"{shown} {REACTION_MEANINGS[action]}" for shown, action in emoji.items() if action in REACTION_MEANINGS]

    def plain_text(self, *, operator: bool = True) -> str:
        """The console's rendering: typed commands, then what this deployment offers."""
        lines = [plain_commands(), "This bot offers:"]
        for label, offers in (("video pipelines", self.videos), ("image pipelines", self.images)):
            if offers:
                lines.append(f"  {label}:")
                lines += [f"    {o.name}{' (default)' if o.default else ''}, {o.summary()}" for o in offers]
        if operator and self.unconfigured:
            lines.append("  not configured here: " + ", ".join(self.unconfigured))
        lines.append("  limits:")
        lines += [f"    {limit}" for limit in self.limits]
        return "\n".join(lines)


def _mb(size: int) -> str:
    return f"{size / (1 << 30):.1f} GB" if size >= 1 << 30 else f"{size / (1 << 20):.0f} MB"


async def deployment_help(service: JobService, origin: Origin | None = None, *, upload_limit: int | None = None) -> DeploymentHelp:
    """What this deployment offers the caller at `origin` (None: the operator's view, the
    environment's settings); `upload_limit` is the platform's largest upload, in bytes."""
    here = await service.tenant_settings.effective(origin or Origin(platform="console"))
    allowed = set(here.get("pipelines") or [])
    chosen = here.get("default_pipeline")
    videos: list[Offer] = []
    images: list[Offer] = []
    unconfigured: list[str] = []
    for name in service.pipelines():
        try:
            pipeline = service.registry.get(name)
        except Exception:  # a pipeline that cannot even be built is not offered
            continue
        if not pipeline.configured:
            unconfigured.append(name)
            continue
        if allowed and name not in allowed:
            continue
        if pipeline.video is None:
            if Capability.TEXT_TO_IMAGE in pipeline.capabilities:
                default = name == service.default_pipeline(image=True)
                images.append(Offer(name=name, kind="image", default=default, seconds=None, size=pipeline.default_size, description=pipeline.description))
            continue
        default = name == (chosen or service.default_pipeline(image=False))
        can = tuple(label for cap, label in ((Capability.IMAGE_TO_VIDEO, "animate"), (Capability.REMIX, "remix"), (Capability.EXTEND, "extend")) if cap in pipeline.capabilities)
        videos.append(Offer(name=name, kind="video", default=default, seconds=pipeline.default_seconds, size=pipeline.default_size, can=can, description=pipeline.description))

    env = service.settings
    limits = [f"prompts up to {env.max_prompt_chars} characters"]
    if here.get("max_seconds"):
        limits.append(f"clips up to {here.get('max_seconds')} s")
    sizes = f"sizes as WxH or a ratio ({', '.join(ASPECT_RATIOS)})"
    limits.append(sizes + (f", up to {here.get('max_size')}" if here.get("max_size") else ""))
    limits += [
        f"{env.max_queued_per_user} jobs waiting or running per person ({env.max_running_per_user} at a time)",
        f"starting images up to {env.max_image_mb:g} MB",
        f"stories up to {env.story_max_scenes} scenes and {env.story_max_seconds} s",
    ]
    if upload_limit is not None:
        limits.append(f"results over {_mb(upload_limit)} are re-encoded to fit, else posted as a still")
    if here.get("user_budget_usd") is not None:
        limits.append(f"${here.get('user_budget_usd'):.2f} a day per person (UTC)")
    if here.get("tenant_budget_usd") is not None and (origin is None or origin.workspace_id):
        limits.append(f"${here.get('tenant_budget_usd'):.2f} a day for everyone here (UTC)")
    if here.get("confirm_above_usd") is not None:
        limits.append(f"jobs estimated above ${here.get('confirm_above_usd'):.2f} wait for your Confirm")
    if here.get("cooldown_seconds"):
        limits.append(f"{here.get('cooldown_seconds'):g} s between one person's paid commands")
    if env.retention_days:
        limits.append(f"files kept {env.retention_days:g} days")
    return DeploymentHelp(videos=tuple(videos), images=tuple(images), unconfigured=tuple(unconfigured), limits=tuple(limits))
