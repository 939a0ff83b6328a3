"""The provider request a stored job stands for (the runner sends it; admission prices it)."""
from __future__ import annotations

from pathlib import Path

from bot.core.models import Job, JobKind
from providers.base import Operation, VideoRequest

_OPERATION = {
    JobKind.GENERATE: Operation.GENERATE,
    JobKind.VARIATION: Operation.GENERATE,
    JobKind.REMIX: Operation.REMIX,
    JobKind.EXTEND: Operation.EXTEND,
}


def video_request_for(job: Job) -> VideoRequest:
    """The provider request a stored job stands for."""
    params = job.params
    source = job.state.get("source_video")
    image = params.image_path
    if job.kind is JobKind.REMIX and not image:
        # The parent's own input image, for providers that remix by animating it again.
        image = job.state.get("source_image")
    return VideoRequest(
        operation=_OPERATION[job.kind],
        prompt=job.prompt,
        seconds=params.seconds,
        size=params.size,
        model=params.model,
        seed=params.seed,
        input_image=Path(image) if image else None,
        source_video=Path(source) if source else None,
        source_remote_id=job.state.get("source_remote_id"),
        client_ref=job.id,
        audio=bool(params.options.get("audio")),
    )
