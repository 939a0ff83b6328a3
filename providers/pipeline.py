"""A pipeline: an optional text-to-image step, then a video provider, with named fallbacks.

The runner drives the steps and checkpoints between them; the pipeline says what
it can do and checks a request against it before anything is persisted or billed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from providers.base import Capability, ImageProvider, ImageRequest, Operation, VideoProvider, VideoRequest
from providers.errors import InvalidRequest, NotConfigured


@dataclass
class Pipeline:
    name: str
    #: None for an image-only pipeline (used by image jobs).
    video: VideoProvider | None
    #: Makes the first frame from the prompt (the seeds' text → image → video),
    #: or, in an image-only pipeline, the result of an image job.
    image: ImageProvider | None = None
    #: Pipeline names tried in order when this one is unavailable.
    fallbacks: tuple[str, ...] = ()
    description: str = ""
    #: False when credentials are missing; the pipeline is listed but refuses jobs.
    configured: bool = True
    not_configured_reason: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = set(self.video.capabilities) if self.video is not None else set()
        if self.image is not None:
            caps.add(Capability.TEXT_TO_IMAGE)
            if Capability.IMAGE_TO_VIDEO in caps:
                caps.add(Capability.TEXT_TO_VIDEO)
        return frozenset(caps)

    @property
    def default_seconds(self) -> int:
        return self.video.default_seconds if self.video is not None else 0

    @property
    def default_size(self) -> str:
        if self.video is not None:
            return self.video.default_size
        return self.image.default_size if self.image is not None else "1024x1024"

    def _check_configured(self) -> None:
        if not self.configured:
            raise NotConfigured(
                f"The '{self.name}' pipeline is not configured.", provider=self.name, detail=self.not_configured_reason
            )

    def validate_image(self, request: ImageRequest) -> None:
        self._check_configured()
        if self.image is None or self.video is not None:
            raise InvalidRequest(f"'{self.name}' is not an image pipeline. Try --pipeline local-image.")
        self.image.validate(request)

    def uses_image_step(self, request: VideoRequest) -> bool:
        return self.image is not None and request.operation is Operation.GENERATE and request.input_image is None

    def validate(self, request: VideoRequest) -> None:
        self._check_configured()
        needed = request.capability
        if self.video is None or needed not in self.capabilities:
            raise InvalidRequest(f"The '{self.name}' pipeline cannot {_verb(needed)}. Try another with --pipeline.")
        if self.uses_image_step(request):
            # The video step will get an image; check the request as it will be sent.
            self.video.validate(request.model_copy(update={"input_image": Path("pending-image.png")}))
        else:
            self.video.validate(request)


def _verb(capability: Capability) -> str:
    return {
        Capability.TEXT_TO_VIDEO: "make a video from text alone",
        Capability.IMAGE_TO_VIDEO: "animate an image",
        Capability.REMIX: "remix",
        Capability.EXTEND: "extend a video",
        Capability.TEXT_TO_IMAGE: "make images",
    }[capability]
