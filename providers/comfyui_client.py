"""The wire side of ComfyUI: HTTP calls and one websocket listener per client.

ComfyUI pushes progress over `/ws?clientId=...` to the client that queued a prompt
(`execution_start`, `executing`, `progress` value/max, `executed`, `execution_success`,
`execution_error`, `execution_interrupted`) and the queue size to everyone (`status`).
The listener folds those messages into an in-memory map, prompt id -> state, that the
provider's `poll` reads first; HTTP (`/history/{id}`, `/queue`) is the source of truth
whenever the socket is down, was down since the state was written, or knows nothing
(a prompt adopted after a restart was queued by another client id).

aiohttp, because it speaks both HTTP and websockets with one connection pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from providers.errors import NotConfigured, ProviderError, TransientError

log = logging.getLogger(__name__)

#: Terminal phases as the websocket reports them.
SUCCESS, ERROR, INTERRUPTED = "success", "error", "interrupted"
#: Prompt states kept at most; the oldest finished ones go first.
MAX_STATES = 2000


@dataclass
class PromptState:
    """What the websocket said about one prompt."""

    phase: str = "queued"  # queued | running | finishing | success | error | interrupted
    node: str | None = None
    progress: int = 0
    started_ms: int | None = None
    ended_ms: int | None = None
    error: dict[str, Any] | None = None
    #: False once the socket dropped after this was written: messages may have been missed.
    fresh: bool = True
    #: Queued with our client id: only then does the socket get its progress at all.
    ours: bool = False
    touched: float = field(default_factory=time.monotonic)

    @property
    def terminal(self) -> bool:
        return self.phase in (SUCCESS, ERROR, INTERRUPTED)


@dataclass(frozen=True)
class QueueSnapshot:
    running: tuple[str, ...]
    #: Pending prompt ids in the order ComfyUI will run them.
    pending: tuple[str, ...]
    #: prompt id -> the value of `ref_key` in its extra_data, where there is one.
    refs: dict[str, str] = field(default_factory=dict)

    def position(self, prompt_id: str) -> int | None:
        """1 = runs next; the prompts running now count as ahead."""
        if prompt_id in self.pending:
            return len(self.running) + self.pending.index(prompt_id) + 1
        return None


class ComfyUIClient:
    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        reconnect_max: float = 10.0,
        provider: str = "comfyui",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.reconnect_max = reconnect_max
        self.provider = provider
        #: Our websocket identity; ComfyUI sends a prompt's progress to the client id that queued it.
        self.client_id = uuid.uuid4().hex
        self.states: dict[str, PromptState] = {}
        #: `status` messages: prompts queued or running on the server.
        self.queue_remaining: int | None = None
        self.connected = False
        #: Incremented on every (re)connect; tests and logs read it.
        self.connections = 0
        self._session: aiohttp.ClientSession | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No overall limit: a video download may take minutes; reads are limited per socket read.
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout),
            )
        return self._session

    def listen(self) -> None:
        """Start the websocket listener (idempotent; needs a running loop)."""
        self._closed = False
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="comfyui-ws")

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.connected = False

    # --- websocket -----------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        base = self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/ws?clientId={self.client_id}"

    async def _listen(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                async with self.session.ws_connect(self.ws_url, heartbeat=30, autoping=True) as ws:
                    self.connected = True
                    self.connections += 1
                    delay = 0.1
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._on_text(message.data)
                        elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                            break
                        # BINARY frames are preview images; we do not show previews.
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, reset, handshake 4xx/5xx: polling covers the gap
                log.debug("comfyui websocket: %r", exc)
            finally:
                if self.connected:
                    log.info("comfyui websocket to %s dropped; polling /history until it is back", self.base_url)
                self.connected = False
                for state in self.states.values():
                    state.fresh = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            kind, data = message["type"], message.get("data") or {}
        except (ValueError, KeyError, TypeError):
            return
        if kind == "status":
            with contextlib.suppress(KeyError, TypeError):
                self.queue_remaining = int(data["status"]["exec_info"]["queue_remaining"])
            return
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if not prompt_id or prompt_id not in self.states:
            return  # not a prompt we watch
        self.apply(prompt_id, kind, data)

    def apply(self, prompt_id: str, kind: str, data: dict[str, Any]) -> None:
        """Fold one message into the prompt's state."""
        state = self.states[prompt_id]
        state.touched = time.monotonic()
        if state.terminal:
            return
        if kind == "execution_start":
            state.phase, state.started_ms = "running", _ms(data) or state.started_ms
            state.progress = max(state.progress, 1)
        elif kind in ("execution_cached", "executed"):
            state.phase = "running" if state.phase == "queued" else state.phase
        elif kind == "executing":
            state.node = data.get("node")
            # `node: null` is the old end-of-prompt signal; the outcome is in /history.
            state.phase = "finishing" if state.node is None else "running"
        elif kind == "progress":
            state.phase = "running"
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 0:
                # Sampling is most of the work: steps span 2..95 %, decoding and saving the rest.
                state.progress = max(state.progress, min(95, 2 + int(93 * value / maximum)))
        elif kind == "execution_success":
            state.phase, state.ended_ms = SUCCESS, _ms(data)
        elif kind == "execution_error":
            state.phase, state.ended_ms, state.error = ERROR, _ms(data), data
        elif kind == "execution_interrupted":
            state.phase, state.ended_ms, state.error = INTERRUPTED, _ms(data), data

    def watch(self, prompt_id: str, *, ours: bool = False) -> PromptState:
        """Start keeping the websocket's news about a prompt; `ours` when we queue it with our
        client id (before it is queued: events can arrive before the POST's answer does)."""
        state = self.states.get(prompt_id)
        if state is None:
            state = self.states[prompt_id] = PromptState(fresh=self.connected and ours, ours=ours)
            self._prune()
        return state

    def forget(self, prompt_id: str) -> None:
        self.states.pop(prompt_id, None)

    def _prune(self) -> None:
        if len(self.states) <= MAX_STATES:
            return
        by_age = sorted(self.states.items(), key=lambda kv: (not kv[1].terminal, kv[1].touched))
        for prompt_id, _ in by_age[: len(self.states) - MAX_STATES]:
            del self.states[prompt_id]

    # --- HTTP ----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                      params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text). Connection faults are TransientError; statuses are the caller's."""
        try:
            async with self.session.request(method, self.base_url + path, json=json_body, data=data, params=params) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientError("ComfyUI is not answering.", provider=self.provider, detail=f"{method} {path}: {exc!r}") from exc
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        if status in (401, 403):
            raise NotConfigured(
                "ComfyUI refused our credentials.", provider=self.provider,
                detail=f"{method} {path}: {status} (check COMFYUI_AUTH_HEADER)",
            )  # fmt: skip
        return status, body

    async def read(self, method: str, path: str, **kw: Any) -> Any:
        """A call that is safe to repeat; 5xx and 429 are transient, other failures are errors."""
        status, body = await self.request(method, path, **kw)
        if status == 429 or status >= 500:
            raise TransientError("ComfyUI is having trouble.", provider=self.provider, detail=f"{method} {path}: {status} {_short(body)}")
        if status >= 400:
            raise ProviderError("ComfyUI refused a request.", provider=self.provider, detail=f"{method} {path}: {status} {_short(body)}")
        return body

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        body = await self.read("GET", f"/history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    async def queue(self, ref_key: str = "") -> QueueSnapshot:
        body = await self.read("GET", "/queue")
        if not isinstance(body, dict):
            raise TransientError("ComfyUI sent an unreadable queue.", provider=self.provider, detail=_short(body))

        def ids(items: Any, ordered: bool) -> tuple[str, ...]:
            rows = [item for item in items or [] if isinstance(item, list) and len(item) >= 2]
            if ordered:
                # The pending list is a heap copy; ComfyUI runs the lowest number first.
                rows.sort(key=lambda item: (float(item[0]) if isinstance(item[0], (int, float)) else 0.0))
            return tuple(str(item[1]) for item in rows)

        refs: dict[str, str] = {}
        for item in [*(body.get("queue_running") or []), *(body.get("queue_pending") or [])]:
            # [number, prompt_id, prompt, extra_data, outputs_to_execute]
            if ref_key and isinstance(item, list) and len(item) > 3 and isinstance(item[3], dict) and ref_key in item[3]:
                refs[str(item[1])] = str(item[3][ref_key])
        return QueueSnapshot(ids(body.get("queue_running"), False), ids(body.get("queue_pending"), True), refs)

    async def upload_image(self, data: bytes, filename: str) -> dict[str, Any]:
        """POST /upload/image, overwriting a file of the same name (our names are per prompt, so a
        repeat after a crash replaces its own file instead of adding 'name (1).png')."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=filename, content_type="image/png")
        form.add_field("overwrite", "true")
        form.add_field("type", "input")
        body = await self.read("POST", "/upload/image", data=form)
        if not isinstance(body, dict) or not body.get("name"):
            raise ProviderError("ComfyUI did not store the input image.", provider=self.provider, detail=_short(body))
        return body

    async def download(self, params: Mapping[str, str], dest: Path) -> None:
        """Stream GET /view to `dest`."""
        try:
            async with self.session.get(self.base_url + "/view", params=params) as response:
                if response.status == 404:
                    raise ProviderError(
                        "ComfyUI no longer has the output file.", provider=self.provider,
                        detail=f"GET /view {dict(params)}: 404",
                    )  # fmt: skip
                if response.status == 429 or response.status >= 500:
                    raise TransientError("ComfyUI's download failed.", provider=self.provider, detail=f"GET /view: {response.status}")
                if response.status >= 400:
                    raise ProviderError("ComfyUI's download failed.", provider=self.provider, detail=f"GET /view: {response.status}")
                with dest.open("wb") as out:
                    async for chunk in response.content.iter_chunked(1024 * 1024):
                        out.write(chunk)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            # A full disk (OSError) is ours, not ComfyUI's: it propagates as it is.
            raise TransientError("ComfyUI's download was interrupted.", provider=self.provider, detail=repr(exc)) from exc


def _ms(data: dict[str, Any]) -> int | None:
    value = data.get("timestamp")
    return int(value) if isinstance(value, (int, float)) else None


def _short(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body)[:500] if body is not None else ""
    return text[:500]
