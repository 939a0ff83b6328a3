"""One scenario table, run on Slack, Discord and the console through their emulators.

Every command, every button and every reaction, for the job's owner, someone else in the same
channel and an admin: each step is done the way a user of that platform does it (a Slack
`/video` sub-command or block_actions click, a Discord slash command, component click, modal
or reaction through the real discord.py client, a typed console line), and each outcome is
checked on what the user saw: the messages and private answers that crossed the wire to the
emulator (the console's screen). The store is read only to name the job a message shows.

A small driver per platform knows how to send a command, press a button, react, and read a
job's message (its text and the buttons it offers, as core actions); the table is shared.
Platform-only details (Discord's interaction callback types, Slack's file threads) stay in the
platforms' own test modules.

The console is one person's terminal (the operator's): it has the owner's steps only, no
reactions, and its buttons are the typed commands it prints under each job (`next: /reroll ID`).
"""
from __future__ import annotations

import asyncio
import io
import re
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bot.adapters.console import ConsoleAdapter
from bot.app import App, open_app
from bot.config import load_settings
from bot.core.commands import COMMANDS as PARSED_COMMANDS
from bot.core.help import COMMANDS as HELP_COMMANDS
from bot.core.models import Job, JobKind, JobStatus
from bot.core.views import Action
from providers.polling import PollPolicy
from tests.fakes import discord_api, slack_api
from tests.fakes.discord_api import DiscordEmulator, channel_posts, discord_env, start_bot
from tests.fakes.scripted_provider import ScriptedServer, scripted_pipeline
from tests.fakes.slack_api import SlackEmulator, slack_env, start_slack_bot

pytestmark = pytest.mark.timeout(120)

OWNER, OTHER, ADMIN = "owner", "other", "admin"
CLIP = (("seconds", 1), ("size", "128x72"))
#: Long prompts: Slack's `/video remix ID ...` once took a long prompt for a new video.
LONG = (
    "the same paper boat at night with paper lanterns drifting on the dark water, a light rain starting "
    "and a slow push in towards the boat while the reflections shimmer and break apart"
)
#: `--` inside a quoted prompt is prompt text, not a flag.
DASHED = "a sign on the jetty that says --stop-- here, then the boat drifts past it into the fog"
REFUSED = "Only the person who asked"
VIDEO_ACTIONS = (Action.REROLL, Action.REMIX, Action.EXTEND, Action.DELETE)
IMAGE_ACTIONS = (Action.ANIMATE, Action.REROLL, Action.DELETE)
TAKES_ACTIONS = {Action.USE, Action.MORE_LIKE, Action.REROLL, Action.DELETE}
TITLE_ID = re.compile(r"· job ([0-9a-z]{8})\b")


@dataclass(frozen=True)
class Step:
    gesture: str  # "command", "button" or "reaction"
    #: The command's name, or the button's / reaction's core action.
    name: str
    #: The job it acts on, made by the owner: "running", "video", "image", "takes" (or none).
    target: str | None = None
    #: What the owner sees: "started:KIND", "cancelled", "deleted", "refused", "text:...", "lacks:...", "help", "dm".
    expect: str = ""
    #: What someone else / an admin sees, when it differs from the owner.
    other: str | None = None
    admin: str | None = None
    prompt: str | None = None
    flags: tuple[tuple[str, Any], ...] = ()
    words: tuple[str, ...] = ()
    roles: tuple[str, ...] = (OWNER, OTHER, ADMIN)

    def expectation(self, role: str) -> str:
        return {OWNER: self.expect, OTHER: self.other or self.expect, ADMIN: self.admin or self.expect}[role]

    def flag(self, name: str) -> Any:
        return dict(self.flags).get(name)

    @property
    def takes_id(self) -> bool:
        return self.gesture != "command" or self.name in ("job", "remix", "extend", "reroll", "animate", "cancel", "delete", "use", "more")

    @property
    def take(self) -> int:
        """Which take a Use / More like step names (its first word)."""
        return int(self.words[0]) if self.words else 1


