"""Pipelines in general: any image source chains into any image-to-video target by name
(`IMAGE+VIDEO`), the registry says which combinations are configured, and a provider added
this way needs no pipeline code of its own."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import open_app
from bot.config import Settings, load_settings
from bot.core.models import GenerateRequest, Job, JobStatus, Origin
from bot.pipelines import build_registry
from providers.local import LocalImageProvider, LocalVideoProvider
from providers.openai_images import OpenAIImageProvider
from providers.prompting import FirstFrameImages
from providers.registry import ImageSource, PipelineRegistry, VideoTarget
from tests.helpers import assert_video

ORIGIN = Origin(platform="cli", user_id="tester")


def _never() -> LocalVideoProvider:
    raise AssertionError("a provider was built just to list the combinations")


def test_every_source_meets_every_target_in_any_order() -> None:
    registry = PipelineRegistry()
    registry.add_video_target(VideoTarget(name="vid-a", provider=_never, not_configured="VID_A_KEY is not set"))
    registry.add_image_source(ImageSource(name="img-x", provider=_never))  # type: ignore[arg-type]
    registry.add_image_source(ImageSource(name="img-y", provider=_never, not_configured="IMG_Y_KEY is not set"))  # type: ignore[arg-type]
    registry.add_video_target(VideoTarget(name="vid-b", provider=_never))
    assert registry.chains() == {
        "img-x+vid-a": "VID_A_KEY is not set", "img-y+vid-a": "VID_A_KEY is not set",
        "img-x+vid-b": "", "img-y+vid-b": "IMG_Y_KEY is not set",
    }  # fmt: skip
    assert {"img-x+vid-a", "img-y+vid-b"} <= set(registry.names()) and "img-x+vid-b" in registry


def test_a_pipeline_registered_by_hand_wins_over_a_chain_of_the_same_name(tmp_path: Path) -> None:
    from providers.pipeline import Pipeline

    registry = PipelineRegistry()
    registry.register("still+clip", lambda: Pipeline(name="still+clip", video=None, description="by hand"))
    registry.add_image_source(ImageSource(name="still", provider=LocalImageProvider))
    registry.add_video_target(VideoTarget(name="clip", provider=lambda: LocalVideoProvider(tmp_path)))
    assert registry.get("still+clip").description == "by hand" and "still+clip" not in registry.chains()


def test_the_existing_chains_keep_their_names_and_shape(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("RUNWAYML_API_SECRET", "key_test")
    registry = build_registry(load_settings())
    chains = registry.chains()  # type: ignore[attr-defined]
    assert {n: chains[n] for n in ("gpt-image+sora", "gpt-image+runway", "flux+runway", "gpt-image+fal", "flux+fal")} == {
        "gpt-image+sora": "", "gpt-image+runway": "", "flux+runway": "BFL_API_KEY is not set",
        "gpt-image+fal": "FAL_KEY is not set", "flux+fal": "FAL_KEY is not set",
    }  # fmt: skip
    sora = registry.get("gpt-image+sora")
    assert isinstance(sora.image, OpenAIImageProvider) and sora.image.snap_size  # the Videos API fits the still itself
    assert sora.description == "A gpt-image-2 still as the first frame of a sora-2 video."
    runway = registry.get("gpt-image+runway")
    assert isinstance(runway.image, FirstFrameImages) and runway.configured
    assert runway.description == (
        "A gpt-image-2 still, written for video and cropped to the ratio, animated by Runway gen4_turbo."
    )
    assert registry.get("flux+runway").video is runway.video  # one Runway client for every Runway pipeline
    assert not registry.get("flux+runway").configured


async def test_a_new_pair_of_providers_runs_end_to_end_without_pipeline_code(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared as a source and a target, the offline providers make `local-image+local` a
    pipeline the core runs: the still is made, cropped, and animated."""
    monkeypatch.setenv("VIDEOBOT_FALLBACKS", "local-image+local:local")
    settings = load_settings()
    registry = build_registry(settings)
    registry.add_image_source(ImageSource(name="local-image", provider=LocalImageProvider, still="An offline still"))
    registry.add_video_target(VideoTarget(
        name="local", provider=lambda: LocalVideoProvider(settings.core.data_dir / "local-provider", fps=12),
    ))  # fmt: skip
    app = await open_app(settings, registry=registry)

    async def deliver(job: Job) -> None:
        return None

    app.runner.deliverers["cli"] = deliver
    await app.runner.start()
    try:
        pipeline = registry.get("local-image+local")
        assert pipeline.description == "An offline still, animated by local." and pipeline.fallbacks == ("local",)
        job = await app.service.submit(GenerateRequest(prompt="a kite", pipeline="local-image+local", seconds=2, size="320x180"), ORIGIN)
        done = await asyncio.wait_for(app.runner.wait(job.id), 20)
    finally:
        await app.close()
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert Path(done.state["image_step_path"]).exists() and done.provider == "local"
    assert_video(done.output_path, width=320, height=180, seconds=2)  # type: ignore[arg-type]
