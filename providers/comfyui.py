"""A self-hosted ComfyUI server as a video provider (and an image provider).

What is special about ComfyUI, and only that:
- The "model" is a workflow file; we set its inputs by node title (`providers.comfyui_workflow`).
- We choose the prompt id: a UUID derived from our job id, sent with `POST /prompt`. ComfyUI
  validates and enqueues before it answers, and keeps a prompt in `/queue` until it runs and in
  `/history` after, so after a crash the job is found again by that id and never queued twice.
- Progress comes over a websocket (`providers.comfyui_client`); `/history` and `/queue` are read
  when the socket is down or knows nothing. The polling engine drives `poll` as for any provider.
- Cost is zero by default (own hardware) or a configured USD per second of video; the GPU time
  each prompt took (execution start to end, from ComfyUI's own timestamps) is kept on the
  RemoteJob (`gpu_seconds`) and in a small JSON sidecar per prompt (`gpu_seconds(remote_id)`).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from providers.base import (
    Capability,
    ImageProvider,
    ImageRequest,
    ImageResult,
    Operation,
    RemoteJob,
    RemoteStatus,
    VideoProvider,
    VideoRequest,
    parse_size,
)
from providers.comfyui_client import ComfyUIClient, QueueSnapshot
from providers.comfyui_workflow import (
    FRAMES,
    HEIGHT,
    IMAGE,
    MAX_SEED,
    NEGATIVE,
    OUTPUT,
    PROMPT,
    SEED,
    WIDTH,
    Workflow,
    find_titled,
)
from providers.errors import (
    GenerationFailed,
    InvalidRequest,
    ProviderError,
    ProviderInvalidRequest,
    ProviderTimeout,
    TransientError,
    Unavailable,
)
from providers.media import crop_to_size, load_image
from providers.polling import PollPolicy, retrying

log = logging.getLogger(__name__)

#: Namespace of our prompt ids: uuid5(NAMESPACE, "videobot/<step>/<job id>[#attempt]").
NAMESPACE = uuid.UUID("6f1c8a52-3d0e-5b7a-9c41-2e8d7f0b6a13")
#: Ids tried per job and step: a finished (failed) prompt is never reused, the next id is.
MAX_ATTEMPTS = 4
#: Where our job id travels inside the prompt, for servers that ignore a client's prompt_id.
REF_KEY = "videobot_client_ref"
QUEUED_NOTE = "queued at ComfyUI"
#: Output lists in a history entry that hold files (SaveVideo/SaveImage: images; VHS: gifs).
_FILE_KEYS = ("videos", "video", "gifs", "images", "files")


class ComfyUIRemoteJob(RemoteJob):
    """A RemoteJob with the GPU time ComfyUI spent on the prompt, once it is known."""

    gpu_seconds: float | None = None


def prompt_ids(step: str, client_ref: str) -> list[str]:
    """Our prompt ids for one job's step, in the order they are used."""
    if not client_ref:
        return [str(uuid.uuid4())]  # no job id (ad-hoc call): nothing to find again later
    base = f"videobot/{step}/{client_ref}"
    return [str(uuid.uuid5(NAMESPACE, base if n == 0 else f"{base}#{n}")) for n in range(MAX_ATTEMPTS)]


