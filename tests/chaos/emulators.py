"""The loopback emulators as the crash tests need them: timed polls and a little latency.

The emulators under tests/fakes/ are used as they are; these subclasses only add two
things: the time of every poll of a remote job (so a benchmark can measure how soon a
restarted bot polls the jobs it resumed), and latency on the calls that bound a job
state (create, download, upload), so that every state lasts long enough for a kill to
land inside it. The latency comes *after* the emulator has acted, like a real API whose
answer is slow: a kill in that window is the "accepted, but the answer never arrived"
case the bot has to settle on restart.

The emulators share the harness's event loop, and the harness kills synchronously: a
create the bot wrote to its socket just before SIGKILL is handled only after the kill.
Each create therefore also records whether its caller had hung up by the time the answer
was ready (`Create.caller_gone`), which no clock comparison can tell.
"""
from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.kling_server import ACCESS_KEY as KLING_ACCESS_KEY
from tests.fakes.kling_server import SECRET_KEY as KLING_SECRET_KEY
from tests.fakes.kling_server import BODY as KLING_BODY
from tests.fakes.kling_server import KlingServer
from tests.fakes.openai_server import OpenAIEmulator, Recorded
from tests.fakes.runway_server import SECRET as RUNWAY_SECRET
from tests.fakes.runway_server import RunwayServer
from tests.fakes.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackEmulator


@dataclass
class Latency:
    """Seconds each kind of call takes after the emulator acted (0: answer at once)."""

    create: float = 0.25
    image: float = 0.25
    download: float = 0.25
    upload: float = 0.15
    post: float = 0.15


@dataclass
class Poll:
    remote_id: str
    at: float  # time.monotonic() in the test process, like every other time the harness keeps


@dataclass
class Create:
    """A create the provider accepted (and would bill): when it arrived, and when its answer left."""

    provider: str
    prompt: str
    started: float
    answered: float
    #: The caller's connection was closed before the answer could be sent: the process that sent
    #: the create had died (its start may come after the kill: see the module's docstring).
    caller_gone: bool = False


def caller_gone(request: web.Request) -> bool:
    """The connection of `request` is closed: nobody is left to read the answer."""
    transport = request.transport
    return transport is None or transport.is_closing()


#: The request an emulator handler is serving (set by _record, read back by the same handler).
_current: ContextVar[Recorded | None] = ContextVar("chaos_current_request", default=None)


class TimedOpenAI(OpenAIEmulator):
    """The OpenAI Videos/Images emulator, recording when each video is polled and each create answered."""

    def __init__(self, work_dir: Path, latency: Latency) -> None:
        super().__init__(work_dir)
        self.latency = latency
        self.polls: list[Poll] = []
        self.create_log: list[Create] = []

    async def _record(self, request: web.Request, op: str) -> Recorded:
        rec = await super()._record(request, op)
        _current.set(rec)
        return rec

    async def _retrieve(self, request: web.Request) -> web.StreamResponse:
        self.polls.append(Poll(request.match_info["video_id"], time.monotonic()))
        return await super()._retrieve(request)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        return await self._timed("sora", request, super()._create(request), self.latency.create)

    async def _image(self, request: web.Request) -> web.StreamResponse:
        return await self._timed("gpt-image", request, super()._image(request), self.latency.image)

    async def _timed(self, provider: str, request: web.Request, handled: Any, latency: float) -> web.StreamResponse:
        started = time.monotonic()
        response = await handled
        await asyncio.sleep(latency)
        rec = _current.get()
        if response.status < 300 and rec is not None:
            self.create_log.append(Create(provider, str(rec.fields.get("prompt", "")), started, time.monotonic(), caller_gone(request)))
        return response

    async def _content(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.latency.download)
        return await super()._content(request)


class TimedRunway(RunwayServer):
    """The Runway emulator, recording when each task is read and each create answered."""

    def __init__(self, work_dir: Path, latency: Latency) -> None:
        super().__init__(work_dir)
        self.latency = latency
        self.polls: list[Poll] = []
        self.create_log: list[Create] = []

    async def _get_task(self, request: web.Request) -> web.Response:
        self.polls.append(Poll(request.match_info["id"], time.monotonic()))
        return await super()._get_task(request)

    async def _text_to_video(self, request: web.Request) -> web.Response:
        return await self._timed(request, super()._text_to_video(request))

    async def _image_to_video(self, request: web.Request) -> web.Response:
        return await self._timed(request, super()._image_to_video(request))

    async def _timed(self, request: web.Request, handled: Any) -> web.Response:
        started = time.monotonic()
        response = await handled
        await asyncio.sleep(self.latency.create)
        if response.status < 300:
            body = await request.json()
            self.create_log.append(Create("runway", str(body.get("promptText", "")), started, time.monotonic(), caller_gone(request)))
        return response

    async def _output(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.latency.download)
        return await super()._output(request)