STEPS = [
    # Commands.
    Step("command", "video", expect="started:generate", prompt=DASHED, flags=CLIP),
    Step("command", "image", expect="started:image", prompt="a red kite over green hills", flags=(("size", "128x128"),)),
    Step("command", "video", expect="started:takes", prompt="three paper boats", flags=(*CLIP, ("takes", 2))),
    # A story is previewed first (Confirm / Edit / Cancel): its flows end to end are in tests/test_*_story.py.
    Step("command", "story", expect="text:Story preview", prompt="a fox wakes up in its den | the fox runs out into the snow", flags=CLIP),
    Step("command", "jobs", "video", expect="text:{video}", other="lacks:{video}", admin="lacks:{video}"),
    Step("command", "job", "video", expect="text:a paper boat on a pond"),
    Step("command", "remix", "video", expect="started:remix", prompt=LONG),
    Step("command", "extend", "video", expect="started:extend", prompt=DASHED, flags=(("seconds", 1),)),
    Step("command", "reroll", "video", expect="started:variation"),
    Step("command", "animate", "image", expect="started:generate"),
    # A set of takes: Use N posts take N alone (the owner's choice), More like N makes new takes.
    Step("command", "use", "takes", expect="started:generate", other="refused", admin="refused", words=("1",)),
    Step("command", "more", "takes", expect="started:takes", words=("1",)),
    Step("command", "cancel", "running", expect="cancelled", other="refused"),
    Step("command", "delete", "video", expect="deleted", other="refused"),
    Step("command", "usage", expect="text:Today (UTC) you have spent"),
    Step("command", "help", expect="help"),
    # No public URL in this table's deployment: the gallery says how an admin turns it on (tests/web/test_web_chat.py has the link).
    Step("command", "gallery", expect="text:The web gallery is not set up here"),
    # Buttons on the job's message.
    Step("button", Action.CANCEL, "running", expect="cancelled", other="refused"),
    Step("button", Action.REROLL, "video", expect="started:variation"),
    Step("button", Action.REMIX, "video", expect="started:remix", prompt=LONG),
    Step("button", Action.EXTEND, "video", expect="started:extend", prompt="it sails on into the fog", flags=(("seconds", 1),)),
    Step("button", Action.DELETE, "video", expect="deleted", other="refused"),
    Step("button", Action.ANIMATE, "image", expect="started:generate"),
    Step("button", Action.REROLL, "image", expect="started:image"),
    Step("button", Action.DELETE, "image", expect="deleted", other="refused"),
    Step("button", Action.USE, "takes", expect="started:generate", other="refused", admin="refused", words=("2",)),
    Step("button", Action.MORE_LIKE, "takes", expect="started:takes", words=("2",)),
    Step("button", Action.REROLL, "takes", expect="started:takes"),
    # Reactions (where the platform has them).
    Step("reaction", Action.CANCEL, "running", expect="cancelled", other="refused"),
    Step("reaction", Action.CANCEL, "video", expect="deleted", other="refused"),
    Step("reaction", Action.REROLL, "video", expect="started:variation"),
    Step("reaction", Action.ANIMATE, "image", expect="started:generate"),
    Step("reaction", Action.DM, "video", expect="dm"),
    Step("reaction", Action.USE, "takes", expect="started:generate", other="refused", admin="refused", words=("3",)),
    # Settings last (an admin's change applies to the steps after it).
    Step("command", "settings", expect="text:max_seconds", roles=(OWNER, OTHER)),
    Step("command", "settings", words=("set", "max_seconds", "30"), expect="text:max_seconds here: 30", other="text:Only an admin", roles=(OTHER, ADMIN)),
]


