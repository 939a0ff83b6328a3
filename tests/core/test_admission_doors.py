"""One door: every way a job can start is refused by every rule that applies to it.

One row per door (a typed command, the CLI, the console, the web, each button or reaction that
starts a job, each story action, a pending confirmation, a fallback hop, a retry), one column per
rule (where, who, reuse, pipeline, seconds, prompt, price, budget, queue, cooldown). A request that
breaks a rule through a door is refused with that rule's own message, and nothing is created at
the provider and no job row is added. `test_every_door_has_a_row` fails when a door exists
(an `Action` that starts a job, a story action) without a row here.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.core import stories, takes
from bot.core.actions import perform
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.errors import NeedsConfirmation, VideobotError
from bot.core.models import Actor, GenerateRequest, Job, JobStatus, Origin
from bot.core.stories import StoryRequest, add_scene, confirm_story, preview_story, redo_scene, submit_story
from bot.core.views import Action
from bot.web.pages import web_origin
from bot.core.grants import Grant
from providers.base import RemoteJob, RemoteStatus
from providers.errors import GenerationFailed, ModelUnavailable
from providers.pipeline import Pipeline
from tests.apps import FAST
from tests.fakes.scripted_provider import ScriptedProvider, ScriptedServer

GUILD = "G1"
HOME = Origin(platform="discord", workspace_id=GUILD, channel_id="C1", user_id="alice", extra={"roles": ["R-members"]})
OTHER_CHANNEL = HOME.model_copy(update={"channel_id": "C2", "user_id": "bob"})
CLI = Origin(platform="cli", user_id="local")
CONSOLE = Origin(platform="console", channel_id="console", user_id="local")
LONG = "a lighthouse " * 10  # over the 40 characters this module allows
HOLDING = "holding the queue"


class Flaky(GenerationFailed):
    retryable = True


class FlakyProvider(ScriptedProvider):
    """Fails its first job with an error the provider calls its own fault (the runner retries once)."""

    async def poll(self, remote_id: str) -> RemoteJob:
        if self.server.jobs[remote_id]["n"] == 1:
            return RemoteJob(id=remote_id, status=RemoteStatus.FAILED, error_code="internal", error_message="dropped")
        return await super().poll(remote_id)

    def error_for(self, job: Any) -> Exception:
        return Flaky("the provider dropped it", remote_code="internal")


@dataclass
class Rig:
    app: App
    server: ScriptedServer
    video: Job
    image: Job
    story: Job
    takes: Job
    flaky: ScriptedServer | None = None

    @property
    def provider(self) -> ScriptedProvider:
        return self.app.registry.get("scripted").video  # type: ignore[return-value]

    async def setting(self, key: str, value: Any) -> None:
        await self.app.store.put_setting("discord", GUILD, "tenant", "", key, value, by="test")


async def _done(app: App, job: Job) -> Job:
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


@pytest.fixture
async def rig(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("VIDEOBOT_DEFAULT_PIPELINE", "scripted")
    monkeypatch.setenv("VIDEOBOT_MAX_PROMPT_CHARS", "40")
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "")
    monkeypatch.setenv("VIDEOBOT_MAX_QUEUED_PER_USER", "1")
    server = ScriptedServer(polls_to_finish=1)
    app = await open_app(load_settings())
    app.registry.register("scripted", lambda: Pipeline(name="scripted", video=ScriptedProvider(server, cost=0.25)))
    app.runner.poll_policy = FAST

    async def nowhere(job: Job) -> None:
        return None

    app.runner.deliverers["discord"] = nowhere
    app.runner.deliverers["cli"] = nowhere
    app.runner.deliverers["console"] = nowhere
    await app.runner.start()
    try:
        video = await _done(app, await app.service.submit(GenerateRequest(prompt="a lighthouse", seconds=2), HOME))
        still = tmp_path / "still.png"
        Image.new("RGB", (128, 72), (200, 90, 30)).save(still)
        image = await app.service.submit(GenerateRequest(prompt="a still", kind="image", pipeline="local-image"), HOME)
        image = await _done(app, image)
        story = await _done(app, await submit_story(app.service, StoryRequest(script="dawn | dusk", seconds=2), HOME))
        takes = await _done(app, await app.service.submit(GenerateRequest(prompt="a lighthouse", seconds=2, takes=2), HOME))
        assert (video.status, image.status, story.status, takes.status) == (JobStatus.COMPLETED,) * 4, (video, image, story, takes)
        yield Rig(app, server, video, image, story, takes)
    finally:
        await app.close()


# --- the doors ---------------------------------------------------------------------------------

Door = Callable[[Rig, Origin, dict[str, Any]], Awaitable[Any]]


def _actor(origin: Origin) -> Actor:
    return Actor.of(origin)


async def chat_command(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    text = f"/video {a.get('prompt', 'a red kite')} --seconds {a.get('seconds', 1)}"
    return await run_command(r.app.service, parse_command(text), o, _actor(o))


async def chat_takes(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    text = f"/video {a.get('prompt', 'a red kite')} --seconds {a.get('seconds', 1)} --takes 2"
    return await run_command(r.app.service, parse_command(text), o, _actor(o))


async def cli(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    return await r.app.service.submit(GenerateRequest(prompt=a.get("prompt", "a red kite"), seconds=a.get("seconds", 1)), CLI)


async def console(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    text = f"/video {a.get('prompt', 'a red kite')} --seconds {a.get('seconds', 1)}"
    return await run_command(r.app.service, parse_command(text), CONSOLE, _actor(CONSOLE))


async def web_reroll(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    grant = Grant(kind="session", user_id=o.user_id, platform=o.platform, workspace_id=o.workspace_id, expires_at=2e9)
    origin = await web_origin(r.video, grant, await r.app.service.admission.rules(r.video.origin))
    return await perform(r.app.service, Action.REROLL, r.video.id, actor=grant.actor(), origin=origin)


def button(action: Action, parent: str) -> Door:
    async def press(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
        job: Job = getattr(r, parent)
        return await perform(
            r.app.service, action, job.id, actor=_actor(o), origin=o,
            prompt=a.get("prompt", "in the rain"), seconds=a.get("seconds"), scene=1, take=1,
        )  # fmt: skip

    return press


async def reaction_reroll(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    # 🔁 on a result: the adapter maps it to the same action (bot.core.actions.REACTIONS).
    from bot.core.actions import reaction_action

    action = reaction_action("🔁")
    assert action is not None
    return await perform(r.app.service, action, r.video.id, actor=_actor(o), origin=o)


async def story_plan(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    script = a.get("prompt", "dawn | noon")
    return await submit_story(r.app.service, StoryRequest(script=script, seconds=a.get("seconds", 1)), o)


async def story_confirm(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    # The preview passes while the rule is off; the rule comes in before the Confirm.
    preview = await preview_story(r.app.service, StoryRequest(script="dawn | noon", seconds=a.get("seconds", 1)), o)
    await a["apply"]()
    return await confirm_story(r.app.service, preview.token, _actor(o))


async def story_redo(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    return await redo_scene(r.app.service, r.story.id, 1, o)


async def story_add(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    return await add_scene(r.app.service, r.story.id, a.get("prompt", "night"), o)


async def story_reroll(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    return await stories.reroll(r.app.service, r.story.id, o)


async def pending_confirmation(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    await r.setting("confirm_above_usd", 0.0)
    try:
        with pytest.raises(NeedsConfirmation) as offer:
            await r.app.service.submit(GenerateRequest(prompt="a red kite", seconds=a.get("seconds", 1)), o)
    finally:
        await r.setting("confirm_above_usd", None)
    await a["apply"]()
    return await r.app.service.confirm(offer.value.token, _actor(o))


async def fallback_hop(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    down = ScriptedServer()
    down.fail_submit = ModelUnavailable("down for maintenance")
    r.app.registry.register(
        "down", lambda: Pipeline(name="down", video=ScriptedProvider(down, cost=0.0), fallbacks=("scripted",))
    )
    job = await r.app.service.submit(GenerateRequest(prompt="a red kite", pipeline="down", seconds=1), o)
    await a["apply"]()
    ended = await _done(r.app, job)
    if ended.status is JobStatus.FAILED:
        raise _Ended(ended.error_message or "")
    return ended


async def retry(r: Rig, o: Origin, a: dict[str, Any]) -> Any:
    flaky = r.flaky = ScriptedServer(polls_to_finish=1)
    r.app.registry.register("flaky", lambda: Pipeline(name="flaky", video=FlakyProvider(flaky, cost=0.25)))
    await r.setting("pipelines", None)
    job = await r.app.service.submit(GenerateRequest(prompt="a red kite", pipeline="flaky", seconds=1), o)
    await a["apply"]()
    ended = await _done(r.app, job)
    if ended.status is JobStatus.FAILED:
        raise _Ended(ended.error_message or "")
    return ended


class _Ended(VideobotError):
    """A job that ended refused inside the runner (a hop or a retry), with its message."""


DOORS: dict[str, Door] = {
    "chat command": chat_command,
    "chat takes": chat_takes,
    "cli": cli,
    "console": console,
    "web action": web_reroll,
    "button re-roll": button(Action.REROLL, "video"),
    "button remix": button(Action.REMIX, "video"),
    "button extend": button(Action.EXTEND, "video"),
    "button animate": button(Action.ANIMATE, "image"),
    "reaction re-roll": reaction_reroll,
    "button more like": button(Action.MORE_LIKE, "takes"),
    "button re-roll all": button(Action.REROLL, "takes"),
    "story plan": story_plan,
    "story confirm": story_confirm,
    "story redo scene": story_redo,
    "story add scene": story_add,
    "story re-roll": story_reroll,
    "pending confirmation": pending_confirmation,
    "fallback hop": fallback_hop,
    "retry": retry,
}

# Which rules each door meets. The operator's own doors (CLI, console) answer to the operator's
# settings only (tenant settings are per workspace); a hop re-checks what a new pipeline changes
# (allowed, priced, the budget for its price); a retry re-checks that its pipeline is still allowed.
ALL = frozenset(DOORS)
OPERATOR = frozenset({"cli", "console"})
RUNNER = frozenset({"fallback hop", "retry"})
CHAT = ALL - OPERATOR - RUNNER
REUSE = frozenset({"button re-roll", "button remix", "button extend", "button animate", "reaction re-roll",
                   "story redo scene", "story add scene", "story re-roll", "button more like", "button re-roll all"})  # fmt: skip
NEW_TEXT = frozenset({"chat command", "chat takes", "cli", "console", "button remix", "button extend", "button animate", "story plan",
                      "story add scene"})  # fmt: skip


@dataclass(frozen=True)
class Rule:
    name: str
    #: The rule's own message (a fragment of it).
    message: str
    doors: frozenset[str]


RULES = [
    Rule("where", "only in the channels", CHAT),
    Rule("who", "needs one of the roles", CHAT),
    Rule("reuse", "only in the channel where it was made", REUSE),
    Rule("pipeline", "not allowed here", ALL - OPERATOR),
    Rule("seconds", "at most 1 seconds", ALL - OPERATOR - RUNNER),
    Rule("prompt", "the limit is 40", NEW_TEXT),
    Rule("price", "is not known", ALL - {"story confirm", "retry"}),
    Rule("budget", "daily budget", ALL - OPERATOR - {"retry"}),
    Rule("queue", "jobs waiting or running", ALL - RUNNER),
    Rule("cooldown", "apart", CHAT),
]


async def _apply(r: Rig, rule: str, door: str) -> tuple[Callable[[], Awaitable[None]], Origin, dict[str, Any]]:
    """What breaking `rule` means: a setting, an argument, or the state of the provider."""
    args: dict[str, Any] = {}
    origin = HOME
    noop: Callable[[], Awaitable[None]]

    async def noop() -> None:
        return None

    if rule == "where":
        return (lambda: r.setting("channels", ["C-elsewhere"])), origin, args
    if rule == "who":
        return (lambda: r.setting("roles", ["R-directors"])), origin, args
    if rule == "reuse":
        return noop, OTHER_CHANNEL, args
    if rule == "pipeline":
        return (lambda: r.setting("pipelines", ["local", "down"])), origin, args
    if rule == "seconds":
        args["seconds"] = 2
        return (lambda: r.setting("max_seconds", 1)), origin, args
    if rule == "prompt":
        args["prompt"] = LONG
        return noop, origin, args
    if rule == "price":

        async def unpriced() -> None:
            r.provider.cost = None  # type: ignore[assignment]

        return unpriced, origin, args
    if rule == "budget":
        return (lambda: r.setting("user_budget_usd", 0.1)), origin, args
    if rule == "queue":

        async def busy() -> None:
            r.server.release.clear()
            holder = {"cli": CLI, "console": CONSOLE}.get(door, origin)
            await r.app.service.submit(GenerateRequest(prompt=HOLDING, seconds=1), holder)

        return busy, origin, args
    if rule == "cooldown":
        return (lambda: r.setting("cooldown_seconds", 3600)), origin, args
    raise AssertionError(rule)


CASES = [(door, rule) for door in DOORS for rule in RULES if door in rule.doors]


@pytest.mark.parametrize(("door", "rule"), [(d, r.name) for d, r in CASES], ids=[f"{d}-{r.name}" for d, r in CASES])
async def test_a_door_refuses_what_a_rule_forbids(rig: Rig, door: str, rule: str) -> None:
    spec = next(r for r in RULES if r.name == rule)
    apply, origin, args = await _apply(rig, rule, door)
    before_creates = _creates(rig)
    late = door in ("story confirm", "pending confirmation", "fallback hop", "retry")
    if late:
        args["apply"] = apply
    else:
        await apply()
    rows_before = await _rows(rig)
    with pytest.raises(VideobotError) as refused:
        await DOORS[door](rig, origin, args)
    assert spec.message in str(refused.value), f"{door} / {rule}: {refused.value!r}"
    assert _creates(rig) == before_creates, f"{door} / {rule} created at the provider"
    if door in RUNNER:  # a job admitted before the rule changed, ended before its next create
        assert rig.flaky is None or len(rig.flaky.creates) == 1, "the retry was refused before its second create"
    else:
        assert await _rows(rig) == rows_before, f"{door} / {rule} stored a job"


def _creates(rig: Rig) -> int:
    return len([c for c in rig.server.creates if c.prompt != HOLDING])


async def _rows(rig: Rig) -> int:
    return len([j for j in await rig.app.store.list(limit=500) if j.prompt != HOLDING])


async def test_every_door_passes_when_no_rule_is_broken(rig: Rig) -> None:
    """The table's refusals are the rules', not the doors' own failures: unbroken, each door starts its job."""
    for name, door in DOORS.items():
        rig.server.release.set()

        async def nothing() -> None:
            return None

        result = await door(rig, HOME, {"apply": nothing})
        job = result.job if hasattr(result, "job") and result.job is not None else result
        assert isinstance(job, Job), (name, result)
        await _done(rig.app, job)


