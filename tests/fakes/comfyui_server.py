"""A stateful loopback emulator of a ComfyUI server, for the real aiohttp client.

Speaks ComfyUI's wire protocol: `POST /prompt` (a client's own `prompt_id` honoured, validation
with `node_errors`), one worker running the queue one prompt at a time, `GET /queue`,
`POST /queue` (delete, clear), `POST /interrupt` (optionally naming a prompt), `GET /history`
and `/history/{id}`, `POST /history` (delete, clear), `POST /upload/image`, `GET /view`,
`POST /api/jobs/{id}/cancel` (newer servers, `{"cancelled": bool}`; `legacy=True` answers 404
like older ones), and the websocket `/ws?clientId=` with `status`, `execution_start`,
`execution_cached`, `executing`, `progress`, `executed`, `execution_success`, `execution_error`
and `execution_interrupted`, sent to the client id that queued the prompt (everyone when it
gave none), as ComfyUI does.

It knows the node classes of the workflows videobot ships (and a few more) with their required
inputs, and executes a graph by walking it: the sampler reports progress step by step, a
SaveVideo node writes a real H.264 MP4 (a tenth of the asked size, so tests stay quick; frames
and fps as asked), a SaveImage node a real PNG, LoadImage reads what /upload/image stored.
Every request is recorded; tests hold, fail, interrupt and drop the websocket at will.
"""
from __future__ import annotations

from tests.fakes.loopback import serve
import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from PIL import Image

from providers.local_render import render_clip, render_still

#: Video frames are written at the asked size divided by this (1280x704 -> 128x70).
SCALE = 10
MAX_SEED = 2**64 - 1
OOM = "Allocation on device 0 would exceed allowed memory. (out of memory)"


@dataclass(frozen=True)
class NodeSpec:
    required: tuple[str, ...]
    output: bool = False


NODES: dict[str, NodeSpec] = {
    "UNETLoader": NodeSpec(("unet_name", "weight_dtype")),
    "CLIPLoader": NodeSpec(("clip_name", "type")),
    "VAELoader": NodeSpec(("vae_name",)),
    "CheckpointLoaderSimple": NodeSpec(("ckpt_name",)),
    "ModelSamplingSD3": NodeSpec(("model", "shift")),
    "CLIPTextEncode": NodeSpec(("text", "clip")),
    "PrimitiveInt": NodeSpec(("value",)),
    "PrimitiveFloat": NodeSpec(("value",)),
    "PrimitiveString": NodeSpec(("value",)),
    "Wan22ImageToVideoLatent": NodeSpec(("vae", "width", "height", "length", "batch_size")),
    "EmptyHunyuanLatentVideo": NodeSpec(("width", "height", "length", "batch_size")),
    "EmptySD3LatentImage": NodeSpec(("width", "height", "batch_size")),
    "EmptyLatentImage": NodeSpec(("width", "height", "batch_size")),
    "KSampler": NodeSpec(("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative", "latent_image", "denoise")),
    "VAEDecode": NodeSpec(("samples", "vae")),
    "CreateVideo": NodeSpec(("images", "fps")),
    "LoadImage": NodeSpec(("image",)),
    "SaveVideo": NodeSpec(("video", "filename_prefix", "format", "codec"), output=True),
    "SaveImage": NodeSpec(("images", "filename_prefix"), output=True),
}
_INT_RANGES = {"seed": (0, MAX_SEED), "steps": (1, 10_000), "width": (16, 16_384), "height": (16, 16_384),
               "length": (1, 16_384), "batch_size": (1, 4096)}  # fmt: skip


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    #: When it arrived (time.time(), the clock a create's `sent_at` is on).
    at: float = field(default_factory=time.time)


RECORDED = web.RequestKey("recorded", Recorded)