def test_the_table_covers_every_command_button_and_reaction() -> None:
    commands = {s.name for s in STEPS if s.gesture == "command"}
    # confirm / decline answer a costly request's offer: tests/core/test_confirm.py and the platforms' confirm tests.
    assert commands == set(PARSED_COMMANDS) - {"confirm", "decline"} == {c.name for c in HELP_COMMANDS} - {"confirm", "decline"}
    # Redo scene and Add scene are on a finished story only: tests/adapters/slack/test_slack_story.py, test_discord_story.py.
    assert {s.name for s in STEPS if s.gesture == "button"} == set(Action) - {Action.DM, Action.REDO_SCENE, Action.ADD_SCENE}
    assert {s.name for s in STEPS if s.gesture == "reaction"} == {Action.CANCEL, Action.REROLL, Action.ANIMATE, Action.DM, Action.USE}


@dataclass
class Card:
    """A job's message(s) as the channel shows them: what they say and the buttons they offer."""

    text: str = ""
    actions: tuple[Action, ...] = ()
    gone: bool = False


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Driver:
    """One platform as its users use it. Subclasses fill in the gestures and the reading."""

    platform = ""
    roles: tuple[str, ...] = (OWNER, OTHER, ADMIN)
    #: The reactions this platform understands, by action.
    reactions: dict[Action, str] = {}
    app: App
    users: dict[str, str] = {}

    def __init__(self) -> None:
        self.known: set[str] = set()

    # --- gestures (subclasses) ----------------------------------------------------------------

    async def command(self, role: str, step: Step, job_id: str | None) -> None:
        raise NotImplementedError

    async def press(self, role: str, job_id: str, action: Action, step: Step) -> None:
        raise NotImplementedError

    async def react(self, role: str, job_id: str, action: Action) -> None:
        raise NotImplementedError

    # --- reading what users see (subclasses) ----------------------------------------------------

    def mark(self) -> Any:
        """Where the private answers and the channel stand now."""
        raise NotImplementedError

    def told(self, role: str, mark: Any) -> list[str]:
        """What `role` was told privately (or, on the console, shown) since `mark`."""
        raise NotImplementedError

    def shown_jobs(self) -> set[str]:
        """Ids of the jobs the channel shows a message for."""
        raise NotImplementedError

    def card(self, job_id: str) -> Card:
        raise NotImplementedError

    def typed(self, name: str) -> str:
        """A command as help must show it here."""
        raise NotImplementedError

    def got_file(self, role: str, job_id: str) -> bool:
        return False

    # --- shared ---------------------------------------------------------------------------------

    def user(self, role: str) -> str:
        return self.users[role]

    async def wait_card(self, job_id: str, check: Callable[[Card], bool], what: str) -> Card:
        async def look() -> Card | None:
            card = self.card(job_id)
            return card if check(card) else None

        try:
            return await until(look, f"{self.platform}: job {job_id}'s message: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it shows {self.card(job_id)}") from None

    async def wait_told(self, role: str, mark: Any, text: str) -> str:
        async def look() -> str | None:
            said = "\n".join(self.told(role, mark))
            return said if text in said else None

        return await until(look, f"{self.platform}: {role} told {text!r}")

    async def new_job(self, before: set[str]) -> Job:
        """The job whose message appeared since `before` (one gesture starts one job)."""

        async def look() -> set[str]:
            return self.shown_jobs() - before

        (job_id,) = await until(look, f"{self.platform}: a new job's message")
        self.known.add(job_id)
        return await self.app.service.get(job_id)

    async def make(self, kind: str) -> Job:
        """A job of the owner's in the state a step needs, made the way the owner would."""
        step = {
            "running": Step("command", "video", prompt="a long wait", flags=(*CLIP, ("pipeline", "scripted"))),
            "video": Step("command", "video", prompt="a paper boat on a pond", flags=CLIP),
            "image": Step("command", "image", prompt="a lighthouse at dusk", flags=(("size", "128x128"),)),
            "takes": Step("command", "video", prompt="three paper boats", flags=(*CLIP, ("takes", 3))),
        }[kind]
        before = self.shown_jobs()
        await self.command(OWNER, step, None)
        job = await self.new_job(before)
        if kind == "running":
            await until(lambda: _status(self, job.id, JobStatus.RUNNING), f"job {job.id} running")
            await self.wait_card(job.id, lambda c: c.actions == (Action.CANCEL,), "Cancel while it runs")
        else:
            done = await asyncio.wait_for(self.app.runner.wait(job.id), 30)
            assert done.status is JobStatus.COMPLETED, done.error_message
            if kind == "takes":
                await self.wait_card(job.id, lambda c: "Done" in c.text and set(c.actions) == TAKES_ACTIONS, f"done with {TAKES_ACTIONS}")
                return await self.app.service.get(job.id)
            actions = VIDEO_ACTIONS if kind == "video" else IMAGE_ACTIONS
            await self.wait_card(job.id, lambda c: "Done" in c.text and c.actions == actions, f"done with {actions}")
        return await self.app.service.get(job.id)

    async def close(self) -> None:
        raise NotImplementedError