class ComfyUIJobs:
    """The prompt life cycle both providers share: queue once, find, read status, fetch, cancel."""

    def __init__(
        self,
        client: ComfyUIClient,
        *,
        work_dir: Path,
        poll_seconds: float = 1.0,
        absence_grace: float = 15.0,
        history_scan: int = 256,
        policy: PollPolicy | None = None,
        name: str = "comfyui",
    ) -> None:
        self.client = client
        self.work_dir = work_dir
        self.poll_seconds = poll_seconds
        self.absence_grace = absence_grace
        self.history_scan = history_scan
        self.policy = policy or PollPolicy(backoff_base=0.2, backoff_max=5.0)
        self.name = name
        #: prompt id -> /view parameters of its output file, from the last history read.
        self._outputs: dict[str, dict[str, str]] = {}
        self._cancelled: set[str] = set()

    # --- create ----------------------------------------------------------------------------

    async def existing(self, ids: list[str]) -> tuple[str | None, ComfyUIRemoteJob | None]:
        """Before queuing: (the id to use, or None) and a prompt of ours the server already has.

        A queued, running or finished-well prompt under one of our ids is that job's own work:
        it is adopted instead of queuing the same thing twice. A failed or cancelled one is
        over, and the next id is used, so a history entry never answers for a new prompt."""
        snapshot = await self._read(self._queue)
        for prompt_id in ids:
            found = await self._read(lambda: self.lookup(prompt_id, snapshot))
            if found is None:
                return prompt_id, None
            if found.status not in (RemoteStatus.FAILED, RemoteStatus.CANCELLED):
                return None, found
        raise Unavailable(
            "ComfyUI already ran this job several times; start a new one.", provider=self.name,
            detail=f"all of {ids} are in ComfyUI's history",
        )  # fmt: skip

    async def queue_prompt(self, prompt_id: str, graph: dict[str, Any], *, client_ref: str, model: str) -> ComfyUIRemoteJob:
        """One POST /prompt. Refusals that queued nothing (connection refused, 429, 503) are tried
        again; an answer lost after sending is settled by looking the id up, never by re-sending."""
        self.client.listen()
        self.client.watch(prompt_id, ours=True)
        body = {
            "prompt": graph,
            "prompt_id": prompt_id,
            "client_id": self.client.client_id,
            "extra_data": {REF_KEY: client_ref} if client_ref else {},
        }
        sent_at = time.time()
        try:
            status, answer = await retrying(lambda: self._post_prompt(body), policy=self.policy, attempts=3, what="comfyui queue", provider=self.name)
        except _Ambiguous as exc:
            found = await self.settle([prompt_id], client_ref, sent_at)
            if found is None:
                raise Unavailable(
                    "ComfyUI did not accept the job; try again.", provider=self.name,
                    detail=f"POST /prompt {exc.detail}; {prompt_id} is in neither /queue nor /history",
                ) from None  # fmt: skip
            return found
        if status >= 400:
            raise _refusal(answer, graph, self.name, status)
        remote_id = str(answer.get("prompt_id") or prompt_id) if isinstance(answer, dict) else prompt_id
        if remote_id != prompt_id:
            # An older server makes its own ids; the job is still found again by REF_KEY.
            log.warning("ComfyUI at %s ignores a client's prompt_id (update it); using %s", self.client.base_url, remote_id)
            self.client.forget(prompt_id)
            self.client.watch(remote_id, ours=True)
        return ComfyUIRemoteJob(id=remote_id, status=RemoteStatus.QUEUED, model=model, note=QUEUED_NOTE, poll_after=self.poll_seconds)

    async def _post_prompt(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            status, answer = await self.client.request("POST", "/prompt", json_body=body)
        except TransientError as exc:
            if _never_sent(exc):
                raise  # nothing reached the server: safe to try again
            raise _Ambiguous(exc.detail or str(exc)) from exc
        if status in (429, 503):
            raise TransientError("ComfyUI is busy.", provider=self.name, detail=f"POST /prompt: {status}")
        if status >= 500:
            raise _Ambiguous(f"{status} {str(answer)[:300]}")
        return status, answer

    # --- find ------------------------------------------------------------------------------

    async def lookup(self, prompt_id: str, snapshot: QueueSnapshot | None = None) -> ComfyUIRemoteJob | None:
        """Where the server has this prompt: history (finished), queue (running/pending), or nowhere."""
        entry = await self.client.history(prompt_id)
        if entry is not None:
            return self.from_history(prompt_id, entry)
        snapshot = snapshot or await self._queue()
        if prompt_id in snapshot.running:
            return ComfyUIRemoteJob(id=prompt_id, status=RemoteStatus.IN_PROGRESS, poll_after=self.poll_seconds)
        position = snapshot.position(prompt_id)
        if position is not None:
            return self._queued(prompt_id, position)
        return None

    async def settle(self, ids: list[str], client_ref: str, sent_at: float | None) -> ComfyUIRemoteJob | None:
        """After a create whose answer was lost: the prompt it made, or None once a miss proves
        none was accepted (POST /prompt enqueues before it answers; we wait out requests that
        may still be in flight, then look by id and by the job id inside extra_data)."""
        found = await self._scan(ids, client_ref, sent_at)
        if found is not None:
            return found
        wait = (sent_at or 0.0) + self.absence_grace - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return await self._scan(ids, client_ref, sent_at, by_ref=True)

    async def _scan(self, ids: list[str], client_ref: str, sent_at: float | None, *, by_ref: bool = False) -> ComfyUIRemoteJob | None:
        snapshot = await self._read(self._queue)
        latest: ComfyUIRemoteJob | None = None
        for prompt_id in ids:
            found = await self._read(lambda: self.lookup(prompt_id, snapshot))
            if found is None:
                break
            latest = found
        if latest is None and by_ref and client_ref:
            latest = await self._find_by_ref(client_ref, snapshot)
        if latest is not None and latest.done and sent_at is not None:
            ended = self._ended_at(latest.id)
            if ended is not None and ended < sent_at - 5:
                return None  # an earlier attempt, finished before this create was sent
        return latest

    async def _find_by_ref(self, client_ref: str, snapshot: QueueSnapshot) -> ComfyUIRemoteJob | None:
        """For servers that ignore our prompt_id: our job id travels in extra_data."""
        for prompt_id, ref in snapshot.refs.items():
            if ref == client_ref:
                return await self._read(lambda: self.lookup(prompt_id, snapshot))
        recent = await self._read(lambda: self.client.read("GET", "/history", params={"max_items": str(self.history_scan)}))
        matches = [
            (prompt_id, entry) for prompt_id, entry in (recent or {}).items()
            if isinstance(entry, dict) and _entry_ref(entry) == client_ref
        ]  # fmt: skip
        if len(matches) > 1:
            raise Unavailable("More than one ComfyUI prompt carries this job.", provider=self.name,
                              detail=f"{[m[0] for m in matches]} for {client_ref}")  # fmt: skip
        return self.from_history(*matches[0]) if matches else None

    # --- status ----------------------------------------------------------------------------

    async def status(self, remote_id: str) -> ComfyUIRemoteJob:
        """One status read: the websocket's news when it is live and complete, else HTTP."""
        self.client.listen()
        state = self.client.states.get(remote_id)
        if state is None:
            # Adopted after a restart, or queued by another process: its progress goes to the
            # client id that queued it, so for this one HTTP is the only source.
            state = self.client.watch(remote_id)
        if state.ours and state.fresh and self.client.connected and state.phase == "running":
            return ComfyUIRemoteJob(id=remote_id, status=RemoteStatus.IN_PROGRESS, progress=min(state.progress, 99),
                                    poll_after=self.poll_seconds)  # fmt: skip
        found = await self.lookup(remote_id)
        if found is None:
            # Finished between the two reads? task_done writes history before leaving the queue.
            entry = await self.client.history(remote_id)
            if entry is not None:
                found = self.from_history(remote_id, entry)
        if found is None:
            if remote_id in self._cancelled:
                return ComfyUIRemoteJob(id=remote_id, status=RemoteStatus.CANCELLED)
            return ComfyUIRemoteJob(
                id=remote_id, status=RemoteStatus.FAILED, error_code="not_found",
                error_message="ComfyUI no longer has this job (the server restarted, or it was removed from the queue).",
            )  # fmt: skip
        if found.status is RemoteStatus.IN_PROGRESS:
            found.progress = min(state.progress, 99)
            if not state.terminal:
                # HTTP is current: from here the socket's news is complete again, if it is up
                # (news that came meanwhile, even a success, is newer than this and stays).
                state.phase, state.fresh = "running", self.client.connected
        return found

    def from_history(self, prompt_id: str, entry: dict[str, Any]) -> ComfyUIRemoteJob:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)]
        events = {name: data for name, data in messages}
        started = _timestamp(events.get("execution_start"))
        ended = next((_timestamp(events[k]) for k in ("execution_success", "execution_error", "execution_interrupted") if k in events), None)
        gpu = round((ended - started) / 1000, 3) if started is not None and ended is not None else None
        self._record(prompt_id, gpu_seconds=gpu, ended_at=ended / 1000 if ended is not None else None)
        common: dict[str, Any] = {"id": prompt_id, "gpu_seconds": gpu, "model": self._workflow_name(prompt_id)}
        if "execution_interrupted" in events:
            return ComfyUIRemoteJob(status=RemoteStatus.CANCELLED, **common)
        error = events.get("execution_error")
        if error is not None or status.get("status_str") == "error":
            error = error or {}
            where = f" at node {error['node_id']} ({error.get('node_type', '?')})" if error.get("node_id") else ""
            text = str(error.get("exception_message") or "the workflow stopped with an error").strip()
            return ComfyUIRemoteJob(
                status=RemoteStatus.FAILED, error_code=str(error.get("exception_type") or "execution_error"),
                error_message=f"ComfyUI failed{where}: {text}", **common,
            )  # fmt: skip
        files = _output_files(entry, self._output_node(prompt_id, entry))
        if not files:
            return ComfyUIRemoteJob(
                status=RemoteStatus.FAILED, error_code="no_output",
                error_message=f"The ComfyUI workflow finished without writing a file at its '{OUTPUT}' node.", **common,
            )  # fmt: skip
        self._outputs[prompt_id] = files
        return ComfyUIRemoteJob(status=RemoteStatus.COMPLETED, progress=100, **common)

    def _queued(self, prompt_id: str, position: int) -> ComfyUIRemoteJob:
        return ComfyUIRemoteJob(id=prompt_id, status=RemoteStatus.QUEUED, note=f"#{position} in the ComfyUI queue",
                                poll_after=self.poll_seconds)  # fmt: skip

    # --- output and cancel -----------------------------------------------------------------

    async def fetch(self, remote_id: str, dest: Path) -> None:
        files = self._outputs.get(remote_id)
        if files is None:
            found = await self.lookup(remote_id)
            files = self._outputs.get(remote_id)
            if found is None or files is None:
                raise ProviderError("ComfyUI has no finished output for this job.", provider=self.name, detail=remote_id)
        await self.client.download(files, dest)

    async def cancel(self, remote_id: str) -> None:
        """`POST /api/jobs/{id}/cancel` where the server has it; else take the prompt out of the
        queue and, only if it is the one running, interrupt it (naming it, for servers that check)."""
        self._cancelled.add(remote_id)
        status, body = await self.client.request("POST", f"/api/jobs/{remote_id}/cancel")
        if status < 300:
            return
        if status not in (404, 405, 501):
            raise TransientError("ComfyUI did not cancel the job.", provider=self.name, detail=f"cancel: {status} {str(body)[:200]}")
        await self.client.read("POST", "/queue", json_body={"delete": [remote_id]})
        if remote_id in (await self._queue()).running:
            await self.client.read("POST", "/interrupt", json_body={"prompt_id": remote_id})

    def forget(self, remote_id: str) -> None:
        self._outputs.pop(remote_id, None)
        self._cancelled.discard(remote_id)
        self.client.forget(remote_id)

    # --- sidecar: what we sent, and the GPU time it took --------------------------------------

    def _sidecar(self, prompt_id: str) -> Path:
        return self.work_dir / f"{prompt_id}.json"

    def _load(self, prompt_id: str) -> dict[str, Any]:
        path = self._sidecar(prompt_id)
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError):
            return {}

    def _record(self, prompt_id: str, **fields: Any) -> None:
        data = self._load(prompt_id)
        changed = {k: v for k, v in fields.items() if v is not None and data.get(k) != v}
        if not changed and data:
            return
        data.update(changed, prompt_id=prompt_id)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        temp = self._sidecar(prompt_id).with_suffix(".tmp")
        temp.write_text(json.dumps(data), encoding="utf-8")
        temp.replace(self._sidecar(prompt_id))

    def remember(self, prompt_id: str, *, client_ref: str, workflow: Workflow, seconds: int | None = None) -> None:
        self._record(prompt_id, client_ref=client_ref, workflow=workflow.name, output_node=workflow.output_node,
                     seconds=seconds, queued_at=time.time())  # fmt: skip

    def gpu_seconds(self, remote_id: str) -> float | None:
        value = self._load(remote_id).get("gpu_seconds")
        return float(value) if isinstance(value, (int, float)) else None

    def _ended_at(self, prompt_id: str) -> float | None:
        value = self._load(prompt_id).get("ended_at")
        return float(value) if isinstance(value, (int, float)) else None

    def _workflow_name(self, prompt_id: str) -> str | None:
        return self._load(prompt_id).get("workflow")

    def _output_node(self, prompt_id: str, entry: dict[str, Any]) -> str | None:
        prompt = entry.get("prompt")
        graph = prompt[2] if isinstance(prompt, list) and len(prompt) > 2 and isinstance(prompt[2], dict) else {}
        return find_titled(graph, OUTPUT) or self._load(prompt_id).get("output_node")

    async def _queue(self) -> QueueSnapshot:
        return await self.client.queue(REF_KEY)

    async def _read(self, call: Any) -> Any:
        return await retrying(call, policy=self.policy, attempts=4, what="comfyui read")