@dataclass
class Item:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def row(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class Upload:
    name: str
    data: bytes
    subfolder: str = ""


@dataclass
class Failure:
    message: str = OOM
    type: str = "torch.OutOfMemoryError"


class ComfyUIServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.requests: list[Recorded] = []
        self.pending: list[Item] = []
        self.running: Item | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, Upload] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        #: Every websocket message sent, as (client id or None for everyone, message).
        self.sent: list[tuple[str | None, dict[str, Any]]] = []
        # --- knobs for tests ---
        #: Headers every request must carry (the reverse proxy in front of ComfyUI).
        self.required_headers: dict[str, str] = {}
        #: No new prompt starts while paused (they stay pending, with queue positions).
        self.paused = False
        #: The sampler stops before this step until `release()` (or an interrupt).
        self.hold_at_step: int | None = None
        self.step_delay = 0.005
        #: Sampler steps actually walked (the workflow's `steps` capped by this).
        self.max_steps = 6
        #: The next prompt fails at its sampler with this.
        self.fail_next: Failure | None = None
        #: Older servers: no /api/jobs/{id}/cancel.
        self.legacy = False
        #: Older servers ignore a client's prompt_id and make their own.
        self.honour_prompt_id = True
        #: /ws answers 503 (a proxy that lost the upgrade, a restarting server).
        self.refuse_websockets = False
        #: Seconds between execution_success and the history entry (ComfyUI's real order).
        self.history_lag = 0.0
        self._number = itertools.count()
        self._interrupt = False
        self._step = 0
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._counters: dict[str, int] = {}
        self.base_url = ""

    # --- control from tests --------------------------------------------------------------

    def release(self) -> None:
        self.hold_at_step = None

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def prompt_posts(self) -> list[Recorded]:
        return self.calls("POST", "/prompt")

    @property
    def step(self) -> int:
        """The sampler step the running prompt has reached (0 when none runs)."""
        return self._step

    async def drop_websockets(self) -> None:
        """Close every websocket (a proxy restart, a network blip)."""
        for ws in list(self.sockets.values()):
            await ws.close()
        self.sockets.clear()

    def enqueue(self, prompt: dict[str, Any], *, client_id: str | None = None) -> str:
        """Queue a prompt as another user would (no validation)."""
        prompt_id = str(uuid.uuid4())
        outputs = [n for n, node in prompt.items() if NODES.get(node["class_type"], NodeSpec(())).output]
        extra = {"client_id": client_id} if client_id else {}
        self.pending.append(Item(float(next(self._number)), prompt_id, prompt, extra, outputs))
        self._changed.set()
        return prompt_id

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> ComfyUIServer:
        (self.work_dir / "input").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "output").mkdir(parents=True, exist_ok=True)
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/prompt", self._get_prompt)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_post("/interrupt", self._interrupt_route)
        app.router.add_get("/history", self._get_history)
        app.router.add_get("/history/{id}", self._get_history_one)
        app.router.add_post("/history", self._post_history)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/view", self._view)
        app.router.add_post("/api/jobs/{id}/cancel", self._cancel_job)
        self._runner, port = await serve(app)
        self.base_url = f"http://127.0.0.1:{port}"
        self._worker = asyncio.get_running_loop().create_task(self._work())
        return self

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.drop_websockets()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        parsed: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            with contextlib.suppress(ValueError):
                parsed = await request.json()
        recorded = Recorded(request.method, request.path, dict(request.query), dict(request.headers), parsed)
        self.requests.append(recorded)
        request[RECORDED] = recorded
        for name, value in self.required_headers.items():
            if request.headers.get(name) != value:
                return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def _send(self, kind: str, data: dict[str, Any], sid: str | None) -> None:
        message = {"type": kind, "data": data}
        self.sent.append((sid, message))
        if sid is None:
            targets = list(self.sockets.values())
        else:
            targets = [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(message)

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    async def _status(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    # --- websocket -----------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_websockets:
            return web.Response(status=503, text="websocket unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets.pop(sid, None)  # a second socket with the same id replaces the first
        self.sockets[sid] = ws
        try:
            await ws.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            async for message in ws:
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    # --- queueing ------------------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "", "extra_info": {}},
                                      "node_errors": {}}, status=400)  # fmt: skip
        prompt = body["prompt"]
        error, node_errors, outputs = self._validate(prompt)
        if error is not None:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4()) if self.honour_prompt_id else str(uuid.uuid4())
        number = float(next(self._number))
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        self.pending.append(Item(number, prompt_id, prompt, extra, outputs))
        self._changed.set()
        await self._status()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _get_queue(self, request: web.Request) -> web.Response:
        # The pending list is a heap in ComfyUI: not in run order.
        pending = sorted(self.pending, key=lambda i: i.number, reverse=True)
        return web.json_response({
            "queue_running": [self.running.row()] if self.running else [],
            "queue_pending": [i.row() for i in pending],
        })  # fmt: skip

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json or {}
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete") or []:
            self.pending = [i for i in self.pending if i.prompt_id != prompt_id]
        await self._status()
        return web.Response(status=200)

    async def _interrupt_route(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json or {}
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if self.running is not None and (wanted is None or wanted == self.running.prompt_id):
            self._interrupt = True
        return web.Response(status=200)

    async def _cancel_job(self, request: web.Request) -> web.Response:
        if self.legacy:
            return web.Response(status=404, text="404: Not Found")
        prompt_id = request.match_info["id"]
        if self.running is not None and self.running.prompt_id == prompt_id:
            self._interrupt = True
            return web.json_response({"cancelled": True})
        if any(i.prompt_id == prompt_id for i in self.pending):
            self.pending = [i for i in self.pending if i.prompt_id != prompt_id]
            await self._status()
            return web.json_response({"cancelled": True})
        return web.json_response({"cancelled": False})

    async def _get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        if "max_items" in request.query:
            items = items[-int(request.query["max_items"]):]
        return web.json_response(dict(items))

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json or {}
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or []:
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    # --- files ---------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder") or "")
        name = image.filename
        data = image.file.read()
        if str(post.get("overwrite")) not in ("true", "1"):
            stem, dot, ext = name.rpartition(".")
            n = 1
            while self._key(subfolder, name) in self.uploads and self.uploads[self._key(subfolder, name)].data != data:
                name = f"{stem} ({n}).{ext}" if dot else f"{name} ({n})"
                n += 1
        self.uploads[self._key(subfolder, name)] = Upload(name, data, subfolder)
        folder = self.work_dir / "input" / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        request[RECORDED].json = {"name": name, "subfolder": subfolder, "bytes": len(data)}
        return web.json_response({"name": name, "subfolder": subfolder, "type": str(post.get("type") or "input")})

    @staticmethod
    def _key(subfolder: str, name: str) -> str:
        return f"{subfolder}/{name}" if subfolder else name

    async def _view(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("filename", "")
        if not name or name.startswith("/") or ".." in name:
            return web.Response(status=400)
        kind = request.query.get("type", "output")
        if kind not in ("output", "input", "temp"):
            return web.Response(status=400)
        path = self.work_dir / kind / request.query.get("subfolder", "") / name
        if ".." in request.query.get("subfolder", "") or not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"'})

    # --- validation, as ComfyUI's validate_prompt answers ---------------------------------

    def _validate(self, prompt: Any) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
        if not isinstance(prompt, dict):
            return _error("invalid_prompt", "Invalid prompt", "prompt is not an object"), {}, []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.", f"Node ID '#{node_id}'"), {}, []
            if node["class_type"] not in NODES:
                return _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.", f"Node ID '#{node_id}'"), {}, []
        outputs = [n for n, node in prompt.items() if NODES[node["class_type"]].output]
        if not outputs:
            return _error("prompt_no_outputs", "Prompt has no outputs", ""), {}, []
        node_errors: dict[str, Any] = {}
        for node_id, node in prompt.items():
            errors = self._node_errors(prompt, node)
            if errors:
                node_errors[node_id] = {"errors": errors, "dependent_outputs": outputs, "class_type": node["class_type"]}
        if node_errors:
            details = "; ".join(f"{n}: {e['errors'][0]['message']}" for n, e in node_errors.items())
            return _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), node_errors, []
        return None, {}, outputs

    def _node_errors(self, prompt: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = node.get("inputs") or {}
        errors = []
        for name in NODES[node["class_type"]].required:
            if name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing", "details": name,
                               "extra_info": {"input_name": name}})  # fmt: skip
                continue
            value = inputs[name]
            if _is_link(value):
                if value[0] not in prompt:
                    errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 list of [string, int]",
                                   "details": f"{name}", "extra_info": {"input_name": name}})  # fmt: skip
                continue
            if name in _INT_RANGES:
                low, high = _INT_RANGES[name]
                if not isinstance(value, int) or isinstance(value, bool):
                    errors.append({"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value",
                                   "details": f"{name}, {value!r}", "extra_info": {"input_name": name}})  # fmt: skip
                elif value > high:
                    errors.append({"type": "value_bigger_than_max", "message": f"Value {value} bigger than max of {high}",
                                   "details": f"{name}", "extra_info": {"input_name": name}})  # fmt: skip
                elif value < low:
                    errors.append({"type": "value_smaller_than_min", "message": f"Value {value} smaller than min of {low}",
                                   "details": f"{name}", "extra_info": {"input_name": name}})  # fmt: skip
        if node["class_type"] == "LoadImage" and not _is_link(inputs.get("image")):
            name = str(inputs.get("image", ""))
            if name not in self.uploads:
                errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                               "details": f"image - Invalid image file: {name}", "extra_info": {"input_name": "image"}})  # fmt: skip
        return errors

    # --- execution -----------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while self.paused or not self.pending:
                self._changed.clear()
                await self._changed.wait()
            item = min(self.pending, key=lambda i: i.number)
            self.pending.remove(item)
            self.running = item
            try:
                await self._execute(item)
            finally:
                self.running = None
                self._interrupt = False
                self._step = 0
            await self._status()

    async def _execute(self, item: Item) -> None:
        sid = item.extra_data.get("client_id")
        messages: list[list[Any]] = []

        async def emit(kind: str, data: dict[str, Any], *, keep: bool = False) -> None:
            data = {**data, "prompt_id": item.prompt_id}
            if keep:
                data["timestamp"] = int(time.time() * 1000)
                messages.append([kind, data])
            await self._send(kind, data, sid)

        prompt = item.prompt
        await emit("execution_start", {}, keep=True)
        await emit("execution_cached", {"nodes": []}, keep=True)
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        status = "success"
        for node_id in _order(prompt, item.outputs):
            node = prompt[node_id]
            await emit("executing", {"node": node_id, "display_node": node_id})
            if node["class_type"] == "KSampler":
                steps = min(int(_value(prompt, node_id, "steps") or 1), self.max_steps)
                for step in range(1, steps + 1):
                    while self.hold_at_step is not None and step >= self.hold_at_step and not self._interrupt:
                        await asyncio.sleep(0.005)
                    if self._interrupt:
                        break
                    self._step = step
                    await asyncio.sleep(self.step_delay)
                    await emit("progress", {"value": step, "max": steps, "node": node_id})
                if not self._interrupt and self.fail_next is not None:
                    failure, self.fail_next = self.fail_next, None
                    await emit("execution_error", {
                        "node_id": node_id, "node_type": node["class_type"], "executed": executed,
                        "exception_message": failure.message, "exception_type": failure.type,
                        "traceback": ["Traceback (most recent call last):", "..."], "current_inputs": {}, "current_outputs": {},
                    }, keep=True)  # fmt: skip
                    status = "error"
                    break
            if self._interrupt:
                await emit("execution_interrupted", {"node_id": node_id, "node_type": node["class_type"], "executed": executed}, keep=True)
                status = "error"
                break
            if NODES[node["class_type"]].output:
                ui = await self._save(prompt, node_id)
                outputs[node_id] = ui
                await emit("executed", {"node": node_id, "display_node": node_id, "output": ui})
            executed.append(node_id)
        if status == "success":
            await emit("execution_success", {}, keep=True)
        if self.history_lag:
            await asyncio.sleep(self.history_lag)
        self.history[item.prompt_id] = {
            "prompt": item.row(),
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs},
        }
        await emit("executing", {"node": None})

    async def _save(self, prompt: dict[str, Any], node_id: str) -> dict[str, Any]:
        node = prompt[node_id]
        upstream = _upstream(prompt, node_id)
        prefix = str(node["inputs"].get("filename_prefix") or "ComfyUI")
        subfolder, _, stem = prefix.rpartition("/")
        count = self._counters[prefix] = self._counters.get(prefix, 0) + 1
        sampler = _first(prompt, upstream, ("seed", "noise_seed"))
        seed = _value(prompt, sampler, "seed") if sampler else None
        text = _text(prompt, sampler) if sampler else "comfyui"
        size_node = _first(prompt, upstream, ("width",))
        width = int(_value(prompt, size_node, "width") or 512) if size_node else 512
        height = int(_value(prompt, size_node, "height") or 512) if size_node else 512
        folder = self.work_dir / "output" / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        if node["class_type"] == "SaveImage":
            name = f"{stem}_{count:05d}_.png"
            await asyncio.to_thread(render_still, folder / name, prompt=text, width=width, height=height, seed=seed)
            return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}]}
        frames = int(_value(prompt, size_node, "length") or 1) if size_node else 1
        fps_node = _first(prompt, upstream, ("fps",))
        fps = max(1, round(float(_value(prompt, fps_node, "fps") or 24))) if fps_node else 24
        loader = next((n for n in upstream if prompt[n]["class_type"] == "LoadImage"), None)
        base = None
        if loader is not None:
            upload = self.uploads[str(prompt[loader]["inputs"]["image"])]
            base = Image.open(self.work_dir / "input" / upload.subfolder / upload.name).convert("RGB")
        name = f"{stem}_{count:05d}_.mp4"
        w, h = max(16, width // SCALE // 2 * 2), max(16, height // SCALE // 2 * 2)
        await asyncio.to_thread(
            render_clip, folder / name, prompt=text, seconds=max(1, round(frames / fps)), width=w, height=h, fps=fps,
            seed=seed, base_image=base,
        )  # fmt: skip
        return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _value(prompt: dict[str, Any], node_id: str | None, name: str) -> Any:
    """An input's value, following a link to a Primitive node."""
    if node_id is None:
        return None
    value = prompt[node_id]["inputs"].get(name)
    if _is_link(value):
        source = prompt.get(value[0], {})
        return source.get("inputs", {}).get("value") if str(source.get("class_type", "")).startswith("Primitive") else None
    return value


def _upstream(prompt: dict[str, Any], node_id: str) -> list[str]:
    """Every node the given one depends on, nearest first."""
    seen: list[str] = []
    frontier = [node_id]
    while frontier:
        current = frontier.pop(0)
        for value in prompt[current]["inputs"].values():
            if _is_link(value) and value[0] in prompt and value[0] not in seen:
                seen.append(value[0])
                frontier.append(value[0])
    return seen


def _first(prompt: dict[str, Any], nodes: list[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in nodes if any(k in prompt[n]["inputs"] for k in names)), None)


def _text(prompt: dict[str, Any], sampler: str) -> str:
    positive = prompt[sampler]["inputs"].get("positive")
    if _is_link(positive):
        return str(_value(prompt, positive[0], "text") or "comfyui")
    return "comfyui"


def _order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """Nodes the outputs need, dependencies first."""
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value):
                visit(value[0])
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order


def load_shipped(name: str) -> dict[str, Any]:
    """A workflow videobot ships, as a plain graph (for queuing other users' prompts)."""
    path = Path(__file__).resolve().parents[2] / "providers" / "comfyui_workflows" / name
    return json.loads(path.read_text(encoding="utf-8"))


_ids = itertools.count()


@pytest.fixture
async def comfyui_server(tmp_path: Path) -> AsyncIterator[ComfyUIServer]:
    server = await ComfyUIServer(tmp_path / f"comfyui-server-{next(_ids)}").start()
    try:
        yield server
    finally:
        await server.stop()