# --- Slack ---------------------------------------------------------------------------------------


class SlackDriver(Driver):
    platform = "slack"
    #: ✉️ is not offered in Slack (a DM with a file needs a scope the bot does not ask for).
    reactions = {Action.REROLL: "repeat", Action.CANCEL: "x", Action.ANIMATE: "clapper", Action.USE: "three"}
    users = {OWNER: "U0ALICE", OTHER: "U0MALLORY", ADMIN: "U0ADMIN"}

    def __init__(self, emulator: SlackEmulator, bot: slack_api.SlackBot) -> None:
        super().__init__()
        self.slack, self.bot, self.app = emulator, bot, bot.app
        self.cards: dict[str, str] = {}  # job id → its card's ts (remembered: a deleted card is gone)

    async def command(self, role: str, step: Step, job_id: str | None) -> None:
        slash = f"/{step.name}" if step.name in ("video", "image") else "/video"
        text = typed_text(step, job_id, leading=None if slash != "/video" or step.name == "video" else step.name)
        sent = await self.slack.slash(self.bot.url, slash, text, user_id=self.user(role))
        assert sent.status == 200 and sent.elapsed < 3, sent

    async def press(self, role: str, job_id: str, action: Action, step: Step) -> None:
        from bot.adapters.slack.blocks import BUTTONS, PROMPT_BLOCK, SECONDS_BLOCK, TAKE_BUTTONS

        ts = self.cards[job_id]
        assert action in self.card(job_id).actions, f"{action} is not on job {job_id}'s card"
        views = len(self.slack.views)
        action_id = TAKE_BUTTONS[(action, step.take)] if (action, step.take) in TAKE_BUTTONS else BUTTONS[action]
        sent = await self.slack.click(self.bot.url, ts, action_id, job_id, user_id=self.user(role))
        assert sent.status == 200 and sent.elapsed < 3
        if action in (Action.REMIX, Action.EXTEND):
            modal = (await self.slack.wait_for(lambda: self.slack.views[views:]))[0]
            values = {PROMPT_BLOCK: step.prompt or ""}
            if step.flag("seconds"):
                values[SECONDS_BLOCK] = str(step.flag("seconds"))
            submitted = await self.slack.submit_view(self.bot.url, modal, values, user_id=self.user(role))
            assert submitted.status == 200

    async def react(self, role: str, job_id: str, action: Action) -> None:
        sent = await self.slack.react(self.bot.url, self.cards[job_id], self.reactions[action], user_id=self.user(role))
        assert sent.status == 200 and sent.elapsed < 3

    def mark(self) -> Any:
        return len(self.slack.responses), len(self.slack.ephemerals)

    def told(self, role: str, mark: Any) -> list[str]:
        user = self.user(role)
        answers = [r["text"] for r in self.slack.responses[mark[0]:] if r["key"] in (f"cmd-{user}", f"act-{user}")]
        return answers + [e["text"] for e in self.slack.ephemerals[mark[1]:] if e["user"] == user]

    def shown_jobs(self) -> set[str]:
        for ts, message in list(self.slack.messages.items()):
            if message.get("metadata", {}).get("event_type") == "videobot_job":
                self.cards.setdefault(message["metadata"]["event_payload"]["job_id"], ts)
        return {job_id for job_id, ts in self.cards.items() if ts in self.slack.messages} | self.known

    def card(self, job_id: str) -> Card:
        from bot.adapters.slack.blocks import ACTIONS_BY_ID

        self.shown_jobs()
        ts = self.cards.get(job_id)
        if ts is None or ts not in self.slack.messages:
            return Card(gone=ts is not None)
        message = self.slack.messages[ts]
        return Card(self.slack.text_of(ts), tuple(ACTIONS_BY_ID[a] for a, _ in slack_api.buttons_of(message)))

    def typed(self, name: str) -> str:
        return f"/{name}" if name in ("video", "image") else f"/video {name}"

    async def close(self) -> None:
        await self.bot.close()