class ComfyUIVideoProvider(VideoProvider):
    name = "comfyui"
    default_seconds = 5
    default_size = "1280x704"
    #: POST /prompt enqueues before answering, and a prompt stays in /queue, then /history; after
    #: the grace for requests still in flight, a prompt found under neither our id nor our job id
    #: was not accepted (or the server restarted and lost it, which runs nothing twice either).
    proves_absence = True

    def __init__(
        self,
        jobs: ComfyUIJobs,
        *,
        text_workflow: Workflow | None,
        image_workflow: Workflow | None,
        usd_per_second: float = 0.0,
        negative_prompt: str = "",
        max_seconds: int = 10,
        max_image_bytes: int = 20_000_000,
    ) -> None:
        if text_workflow is None and image_workflow is None:
            raise ValueError("a ComfyUI video provider needs a text-to-video or an image-to-video workflow")
        self.jobs = jobs
        self.text_workflow = text_workflow
        self.image_workflow = image_workflow
        caps = set()
        if text_workflow is not None:
            caps.add(Capability.TEXT_TO_VIDEO)
        if image_workflow is not None:
            caps.add(Capability.IMAGE_TO_VIDEO)
        self.capabilities = frozenset(caps)
        self.default_model = (text_workflow or image_workflow).name  # type: ignore[union-attr]
        self.usd_per_second = usd_per_second
        self.negative_prompt = negative_prompt
        self.max_seconds = max_seconds
        self.max_image_bytes = max_image_bytes

    @property
    def client(self) -> ComfyUIClient:
        return self.jobs.client

    def workflow_for(self, request: VideoRequest) -> Workflow | None:
        return self.image_workflow if request.input_image is not None else self.text_workflow

    def validate(self, request: VideoRequest) -> None:
        if request.operation is not Operation.GENERATE:
            raise InvalidRequest(f"ComfyUI workflows here cannot {request.operation.value}; re-roll or start a new video.")
        workflow = self.workflow_for(request)
        if workflow is None:
            what = "animate an image" if request.input_image is not None else "make a video from text alone"
            raise InvalidRequest(f"This ComfyUI set-up has no workflow to {what}.")
        if request.model and request.model not in {w.name for w in (self.text_workflow, self.image_workflow) if w}:
            raise InvalidRequest(f"ComfyUI runs its configured workflows; '{request.model}' is not one of them.")
        if not 1 <= request.seconds <= self.max_seconds:
            raise InvalidRequest(f"ComfyUI videos here last 1 to {self.max_seconds} seconds.")
        _check_size(request.size)

    def estimate_cost(self, request: VideoRequest) -> float | None:
        return round(self.usd_per_second * request.seconds, 4)

    async def submit(self, request: VideoRequest) -> RemoteJob:
        workflow = self.workflow_for(request)
        assert workflow is not None, "validate() first"
        prompt_id, found = await self.jobs.existing(prompt_ids("video", request.client_ref))
        if found is not None:
            log.info("comfyui: %s for %s is already on the server; adopted, not queued again", found.id, request.client_ref)
            return found
        assert prompt_id is not None
        width, height = request.dimensions
        values: dict[str, Any] = {
            PROMPT: request.prompt,
            WIDTH: width,
            HEIGHT: height,
            FRAMES: max(1, round(request.seconds * workflow.fps)),
            SEED: _seed(request.seed, prompt_id),
        }
        if self.negative_prompt:
            values[NEGATIVE] = self.negative_prompt
        if request.input_image is not None:
            values[IMAGE] = await self._upload(request.input_image, prompt_id, width, height)
        self.jobs.remember(prompt_id, client_ref=request.client_ref, workflow=workflow, seconds=request.seconds)
        return await self.jobs.queue_prompt(prompt_id, workflow.fill(values), client_ref=request.client_ref, model=workflow.name)

    async def _upload(self, image_path: Path, prompt_id: str, width: int, height: int) -> str:
        """The input image, cropped to the video's shape (the latent node would stretch it), as PNG."""
        if not image_path.exists():
            raise InvalidRequest(f"The input image '{image_path.name}' is missing.")
        image = await asyncio.to_thread(load_image, image_path, max_bytes=self.max_image_bytes)
        data = await asyncio.to_thread(_png, crop_to_size(image, width, height))
        stored = await retrying(
            lambda: self.client.upload_image(data, f"videobot-{prompt_id}.png"), policy=self.jobs.policy, attempts=3,
            what="comfyui upload",
        )  # fmt: skip
        subfolder = str(stored.get("subfolder") or "")
        return f"{subfolder}/{stored['name']}" if subfolder else str(stored["name"])

    async def poll(self, remote_id: str) -> RemoteJob:
        return await self.jobs.status(remote_id)

    async def download(self, remote_id: str, dest: Path) -> None:
        await self.jobs.fetch(remote_id, dest)

    async def cancel(self, remote_id: str) -> None:
        await self.jobs.cancel(remote_id)

    def forget(self, remote_id: str) -> None:
        self.jobs.forget(remote_id)

    def gpu_seconds(self, remote_id: str) -> float | None:
        return self.jobs.gpu_seconds(remote_id)

    async def find_remote(
        self,
        client_ref: str,
        *,
        request: VideoRequest | None = None,
        sent_at: float | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RemoteJob | None:
        found = await self.jobs.settle(prompt_ids("video", client_ref), client_ref, sent_at)
        if found is not None and found.id in exclude:
            raise Unavailable("The ComfyUI prompt for this job belongs to another job.", provider=self.name,
                              detail=f"{found.id} for {client_ref}")  # fmt: skip
        return found

    def error_for(self, job: RemoteJob) -> Exception:
        code = job.error_code or ""
        message = job.error_message or "ComfyUI could not make this video."
        if "OutOfMemory" in code or "out of memory" in message.lower():
            message = "ComfyUI ran out of GPU memory; try fewer seconds or a smaller size."
        return GenerationFailed(message, remote_code=code or None, provider=self.name)

    async def aclose(self) -> None:
        await self.client.aclose()


class ComfyUIImageProvider(ImageProvider):
    """Text to image with a ComfyUI workflow: the image step of a chain, or image jobs."""

    name = "comfyui-image"

    def __init__(
        self,
        jobs: ComfyUIJobs,
        *,
        workflow: Workflow,
        usd_per_image: float = 0.0,
        negative_prompt: str = "",
        timeout: float = 600.0,
    ) -> None:
        self.jobs = jobs
        self.workflow = workflow
        self.default_model = workflow.name
        self.usd_per_image = usd_per_image
        self.negative_prompt = negative_prompt
        self.timeout = timeout

    def validate(self, request: ImageRequest) -> None:
        if request.model and request.model != self.workflow.name:
            raise InvalidRequest(f"ComfyUI runs its configured workflow; '{request.model}' is not it.")
        _check_size(request.size)

    def estimate_cost(self, request: ImageRequest) -> float | None:
        return self.usd_per_image

    async def generate(self, request: ImageRequest, dest: Path) -> ImageResult:
        # After a crash the same job finds its prompt again (queued, running or done) and waits
        # for it instead of queuing a second one. A cancelled task leaves the prompt running: a
        # restart would adopt it, and the core cannot tell a restart from a cancel here.
        prompt_id, found = await self.jobs.existing(prompt_ids("image", request.client_ref))
        if found is None:
            assert prompt_id is not None
            width, height = parse_size(request.size)
            values: dict[str, Any] = {PROMPT: request.prompt, WIDTH: width, HEIGHT: height, SEED: _seed(request.seed, prompt_id)}
            if self.negative_prompt:
                values[NEGATIVE] = self.negative_prompt
            self.jobs.remember(prompt_id, client_ref=request.client_ref, workflow=self.workflow)
            found = await self.jobs.queue_prompt(prompt_id, self.workflow.fill(values), client_ref=request.client_ref,
                                                 model=self.workflow.name)  # fmt: skip
        remote_id = found.id
        deadline = time.monotonic() + self.timeout
        while not found.done:
            if time.monotonic() > deadline:
                await self.jobs.cancel(remote_id)
                raise ProviderTimeout(f"ComfyUI did not make the image within {self.timeout:g} seconds.", provider=self.name)
            await asyncio.sleep(self.jobs.poll_seconds)
            found = await retrying(lambda: self.jobs.status(remote_id), policy=self.jobs.policy, what="comfyui image status")
        if found.status is not RemoteStatus.COMPLETED:
            raise GenerationFailed(found.error_message or "ComfyUI did not make the image.", remote_code=found.error_code,
                                   provider=self.name)  # fmt: skip
        raw = dest.with_name(dest.name + ".download")
        try:
            await retrying(lambda: self.jobs.fetch(remote_id, raw), policy=self.jobs.policy, what="comfyui image download")
            width, height = await asyncio.to_thread(_to_png, raw, dest)
        finally:
            raw.unlink(missing_ok=True)
        self.jobs.forget(remote_id)
        return ImageResult(path=dest, width=width, height=height, model=self.workflow.name, cost=self.usd_per_image,
                           remote_id=remote_id)  # fmt: skip

    async def aclose(self) -> None:
        await self.jobs.client.aclose()


# --- helpers ------------------------------------------------------------------------------


class _Ambiguous(Exception):
    """POST /prompt may have reached the server, and we do not know what it did."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _never_sent(exc: TransientError) -> bool:
    import aiohttp

    return isinstance(exc.__cause__, aiohttp.ClientConnectorError)


def _refusal(answer: Any, graph: dict[str, Any], provider: str, status: int) -> Exception:
    """A 400 from POST /prompt: the workflow's own error, naming the node when ComfyUI does."""
    answer = answer if isinstance(answer, dict) else {"error": answer}
    detail = json.dumps(answer)[:2000]
    node_errors = answer.get("node_errors") if isinstance(answer.get("node_errors"), dict) else {}
    for node_id, info in node_errors.items():
        errors = info.get("errors") if isinstance(info, dict) else None
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        node = graph.get(str(node_id)) or {}
        title = str((node.get("_meta") or {}).get("title") or "")
        kind = info.get("class_type") or node.get("class_type") or "?"
        label = f"node {node_id} ({kind}{', ' + repr(title) if title and title != kind else ''})"
        text = first.get("message") or "invalid"
        if first.get("details"):
            text = f"{text}: {first['details']}"
        return ProviderInvalidRequest(f"ComfyUI refused the workflow at {label}: {text}.", provider=provider, detail=detail)
    error = answer.get("error")
    if isinstance(error, dict):
        text = error.get("message") or error.get("type") or "invalid workflow"
        if error.get("details"):
            text = f"{text}: {error['details']}"
    else:
        text = str(error or f"HTTP {status}")
    return ProviderInvalidRequest(f"ComfyUI refused the workflow: {text}.", provider=provider, detail=detail)


def _output_files(entry: dict[str, Any], node_id: str | None) -> dict[str, str] | None:
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    candidates = [outputs[node_id]] if node_id and node_id in outputs else list(outputs.values())
    for output in candidates:
        if not isinstance(output, dict):
            continue
        for key in _FILE_KEYS:
            for item in output.get(key) or []:
                if isinstance(item, dict) and item.get("filename"):
                    return {"filename": str(item["filename"]), "subfolder": str(item.get("subfolder") or ""),
                            "type": str(item.get("type") or "output")}  # fmt: skip
    return None


def _entry_ref(entry: dict[str, Any]) -> str | None:
    prompt = entry.get("prompt")
    extra = prompt[3] if isinstance(prompt, list) and len(prompt) > 3 and isinstance(prompt[3], dict) else {}
    return extra.get(REF_KEY)


def _timestamp(data: dict[str, Any] | None) -> int | None:
    value = (data or {}).get("timestamp")
    return int(value) if isinstance(value, (int, float)) else None


def _seed(seed: int | None, prompt_id: str) -> int:
    """The user's seed, or one derived from the prompt id: the same job sends the same graph."""
    if seed is not None:
        return seed % (MAX_SEED + 1)
    return uuid.UUID(prompt_id).int % (MAX_SEED + 1)


def _check_size(size: str) -> None:
    width, height = parse_size(size)
    if not (64 <= width <= 4096 and 64 <= height <= 4096) or width % 8 or height % 8:
        raise InvalidRequest("ComfyUI sizes are 64 to 4096 pixels a side, in steps of 8, for example 1280x704.")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _to_png(src: Path, dest: Path) -> tuple[int, int]:
    from providers.errors import OutputInvalid

    try:
        with Image.open(src) as image:
            image.load()
            rgb = image.convert("RGB")
    except Exception as exc:
        raise OutputInvalid("ComfyUI's image could not be read.", provider="comfyui-image", detail=repr(exc)) from exc
    rgb.save(dest, "PNG")
    return rgb.size