#: Every way the core offers to start a job, and the row of the table that tries it.
ACTION_ROWS = {
    Action.MORE_LIKE: "button more like", Action.REROLL: "button re-roll", Action.REMIX: "button remix", Action.EXTEND: "button extend",
    Action.ANIMATE: "button animate", Action.REDO_SCENE: "story redo scene", Action.ADD_SCENE: "story add scene",
}  # fmt: skip
SERVICE_ROWS = {
    "submit": "chat command", "reroll": "button re-roll", "remix": "button remix", "extend": "button extend",
    "animate": "button animate", "confirm": "pending confirmation", "start": "chat command",
}  # fmt: skip
STORY_ROWS = {
    "submit_story": "story plan", "preview_story": "story confirm", "confirm_story": "story confirm",
    "redo_scene": "story redo scene", "add_scene": "story add scene", "reroll_story": "story re-roll", "reroll": "story re-roll",
}  # fmt: skip
TAKE_ROWS = {"more_like": "button more like", "reroll_set": "button re-roll all", "reroll": "button re-roll all"}
#: Public service methods that return a job without starting one (Use N posts a take that exists: nothing is made).
NOT_DOORS = {"use_take", "get", "get_for", "cancel", "delete", "redeliver", "set_messages", "decline", "take_pending", "file_for", "find_by_message"}