# --- Discord -------------------------------------------------------------------------------------


class DiscordDriver(Driver):
    platform = "discord"
    reactions = {Action.REROLL: "🔁", Action.CANCEL: "❌", Action.ANIMATE: "🎬", Action.DM: "✉️", Action.USE: "3️⃣"}
    users = {OWNER: "1001", OTHER: "2002", ADMIN: "9009"}

    def __init__(self, emulator: DiscordEmulator, bot: discord_api.DiscordBot) -> None:
        super().__init__()
        self.emu, self.bot, self.app = emulator, bot, bot.app

    def _messages(self) -> list[dict[str, Any]]:
        """What the channel shows (ephemeral answers are the user's own)."""
        return [m for m in list(self.emu.messages.values()) if m["channel_id"] == self.emu.channel_id and not m["flags"] & discord_api.EPHEMERAL]

    @staticmethod
    def _shows(message: dict[str, Any], job_id: str) -> bool:
        return (
            job_id in TITLE_ID.findall(message["content"])
            or any(a["filename"].startswith(job_id) for a in message["attachments"])
            or any(_button_job(b) == job_id for b in discord_api.buttons_of(message))
        )

    def _options(self, step: Step, job_id: str | None) -> dict[str, Any]:
        options: dict[str, Any] = dict(step.flags)
        if job_id:
            options["id"] = job_id
        if step.prompt:
            options["script" if step.name == "story" else "prompt"] = step.prompt
        if step.name in ("use", "more"):
            options["take"] = step.take
        elif step.words:
            options.update(zip(("change", "key", "value"), step.words, strict=False))
        return options

    async def command(self, role: str, step: Step, job_id: str | None) -> None:
        interaction = await self.emu.slash(step.name, self._options(step, job_id), user_id=self.user(role))
        await asyncio.wait_for(interaction.answered.wait(), 3)

    def _button(self, job_id: str, action: Action, take: int = 1) -> tuple[dict[str, Any], str]:
        for message in self._messages():
            for custom_id in discord_api.buttons_of(message):
                if custom_id.endswith((f":{action.value}:{job_id}", f":{action.value}:{job_id}:{take}")):
                    return message, custom_id
        raise AssertionError(f"no {action} button for job {job_id}")

    async def press(self, role: str, job_id: str, action: Action, step: Step) -> None:
        message, custom_id = self._button(job_id, action, step.take)
        click = await self.emu.click(message["id"], custom_id, user_id=self.user(role))
        await asyncio.wait_for(click.answered.wait(), 3)
        if action in (Action.REMIX, Action.EXTEND) and click.callback and click.callback["type"] == 9:
            values = {"New prompt": step.prompt or ""}
            if action is Action.EXTEND:
                values = {"Seconds to add": str(step.flag("seconds") or ""), "What happens next (optional)": step.prompt or ""}
            submitted = await self.emu.submit_modal(click, values, user_id=self.user(role))
            await asyncio.wait_for(submitted.answered.wait(), 3)

    async def react(self, role: str, job_id: str, action: Action) -> None:
        shown = [m for m in self._messages() if self._shows(m, job_id)]
        # The result post for a finished job (its file and buttons), else the status message.
        message = next((m for m in shown if m["attachments"]), shown[0])
        await self.emu.react(message["id"], self.reactions[action], user_id=self.user(role))

    def mark(self) -> Any:
        dms = {role: len(self._dms(role)) for role in self.users}
        return len(self.emu.interactions), dms

    def _dms(self, role: str, *, with_file: bool = False) -> list[dict[str, Any]]:
        channel = self.emu.dm_channels.get(self.user(role))
        return channel_posts(self.emu, channel, with_file=with_file) if channel else []

    def told(self, role: str, mark: Any) -> list[str]:
        said: list[str] = []
        for interaction in list(self.emu.interactions.values())[mark[0]:]:
            if interaction.user_id != self.user(role):
                continue
            if interaction.callback and interaction.callback["type"] == 4:
                said.append(interaction.callback["data"].get("content") or "")
            original = self.emu.messages.get(interaction.original_id or "")
            if original is not None and original["flags"] & discord_api.EPHEMERAL:
                said.append(original["content"])  # a private deferred answer, edited in place
            said += [m["content"] for m in discord_api.ephemerals(self.emu, interaction.token)]
        # What the user reads: the bot escapes markdown in everything it echoes (render.plain).
        return [discord_api.as_read(t) for t in said + [m["content"] for m in self._dms(role)[mark[1][role]:]]]

    def shown_jobs(self) -> set[str]:
        return {job_id for m in self._messages() for job_id in TITLE_ID.findall(m["content"])} | self.known

    def card(self, job_id: str) -> Card:
        shown = [m for m in self._messages() if self._shows(m, job_id)]
        actions = tuple(Action(b.split(":")[1]) for m in shown for b in discord_api.buttons_of(m) if _button_job(b) == job_id)
        return Card("\n".join(discord_api.as_read(m["content"]) for m in shown), actions, gone=not shown)

    def typed(self, name: str) -> str:
        return f"`/{name}`"

    def got_file(self, role: str, job_id: str) -> bool:
        return any(a["filename"] == f"{job_id}.mp4" for m in self._dms(role, with_file=True) for a in m["attachments"])

    async def close(self) -> None:
        await self.bot.close()


