"""Which pipelines this bot offers, built from the settings.

Each integration adds its names here; a pipeline whose keys are missing is still
listed (so users learn it exists) but refuses jobs with "not configured".
"""
from __future__ import annotations

from bot.config import Settings
from providers.registry import PipelineRegistry, local_image_pipeline, local_pipeline


def build_registry(settings: Settings) -> PipelineRegistry:
    core, local = settings.core, settings.local
    registry = PipelineRegistry()
    registry.register(
        "local",
        lambda: local_pipeline(
            core.data_dir / "local-provider",
            fps=local.fps,
            max_seconds=local.max_seconds,
            concurrency=local.concurrency,
            max_image_bytes=int(core.max_image_mb * 1_000_000),
        ),
    )
    registry.register("local-image", local_image_pipeline)
    _register_openai(registry, settings)
    return registry


def _register_openai(registry: PipelineRegistry, settings: Settings) -> None:
    """`sora`, `gpt-image+sora` and `gpt-image`: listed even without keys, refusing jobs until set."""
    from providers.openai_images import OpenAIImageProvider
    from providers.openai_videos import OpenAIVideoProvider
    from providers.pipeline import Pipeline

    oa, core = settings.openai, settings.core
    # An empty line in .env (OPENAI_API_KEY=) means unset.
    key = (oa.api_key.get_secret_value() if oa.api_key else "") or None
    video_key = (oa.video_api_key.get_secret_value() if oa.video_api_key else "") or key
    base_url = oa.base_url or None
    video_base_url = oa.video_base_url or base_url
    retired = frozenset(m.strip() for m in oa.image_retired_models.split(",") if m.strip())

    def videos() -> OpenAIVideoProvider:
        return OpenAIVideoProvider(
            api_key=video_key, base_url=video_base_url, model=oa.video_model,
            timeout=oa.request_timeout_seconds, prices=oa.video_prices, max_image_bytes=int(core.max_image_mb * 1_000_000),
        )  # fmt: skip

    def images(*, snap_size: bool) -> OpenAIImageProvider:
        return OpenAIImageProvider(
            api_key=key, base_url=base_url, model=oa.image_model, quality=oa.image_quality,
            timeout=max(oa.request_timeout_seconds, 120), token_prices=oa.image_token_prices,
            retired_models=retired, snap_size=snap_size,
        )  # fmt: skip

    no_video = "" if video_key else "OPENAI_API_KEY (or OPENAI_VIDEO_API_KEY) is not set"
    no_image = "" if key else "OPENAI_API_KEY is not set"
    registry.register("sora", lambda: Pipeline(
        name="sora", video=videos(), configured=not no_video, not_configured_reason=no_video,
        description=f"OpenAI Videos protocol ({oa.video_model}): text or image to video, remix, extend.",
    ))  # fmt: skip
    registry.register("gpt-image+sora", lambda: Pipeline(
        name="gpt-image+sora", video=videos(), image=images(snap_size=True),
        configured=not (no_video or no_image), not_configured_reason=no_video or no_image,
        description=f"A {oa.image_model} still as the first frame of a {oa.video_model} video.",
    ))  # fmt: skip
    registry.register("gpt-image", lambda: Pipeline(
        name="gpt-image", video=None, image=images(snap_size=False), configured=not no_image,
        not_configured_reason=no_image, description=f"OpenAI {oa.image_model} stills.",
    ))  # fmt: skip