class TimedKling(KlingServer):
    """The Kling emulator, recording when each task is read and each create answered."""

    def __init__(self, work_dir: Path, latency: Latency) -> None:
        super().__init__(work_dir)
        self.latency = latency
        self.polls: list[Poll] = []
        self.create_log: list[Create] = []

    async def _read(self, request: web.Request) -> web.Response:
        self.polls.append(Poll(f"{request.match_info['kind']}:{request.match_info['id']}", time.monotonic()))
        return await super()._read(request)

    async def _create(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        response = await super()._create(request)
        await asyncio.sleep(self.latency.create)
        if response.status < 300:
            prompt = str((request[KLING_BODY] or {}).get("prompt", ""))
            self.create_log.append(Create("kling", prompt, started, time.monotonic(), caller_gone(request)))
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(self.latency.download)
        return await super()._file(request)


class SlowSlack(SlackEmulator):
    """The Slack emulator with slow posts (status messages, file shares) and slow file uploads."""

    latency: Latency = Latency()
    _SLOW = {"files.completeUploadExternal": "post", "chat.postMessage": "post"}

    async def _api(self, request: web.Request) -> web.Response:
        response = await super()._api(request)
        kind = self._SLOW.get(request.match_info["method"])
        if kind is not None:
            # After the message exists: a kill here leaves a post the bot never heard about.
            await asyncio.sleep(getattr(self.latency, kind))
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.latency.upload)
        try:
            return await super()._upload(request)
        except ConnectionResetError:
            return web.Response(status=400, text="upload cut off")  # the bot was killed mid-upload


@dataclass
class World:
    """Slack, OpenAI, Runway and Kling emulators on loopback, started together."""

    work_dir: Path
    latency: Latency = field(default_factory=Latency)

    def __post_init__(self) -> None:
        (self.work_dir / "openai").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "runway").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "kling").mkdir(parents=True, exist_ok=True)
        self.slack = SlowSlack()
        self.slack.latency = self.latency
        self.openai = TimedOpenAI(self.work_dir / "openai", self.latency)
        self.runway = TimedRunway(self.work_dir / "runway", self.latency)
        self.kling = TimedKling(self.work_dir / "kling", self.latency)
        # Jobs take about a second at the provider whatever happens to the bot meanwhile,
        # like a real remote job; the polls in between give "running" a width to kill in.
        self.openai.advance = "time"
        self.openai.seconds_to_complete = 1.2
        self.runway.script = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"]
        self.kling.steps = 4

    async def start(self) -> World:
        await self.slack.start()
        await self.openai.start()
        await self.runway.start()
        await self.kling.start()
        return self

    async def stop(self) -> None:
        for server in (self.kling, self.runway, self.openai, self.slack):
            await server.stop()

    async def __aenter__(self) -> World:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """Settings that point a `videobot run` process at these emulators (Slack in HTTP mode)."""
        return {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            # The workspace's chat.update budget: Slack's 50, per 5 s instead of per minute (tests' pace).
            "SLACK_UPDATE_BUDGET": "50",
            "SLACK_UPDATE_WINDOW_SECONDS": "5",
            "OPENAI_API_KEY": self.openai.api_key,
            "OPENAI_BASE_URL": self.openai.base_url,
            "OPENAI_VIDEO_BASE_URL": self.openai.base_url,
            "RUNWAYML_API_SECRET": RUNWAY_SECRET,
            "RUNWAYML_BASE_URL": self.runway.base_url,
            "RUNWAYML_POLL_SECONDS": "0.2",
            "RUNWAYML_RETRY_BACKOFF_SECONDS": "0.05",
            "KLING_ACCESS_KEY": KLING_ACCESS_KEY,
            "KLING_SECRET_KEY": KLING_SECRET_KEY,
            "KLING_BASE_URL": self.kling.base_url,
            "KLING_POLL_SECONDS": "0.2",
            "KLING_RETRY_BACKOFF_SECONDS": "0.05",
            # A restart takes longer than this: a create cut off by the kill has arrived by then.
            "KLING_ABSENCE_GRACE_SECONDS": "1",
        }

    def polls(self) -> list[Poll]:
        return [*self.openai.polls, *self.runway.polls, *self.kling.polls]

    def creates(self) -> list[Create]:
        return [*self.openai.create_log, *self.runway.create_log, *self.kling.create_log]


def first_poll_after(polls: list[Poll], remote_id: str, since: float, until: float = float("inf")) -> float | None:
    """Seconds from `since` to the first poll of `remote_id` in [since, until), or None."""
    times = [p.at for p in polls if p.remote_id == remote_id and since <= p.at < until]
    return min(times) - since if times else None