# --- Console -------------------------------------------------------------------------------------


class ConsoleDriver(Driver):
    platform = "console"
    roles = (OWNER,)
    reactions = {}
    users = {OWNER: "console"}
    #: What a console user types for a button the console shows as a typed command.
    TYPED = {Action.CANCEL: "cancel", Action.REROLL: "reroll", Action.REMIX: "remix", Action.EXTEND: "extend", Action.DELETE: "delete", Action.ANIMATE: "animate",
             Action.USE: "use", Action.MORE_LIKE: "more"}  # fmt: skip

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app
        self.out = io.StringIO()
        self.console = ConsoleAdapter(app, stdin=io.StringIO(""), stdout=self.out)

    async def start(self) -> None:
        self.app.runner.deliverers[self.console.platform] = self.console.deliver
        await self.console.start()
        await self.console.wait_closed()  # empty input: lines below are typed directly

    async def command(self, role: str, step: Step, job_id: str | None) -> None:
        await self.console.handle_line(f"/{step.name} {typed_text(step, job_id)}".rstrip())

    async def press(self, role: str, job_id: str, action: Action, step: Step) -> None:
        assert action in self.card(job_id).actions, f"the console does not offer {action} for job {job_id}"
        words = (str(step.take),) if action in (Action.USE, Action.MORE_LIKE) else ()
        await self.command(role, Step("command", self.TYPED[action], prompt=step.prompt, flags=step.flags, words=words), job_id)

    def mark(self) -> Any:
        return len(self.out.getvalue())

    def told(self, role: str, mark: Any) -> list[str]:
        return [self.out.getvalue()[mark:]]

    def _lines(self, job_id: str) -> list[str]:
        return [line for line in self.out.getvalue().splitlines() if line.startswith(f"[{job_id}]") or f"job {job_id}" in line.lower()]

    def shown_jobs(self) -> set[str]:
        text = self.out.getvalue()
        return set(re.findall(r"^\[([0-9a-z]{8})\]", text, re.M)) | set(TITLE_ID.findall(text)) | self.known

    def card(self, job_id: str) -> Card:
        actions: tuple[Action, ...] = ()
        by_command = {v: k for k, v in self.TYPED.items()}
        for line in self._lines(job_id):
            if line.startswith(f"[{job_id}] next: "):
                actions = tuple(by_command[typed.split()[0][1:]] for typed in line.split("next: ", 1)[1].split(" · "))
            elif any(word in line for word in ("Cancelled", "deleted", "❌")):
                actions = ()  # what the hint offered is gone with the job
        return Card("\n".join(self._lines(job_id)), actions)

    def typed(self, name: str) -> str:
        return f"/{name}"

    async def close(self) -> None:
        await self.console.stop()
        await self.app.close()


