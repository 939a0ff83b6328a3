"""The pipelines a deployment offers, as adapters may show them (autocomplete, help): names,
descriptions and defaults read from the registry, so no adapter touches a provider object."""
from __future__ import annotations

from pydantic import BaseModel

from providers.base import Capability
from providers.registry import PipelineRegistry


class PipelineInfo(BaseModel):
    name: str
    description: str = ""
    default_size: str
    default_seconds: int = 0
    #: Makes images (an image pipeline), else videos.
    image: bool = False


def pipeline_info(registry: PipelineRegistry, name: str) -> PipelineInfo | None:
    """What one pipeline offers; None when unknown or it cannot be built."""
    if name not in registry:
        return None
    try:
        p = registry.get(name)
    except Exception:  # a pipeline that cannot even be built is not offered
        return None
    image = p.video is None
    return PipelineInfo(
        name=p.name, description=p.description, default_size=p.default_size,
        default_seconds=0 if image else p.default_seconds, image=image,
    )  # fmt: skip


def offered(registry: PipelineRegistry, *, image: bool) -> list[PipelineInfo]:
    """The configured pipelines that make images (or, with image=False, videos from text)."""
    found = []
    for name in registry.names():
        try:
            p = registry.get(name)
        except Exception:
            continue
        if not p.configured:
            continue
        wanted = Capability.TEXT_TO_IMAGE if image else Capability.TEXT_TO_VIDEO
        if (p.video is None) == image and wanted in p.capabilities:
            info = pipeline_info(registry, name)
            if info is not None:
                found.append(info)
    return found
