"""What the two Google video providers (Gemini Omni, `providers.google_omni`; Veo,
`providers.google_veo`) do alike, written once.

Each subclass translates its own API: the Interactions API's interactions, Vertex's long-running
operations. The rest is the same for both and lives here: one google-genai client, closed once;
prices by the most specific key; one create, never repeated once it may have made a video; a
failed read (Google's 404 ends the job, anything else is mapped as for every Google call); the
finished output kept from the last poll, or read again after a restart; and a file beside each
remote job (`work_dir/ID.json`) that marks it as ours and says what an extension is joined to.
Waiting and retrying are the shared polling engine's (`providers.polling`).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

from providers.base import Operation, RemoteStatus, VideoProvider, VideoRequest
from providers.errors import ContentExpired, GenerationFailed, InvalidRequest
from providers.google_common import close_client, finish_extend, map_error, price_per_second, shape_for
from providers.polling import PollPolicy, retrying
from providers.sidecars import read_sidecar, write_sidecar


class GoogleVideoOptions(TypedDict, total=False):
    """The constructor options both providers take, with the same defaults (GoogleVideoProvider's)."""

    base_url: str | None
    seconds: tuple[int, ...]
    sizes: tuple[str, ...]
    prices: dict[str, float] | None
    max_inline_video_bytes: int
    timeout: float
    policy: PollPolicy | None


class GoogleVideoProvider(VideoProvider):
    #: Who answers, in messages and logs ("Gemini", "Veo").
    label: str = "Google"
    #: The variable that picks the model, named when Google does not know the model.
    model_setting: str = ""
    #: An extension is always saved as the whole clip: Google's own (source and new seconds in
    #: one file), else the new part joined to the source (`_save`), so a story's scenes can be
    #: extensions of each other.
    continues_source = True

    def __init__(
        self,
        *,
        work_dir: Path,
        model: str,
        poll_seconds: float,
        base_url: str | None = None,
        seconds: tuple[int, ...] = (4, 6, 8),
        sizes: tuple[str, ...] = ("1280x720", "720x1280", "1920x1080", "1080x1920"),
        prices: dict[str, float] | None = None,
        max_inline_video_bytes: int = 15_000_000,
        timeout: float = 120.0,
        policy: PollPolicy | None = None,
    ) -> None:
        self.base_url = base_url or None
        self.default_model = model
        self.seconds = seconds
        self.sizes = sizes
        self.default_seconds = 8 if 8 in seconds else seconds[-1]
        self.default_size = sizes[0]
        self.prices = dict(prices or {})
        self._max_inline_video = max_inline_video_bytes
        self._poll_seconds = poll_seconds
        self._timeout = timeout
        self.policy = policy or PollPolicy()
        self.work_dir = work_dir
        #: The google-genai client, made on first use (a missing key or project says so then).
        self._client: Any = None
        #: Finished outputs by remote id, from the last poll (what each API returns for a video).
        self._outputs: dict[str, Any] = {}

    async def aclose(self) -> None:
        if self._client is not None:
            await close_client(self._client)
            self._client = None

    # --- prices ----------------------------------------------------------------------------

    def model_for(self, request: VideoRequest) -> str:
        return request.model or self.default_model

    def billed_seconds(self, request: VideoRequest) -> int:
        """The seconds Google makes (and bills) for a request."""
        return request.seconds

    def estimate_cost(self, request: VideoRequest) -> float | None:
        model = self.model_for(request)
        try:
            resolution = shape_for(request.size, self.sizes, self.label).resolution
        except InvalidRequest:
            resolution = None
        rate = price_per_second(self.prices, model, audio=request.audio, resolution=resolution)
        return None if rate is None else round(rate * self.billed_seconds(request), 4)

    # --- create and reads ------------------------------------------------------------------

    async def _create(self, send: Callable[[], Awaitable[Any]], model: str) -> Any:
        """One create. A 429 or 503 refused it (nothing was made) and may be repeated; anything
        that may have made a job is never repeated (map_error says which is which)."""

        async def create_once() -> Any:
            try:
                return await send()
            except Exception as exc:
                raise map_error(exc, provider=self.name, label=self.label, create=True,
                                model_setting=self.model_setting, model=model) from exc  # fmt: skip

        return await retrying(create_once, policy=self.policy, attempts=3, what=f"{self.label.lower()} create")

    def _read_failed(self, exc: Exception, *, status: object, gone: str) -> Exception:
        """The error for a failed status read. A 404 means Google dropped the job: it fails for
        good rather than being read again until the job's deadline."""
        if status == 404:
            return GenerationFailed(gone, remote_code="not_found", provider=self.name)
        return map_error(exc, provider=self.name, label=self.label, create=False)

    async def _output(self, remote_id: str, *, take: bool, gone: str) -> Any:
        """The finished output the last poll kept (`take`: and forget it). After a restart there
        is none: the remote job still holds it, so it is read once more."""
        read = self._outputs.pop if take else self._outputs.get
        output = read(remote_id, None)
        if output is None:
            job = await retrying(lambda: self.poll(remote_id), policy=self.policy, what=f"{self.label.lower()} get")
            output = read(remote_id, None)
            if job.status is not RemoteStatus.COMPLETED or output is None:
                raise ContentExpired(gone, provider=self.name)
        return output

    async def _save(self, remote_id: str, dest: Path, write: Callable[[Path], Awaitable[None]]) -> None:
        """`write` the video to `dest`; an extension's new part is joined to its source first
        when Google returned only the new seconds (see finish_extend)."""
        sidecar = self._read_sidecar(remote_id)
        extend_source = sidecar.get("extend_source")
        target = dest.with_name(dest.name + ".part.mp4") if extend_source else dest
        await write(target)
        if extend_source:
            try:
                await asyncio.to_thread(finish_extend, Path(extend_source), target, dest, int(sidecar.get("seconds", 0)))
            finally:
                target.unlink(missing_ok=True)

    # --- which remote jobs are ours ------------------------------------------------------------

    def _remember(self, remote_id: str, request: VideoRequest, model: str) -> None:
        """The sidecar of a job just created: ours from now on, and an extension's source."""
        sidecar: dict[str, Any] = {"model": model, "operation": request.operation.value, "seconds": request.seconds}
        if request.operation is Operation.EXTEND and request.source_video is not None:
            sidecar["extend_source"] = str(request.source_video)
        self._write_sidecar(remote_id, sidecar)

    def _ours(self, remote_id: str | None) -> bool:
        return bool(remote_id) and self._sidecar(remote_id).exists()  # type: ignore[arg-type]

    def _sidecar_name(self, remote_id: str) -> str:
        """The part of a remote id that names its sidecar file."""
        return remote_id

    def _sidecar(self, remote_id: str) -> Path:
        return self.work_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self._sidecar_name(remote_id))}.json"

    def _write_sidecar(self, remote_id: str, data: dict[str, Any]) -> None:
        write_sidecar(self._sidecar(remote_id), data)

    def _read_sidecar(self, remote_id: str) -> dict[str, Any]:
        return read_sidecar(self._sidecar(remote_id))


__all__ = ["GoogleVideoOptions", "GoogleVideoProvider"]