def _button_job(custom_id: str) -> str | None:
    """The job a Discord button acts on: `vb:ACTION:JOB`, or `vb:ACTION:JOB:N` for a set's take."""
    found = re.fullmatch(r"vbs?:[a-z-]+:([0-9a-z]{4,32})(?::[1-4])?", custom_id)
    return found.group(1) if found else None


def typed_text(step: Step, job_id: str | None, *, leading: str | None = None) -> str:
    """A step as typed after the command: the job id, words, the prompt (quoted when it holds `--`), flags."""
    parts = [leading] if leading else []
    if job_id:
        parts.append(job_id)
    parts += step.words
    if step.prompt:
        parts.append(f'"{step.prompt}"' if "--" in step.prompt else step.prompt)
    for name, value in step.flags:
        parts += [f"--{name}", shlex.quote(str(value))]
    return " ".join(parts)


# --- the test ------------------------------------------------------------------------------------


@pytest.fixture
async def held() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    server.release.clear()  # "running" jobs stay running until the test is done with them
    yield server
    server.release.set()


def _register(server: ScriptedServer) -> Callable[[App], None]:
    def register(app: App) -> None:
        app.registry.register("scripted", lambda: scripted_pipeline(server))
        app.runner.poll_policy = PollPolicy(interval=0.02, min_interval=0.01, backoff_base=0.01)

    return register


@pytest.fixture
async def driver(request: pytest.FixtureRequest, settings: Any, held: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Driver]:
    limits = {"VIDEOBOT_ADMIN_USER_IDS": "U0ADMIN,9009", "VIDEOBOT_MAX_CONCURRENT_JOBS": "12", "VIDEOBOT_MAX_RUNNING_PER_USER": "12"}
    platform = request.param
    made: Driver
    emulator: Any = None
    if platform == "slack":
        emulator = SlackEmulator()
        await emulator.start()
        slack_env(monkeypatch, emulator, **limits)
        made = SlackDriver(emulator, await start_slack_bot(register=_register(held)))
    elif platform == "discord":
        emulator = DiscordEmulator()
        await emulator.start()
        discord_env(monkeypatch, emulator, **limits)
        made = DiscordDriver(emulator, await start_bot(register=_register(held)))
    else:
        for key, value in limits.items():
            monkeypatch.setenv(key, value)
        app = await open_app(load_settings())
        _register(held)(app)
        await app.runner.start()
        made = console = ConsoleDriver(app)
        await console.start()
    try:
        yield made
    finally:
        held.release.set()
        await made.close()
        if emulator is not None:
            await emulator.stop()
        if platform == "discord":
            discord_api.reset_discord_endpoints()


CASES = [("slack", r) for r in SlackDriver.roles] + [("discord", r) for r in DiscordDriver.roles] + [("console", r) for r in ConsoleDriver.roles]


