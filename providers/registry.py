"""Pipeline names → pipelines. Providers are built lazily, on first use of a pipeline.

Integrations register their own names (`sora`, `runway`, `fal`...) with `register`; the
local pipeline is always there and needs no key. Chains are not registered one by one:
an integration declares an image source (`gpt-image`, `flux`) or an image-to-video target
(`sora`, `runway`, `fal`), and every `IMAGE+VIDEO` combination becomes a pipeline, so a
new provider needs no new pipeline code.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from providers.base import ImageProvider, VideoProvider
from providers.errors import InvalidRequest
from providers.local import LocalImageProvider, LocalVideoProvider
from providers.pipeline import Pipeline
from providers.prompting import FirstFrameImages

PipelineFactory = Callable[[], Pipeline]


@dataclass(frozen=True)
class ImageSource:
    """A text-to-image provider that can make the first frame of any image-to-video target."""

    name: str
    #: A new provider for one chain (set up for first frames, e.g. sizes snapped to what it makes).
    provider: Callable[[], ImageProvider]
    #: Why it cannot run, e.g. "BFL_API_KEY is not set"; empty when it can.
    not_configured: str = ""
    #: How a chain's description names the still, e.g. "A Flux (flux-2-pro) still".
    still: str = "A still"


@dataclass(frozen=True)
class VideoTarget:
    """An image-to-video provider any image source can chain into."""

    name: str
    provider: Callable[[], VideoProvider]
    not_configured: str = ""
    #: The chain's description; `{still}` is the source's phrase.
    describe: str = "{still}, animated by {name}."
    #: How the still is prepared for this target: by default the prompt is written for video and
    #: the image cropped to the exact size (a provider that fits images itself can take it as is).
    first_frame: Callable[[ImageProvider], ImageProvider] = field(default=FirstFrameImages)


def chain_name(source: str, target: str) -> str:
    return f"{source}+{target}"


class PipelineRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, PipelineFactory] = {}
        self._built: dict[str, Pipeline] = {}
        #: Best first: the default is the first of these that is configured.
        self.video_preference: list[str] = ["local"]
        self.image_preference: list[str] = ["local-image"]
        self._sources: dict[str, ImageSource] = {}
        self._targets: dict[str, VideoTarget] = {}
        #: Names registered as IMAGE+VIDEO chains (an explicit `register` of the same name wins).
        self._chains: set[str] = set()

    def best(self, *, image: bool) -> str:
        """The pipeline a command that names none should use: the best one that is configured."""
        names = self.image_preference if image else self.video_preference
        for name in names:
            if name in self._factories and self.get(name).configured:
                return name
        return names[-1]

    def register(self, name: str, factory: PipelineFactory) -> None:
        self._factories[name] = factory
        self._built.pop(name, None)
        self._chains.discard(name)

    # --- IMAGE+VIDEO chains -----------------------------------------------------------------

    def add_image_source(self, source: ImageSource) -> None:
        self._sources[source.name] = source
        for target in self._targets.values():
            self._register_chain(source, target)

    def add_video_target(self, target: VideoTarget) -> None:
        self._targets[target.name] = target
        for source in self._sources.values():
            self._register_chain(source, target)

    def chains(self) -> dict[str, str]:
        """Every IMAGE+VIDEO combination: name → why it is not configured ("" when it is).
        Answered from the declarations, without building any provider."""
        out: dict[str, str] = {}
        for source in self._sources.values():
            for target in self._targets.values():
                name = chain_name(source.name, target.name)
                if name in self._chains:
                    out[name] = target.not_configured or source.not_configured
        return out

    def _register_chain(self, source: ImageSource, target: VideoTarget) -> None:
        name = chain_name(source.name, target.name)
        if name in self._factories and name not in self._chains:
            return  # registered by hand: that one stands
        self.register(name, lambda: _chain_pipeline(name, source, target))
        self._chains.add(name)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str) -> Pipeline:
        if name not in self._factories:
            plain = [n for n in self.names() if n not in self._chains]
            chains = " Chains: IMAGE+VIDEO, e.g. gpt-image+runway." if self._chains else ""
            raise InvalidRequest(f"Unknown pipeline '{name}'. Available: {', '.join(plain)}.{chains} See `videobot pipelines`.")
        if name not in self._built:
            self._built[name] = self._factories[name]()
        return self._built[name]

    def built(self) -> list[Pipeline]:
        return list(self._built.values())

    async def aclose(self) -> None:
        seen: set[int] = set()
        for pipeline in self._built.values():
            for provider in (pipeline.video, pipeline.image):
                if provider is not None and id(provider) not in seen:
                    seen.add(id(provider))
                    await provider.aclose()
        self._built.clear()


def _chain_pipeline(name: str, source: ImageSource, target: VideoTarget) -> Pipeline:
    reason = target.not_configured or source.not_configured
    return Pipeline(
        name=name,
        video=target.provider(),
        image=target.first_frame(source.provider()),
        configured=not reason,
        not_configured_reason=reason,
        description=target.describe.format(still=source.still, name=target.name),
    )


def local_pipeline(work_dir: Path, *, fps: int = 24, max_seconds: int = 20, concurrency: int = 1, max_image_bytes: int = 20_000_000) -> Pipeline:
    provider = LocalVideoProvider(
        work_dir, fps=fps, max_seconds=max_seconds, concurrency=concurrency, max_image_bytes=max_image_bytes
    )
    return Pipeline(name="local", video=provider, description="Offline renderer on this machine (no key needed).")


def local_image_pipeline() -> Pipeline:
    return Pipeline(
        name="local-image", video=None, image=LocalImageProvider(), description="Offline stills on this machine."
    )
