"""Pipeline names → pipelines. Providers are built lazily, on first use of a pipeline.

Later integrations register their own names (`sora`, `runway`, `gpt-image+runway`...)
with `register`; the local pipeline is always there and needs no key.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from providers.errors import InvalidRequest
from providers.local import LocalImageProvider, LocalVideoProvider
from providers.pipeline import Pipeline

PipelineFactory = Callable[[], Pipeline]


class PipelineRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, PipelineFactory] = {}
        self._built: dict[str, Pipeline] = {}
        #: Best first: the default is the first of these that is configured.
        self.video_preference: list[str] = ["local"]
        self.image_preference: list[str] = ["local-image"]

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

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str) -> Pipeline:
        if name not in self._factories:
            raise InvalidRequest(f"Unknown pipeline '{name}'. Available: {', '.join(self.names())}.")
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


def local_pipeline(work_dir: Path, *, fps: int = 24, max_seconds: int = 20, concurrency: int = 1, max_image_bytes: int = 20_000_000) -> Pipeline:
    provider = LocalVideoProvider(
        work_dir, fps=fps, max_seconds=max_seconds, concurrency=concurrency, max_image_bytes=max_image_bytes
    )
    return Pipeline(name="local", video=provider, description="Offline renderer on this machine (no key needed).")


def local_image_pipeline() -> Pipeline:
    return Pipeline(
        name="local-image", video=None, image=LocalImageProvider(), description="Offline stills on this machine."
    )