@pytest.mark.parametrize(("driver", "role"), CASES, indirect=["driver"], ids=[f"{p}-{r}" for p, r in CASES])
async def test_every_command_button_and_reaction(driver: Driver, role: str) -> None:
    d = driver
    shared: dict[str, Job] = {}
    started: list[Job] = []
    for step in STEPS:
        if role not in step.roles or role not in d.roles:
            continue
        if step.gesture == "reaction" and step.name not in d.reactions:
            continue
        expect = step.expectation(role)
        where = f"{d.platform}: {step.gesture} {step.name} on {step.target or '-'} by {role}"
        target: Job | None = None
        if step.target is not None:
            destroys = expect in ("cancelled", "deleted")
            if destroys or step.target not in shared:
                target = await d.make(step.target)
                if not destroys:
                    shared[step.target] = target
            else:
                target = shared[step.target]
        mark, before = d.mark(), d.shown_jobs()
        job_id = target.id if target and step.takes_id else None
        card_before = d.card(target.id) if target else None

        if step.gesture == "command":
            await d.command(role, step, job_id)
        elif step.gesture == "button":
            assert job_id is not None
            await d.press(role, job_id, Action(step.name), step)
        else:
            assert job_id is not None
            await d.react(role, job_id, Action(step.name))

        kind, _, arg = expect.partition(":")
        arg = arg.format(**{k: j.id for k, j in shared.items()})
        if kind == "started":
            job = await d.new_job(before)
            assert (job.kind, job.origin.user_id) == (JobKind(arg), d.user(role)), where
            if target is not None:
                assert job.parent_id == target.id, where
            if step.prompt and job.kind in (JobKind.GENERATE, JobKind.REMIX, JobKind.EXTEND, JobKind.IMAGE):
                assert job.prompt == step.prompt, where
            if step.flag("seconds") and job.kind is JobKind.EXTEND:
                assert job.params.seconds == step.flag("seconds"), where
            if target is not None and target.kind is JobKind.IMAGE and job.kind is JobKind.GENERATE:
                assert job.params.image_path and job.prompt == target.prompt, where  # animated: the image is its first frame
            started.append(job)
        elif kind == "refused":
            await d.wait_told(role, mark, REFUSED)
            assert target is not None
            now = await d.app.service.get(target.id)
            assert now.deleted_at is None and now.status is target.status, where
            assert card_before is not None and d.card(target.id).actions == card_before.actions, f"{where}: the message is unchanged"
        elif kind == "cancelled":
            assert target is not None
            await until(lambda: _status(d, target.id, JobStatus.CANCELLED), f"{where}: job cancelled")
            await d.wait_card(target.id, lambda c: "Cancelled" in c.text and not c.actions, "cancelled, nothing left to press")
        elif kind == "deleted":
            assert target is not None
            await until(lambda: _deleted(d, target.id), f"{where}: job deleted")
            await d.wait_card(target.id, lambda c: c.gone or ("deleted" in c.text.lower() and not c.actions), "deleted, nothing left to press")
        elif kind == "text":
            await d.wait_told(role, mark, arg)
        elif kind == "lacks":
            said = await until(lambda: _said(d, role, mark), f"{where}: an answer")
            assert arg not in said, where
        elif kind == "help":
            said = await d.wait_told(role, mark, "(default)")
            for command in HELP_COMMANDS:
                assert d.typed(command.name) in said, f"{where}: {command.name} missing from help"
            assert "prompts up to" in said and "16:9" in said, where
        elif kind == "dm":
            assert target is not None
            await until(lambda: _async(d.got_file(role, target.id)), f"{where}: the file by DM")
        else:
            raise AssertionError(f"unknown expectation {expect}")
        if kind != "refused" and "Only an admin" not in arg:
            assert not [t for t in d.told(role, mark) if REFUSED in t or "Only an admin" in t], f"{where}: refused"

    # Every job a step started finishes, and its final state reaches its message.
    for job in started:
        done = await asyncio.wait_for(d.app.runner.wait(job.id), 30)
        assert done.status is JobStatus.COMPLETED, (job.kind, done.error_message)
        await d.wait_card(job.id, lambda c: "Done" in c.text, "its final state")


async def _status(d: Driver, job_id: str, status: JobStatus) -> bool:
    return (await d.app.service.get(job_id)).status is status


async def _deleted(d: Driver, job_id: str) -> bool:
    return (await d.app.service.get(job_id)).deleted_at is not None


async def _said(d: Driver, role: str, mark: Any) -> str:
    return "\n".join(d.told(role, mark))


async def _async(value: Any) -> Any:
    return value
