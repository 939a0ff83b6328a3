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
    return registry