def _starters(owner: object, names: list[str]) -> set[str]:
    import inspect

    found = set()
    for name in names:
        member = getattr(owner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(member):
            continue
        if inspect.ismodule(owner) and member.__module__ != owner.__name__:
            continue  # imported from elsewhere: counted where it is defined
        returns = str(inspect.signature(member).return_annotation)
        if "Job" in returns and "list" not in returns and name not in NOT_DOORS:
            found.add(name)
    return found


def test_every_door_has_a_row() -> None:
    """A new way to start a job (an action, a service method, a story function) fails here until the
    table has a row that tries every rule through it."""
    from bot.core.service import JobService

    starting = {a for a in Action if a.starts_job}
    assert starting <= set(ACTION_ROWS), f"actions that start jobs without a door row: {starting - set(ACTION_ROWS)}"
    service_doors = _starters(JobService, dir(JobService))
    assert service_doors <= set(SERVICE_ROWS), f"service methods that start jobs without a row: {service_doors - set(SERVICE_ROWS)}"
    story_doors = _starters(stories, [n for n in dir(stories) if not n.startswith("_")])
    assert story_doors <= set(STORY_ROWS), f"story functions that start jobs without a row: {story_doors - set(STORY_ROWS)}"
    for rows in (ACTION_ROWS, SERVICE_ROWS, STORY_ROWS):
        assert set(rows.values()) <= set(DOORS)
    take_doors = _starters(takes, [n for n in dir(takes) if not n.startswith("_")])
    assert take_doors <= set(TAKE_ROWS), f"takes functions that start jobs without a row: {take_doors - set(TAKE_ROWS)}"
    assert set(TAKE_ROWS.values()) <= set(DOORS)
    for rule in RULES:
        assert rule.doors <= set(DOORS), rule
    assert {"chat command", "cli", "console", "web action", "pending confirmation", "fallback hop", "retry"} <= set(DOORS)
