"""Which pipelines this bot offers, built from the settings.

Each integration adds its names here; a pipeline whose keys are missing is still
listed (so users learn it exists) but refuses jobs with "not configured".
"""
from __future__ import annotations

from bot.config import Settings
from providers.pipeline import Pipeline
from providers.registry import PipelineFactory, PipelineRegistry, local_image_pipeline, local_pipeline


class _ConfiguredRegistry(PipelineRegistry):
    """Gives every pipeline, whoever registers it, its fallbacks from VIDEOBOT_FALLBACKS."""

    def __init__(self, fallbacks: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self._fallbacks = fallbacks

    def register(self, name: str, factory: PipelineFactory) -> None:
        chain = self._fallbacks.get(name)
        if chain:
            inner = factory

            def factory() -> Pipeline:
                pipeline = inner()
                pipeline.fallbacks = chain
                return pipeline

        super().register(name, factory)


def build_registry(settings: Settings) -> PipelineRegistry:
    core, local = settings.core, settings.local
    registry = _ConfiguredRegistry(core.fallback_map)
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
    _register_runway(registry, settings)
    _register_comfyui(registry, settings)
    # A paid provider the operator configured beats the offline renderer; direct text-to-video
    # before chains (one paid step instead of two), local last as the always-there fallback.
    registry.video_preference = ["runway", "sora", "gpt-image+runway", "flux+runway", "gpt-image+sora", "local"]
    registry.image_preference = ["gpt-image", "local-image"]
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


def _register_runway(registry: PipelineRegistry, settings: Settings) -> None:
    """`runway`, `gpt-image+runway` (the seeds' DALL-E → Runway path) and `flux+runway`."""
    from providers.flux import FluxImageProvider
    from providers.openai_images import OpenAIImageProvider
    from providers.polling import PollPolicy
    from providers.prompting import FirstFrameImages
    from providers.runway import RunwayVideoProvider

    rw, fx, oa, core = settings.runway, settings.flux, settings.openai, settings.core
    # An empty value (copied from .env.example) means "not set".
    secret = (rw.api_secret.get_secret_value() if rw.api_secret else None) or None
    bfl_key = (fx.api_key.get_secret_value() if fx.api_key else None) or None
    openai_key = (oa.api_key.get_secret_value() if oa.api_key else None) or None
    shared: list[RunwayVideoProvider] = []

    def runway() -> RunwayVideoProvider:
        # One client for the three pipelines: one connection pool, one output-URL cache.
        if not shared:
            shared.append(RunwayVideoProvider(
                api_secret=secret, base_url=rw.base_url, work_dir=core.data_dir / "runway-provider",
                api_version=rw.api_version, text_model=rw.text_model, image_model=rw.image_model,
                credits_per_second=rw.credits_per_second, unknown_credits_per_second=rw.unknown_credits_per_second,
                credit_usd=rw.credit_usd, max_data_uri_bytes=int(rw.max_data_uri_mb * 1024 * 1024),
                retired_models=frozenset(m.strip() for m in rw.retired_models.split(",") if m.strip()),
                poll_seconds=rw.poll_seconds, timeout=rw.request_timeout_seconds,
                policy=PollPolicy(backoff_base=rw.retry_backoff_seconds, backoff_max=max(rw.retry_backoff_seconds * 30, 0.05)),
            ))  # fmt: skip
        return shared[0]

    def gpt_image() -> FirstFrameImages:
        return FirstFrameImages(OpenAIImageProvider(
            api_key=openai_key, base_url=oa.base_url, model=oa.image_model, quality=oa.image_quality,
            timeout=max(oa.request_timeout_seconds, 120), token_prices=oa.image_token_prices,
            retired_models=frozenset(m.strip() for m in oa.image_retired_models.split(",") if m.strip()), snap_size=True,
        ))  # fmt: skip

    def flux() -> FirstFrameImages:
        return FirstFrameImages(FluxImageProvider(
            api_key=bfl_key, base_url=fx.base_url, model=fx.model, prices=fx.prices, poll_seconds=fx.poll_seconds,
            timeout_seconds=fx.timeout_seconds, request_timeout=fx.request_timeout_seconds, retry_backoff=fx.retry_backoff_seconds,
        ))  # fmt: skip

    no_runway = "" if secret else "RUNWAYML_API_SECRET is not set"
    no_openai = no_runway or ("" if openai_key else "OPENAI_API_KEY is not set")
    no_flux = no_runway or ("" if bfl_key else "BFL_API_KEY is not set")
    registry.register("runway", lambda: Pipeline(
        name="runway", video=runway(), configured=not no_runway, not_configured_reason=no_runway,
        description=f"Runway: text to video ({rw.text_model}), image to video ({rw.image_model}), remix, extend.",
    ))  # fmt: skip
    registry.register("gpt-image+runway", lambda: Pipeline(
        name="gpt-image+runway", video=runway(), image=gpt_image(), configured=not no_openai, not_configured_reason=no_openai,
        description=f"A {oa.image_model} still, written for video and cropped to the ratio, animated by Runway {rw.image_model}.",
    ))  # fmt: skip
    registry.register("flux+runway", lambda: Pipeline(
        name="flux+runway", video=runway(), image=flux(), configured=not no_flux, not_configured_reason=no_flux,
        description=f"A Flux ({fx.model}) still, written for video and cropped to the ratio, animated by Runway {rw.image_model}.",
    ))  # fmt: skip



def _register_comfyui(registry: PipelineRegistry, settings: Settings) -> None:
    """`comfyui` (text or image to video), `comfyui-image` (stills) and `comfyui-image+comfyui`.

    With COMFYUI_URL set, the workflows are loaded and checked now, at start-up: a missing file
    or a missing `videobot.*` title stops the bot with one line naming the file and the title.
    """
    from pathlib import Path

    from pydantic import ValidationError

    from bot.core.errors import ConfigError
    from providers.comfyui import ComfyUIImageProvider, ComfyUIJobs, ComfyUIVideoProvider
    from providers.comfyui_client import ComfyUIClient
    from providers.comfyui_workflow import Workflow, WorkflowError, WorkflowKind, load_workflow, resolve
    from providers.prompting import FirstFrameImages

    try:
        cu = settings.comfyui
    except ValidationError as exc:
        err = exc.errors()[0]
        var = "COMFYUI_" + ".".join(str(p) for p in err["loc"]).upper()
        raise ConfigError(f"Invalid setting {var}={err.get('input')!r}: {err['msg']}.") from None
    core = settings.core
    url = cu.url.strip() if cu.url else None
    kinds = (WorkflowKind.TEXT_TO_VIDEO, WorkflowKind.IMAGE_TO_VIDEO, WorkflowKind.TEXT_TO_IMAGE)

    def load(directory: Path | None, names: tuple[str, ...]) -> list[Workflow | None]:
        return [load_workflow(resolve(n.strip(), directory), k) if n.strip() else None for n, k in zip(names, kinds)]

    try:
        t2v, i2v, t2i = load(cu.workflows_dir, (cu.t2v_workflow, cu.i2v_workflow, cu.t2i_workflow))
    except WorkflowError as exc:
        if url:
            raise ConfigError(exc.message) from None
        # Not in use: list the pipelines from the shipped workflows so users learn they exist.
        fields = type(cu).model_fields
        t2v, i2v, t2i = load(None, tuple(str(fields[f].default) for f in ("t2v_workflow", "i2v_workflow", "t2i_workflow")))
    no_url = "" if url else "COMFYUI_URL is not set"
    shared: list[ComfyUIJobs] = []

    def jobs() -> ComfyUIJobs:
        # One client for all the pipelines: one connection pool and one websocket listener.
        if not shared:
            client = ComfyUIClient(url or "http://127.0.0.1:8188", headers=cu.headers, timeout=cu.request_timeout_seconds)
            shared.append(ComfyUIJobs(
                client, work_dir=core.data_dir / "comfyui-provider", poll_seconds=cu.poll_seconds,
                absence_grace=cu.absence_grace_seconds,
            ))  # fmt: skip
        return shared[0]

    def video(text: Workflow | None, image: Workflow | None) -> ComfyUIVideoProvider:
        return ComfyUIVideoProvider(
            jobs(), text_workflow=text, image_workflow=image, usd_per_second=cu.usd_per_second,
            negative_prompt=cu.negative_prompt, max_seconds=cu.max_seconds, max_image_bytes=int(core.max_image_mb * 1_000_000),
        )  # fmt: skip

    def stills(workflow: Workflow) -> ComfyUIImageProvider:
        return ComfyUIImageProvider(
            jobs(), workflow=workflow, usd_per_image=cu.usd_per_image, negative_prompt=cu.negative_prompt,
            timeout=cu.image_timeout_seconds,
        )  # fmt: skip

    def comfyui() -> Pipeline:
        # Without a text-to-video workflow, text goes through a still first (the image step).
        step = FirstFrameImages(stills(t2i)) if t2v is None and t2i is not None else None
        names = ", ".join(w.name for w in (t2v, i2v) if w is not None)
        return Pipeline(
            name="comfyui", video=video(t2v, i2v), image=step, configured=not no_url, not_configured_reason=no_url,
            description=f"Your ComfyUI server ({names}): text or image to video on your own GPU.",
        )

    if t2v is not None or i2v is not None:
        registry.register("comfyui", comfyui)
    if t2i is not None:
        image_flow = t2i
        registry.register("comfyui-image", lambda: Pipeline(
            name="comfyui-image", video=None, image=stills(image_flow), configured=not no_url, not_configured_reason=no_url,
            description=f"Stills from your ComfyUI server ({image_flow.name}).",
        ))  # fmt: skip
        if i2v is not None:
            animate = i2v
            registry.register("comfyui-image+comfyui", lambda: Pipeline(
                name="comfyui-image+comfyui", video=video(None, animate), image=FirstFrameImages(stills(image_flow)),
                configured=not no_url, not_configured_reason=no_url,
                description=f"A {image_flow.name} still animated by {animate.name}, both on your ComfyUI server.",
            ))  # fmt: skip
