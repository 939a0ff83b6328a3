"""Which pipelines this bot offers, built from the settings.

Each integration adds its names here, and declares its image sources and image-to-video
targets: the registry makes every `IMAGE+VIDEO` chain of them. A pipeline whose keys are
missing is still listed (so users learn it exists) but refuses jobs with "not configured".
"""
from __future__ import annotations

from pydantic import SecretStr

from bot.config import Settings
from providers.pipeline import Pipeline
from providers.registry import (
    ImageSource,
    PipelineFactory,
    PipelineRegistry,
    VideoTarget,
    local_image_pipeline,
    local_pipeline,
)


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
            core.media_root / "local-provider",  # shared: a worker taking a job over finds its spec
            fps=local.fps,
            max_seconds=local.max_seconds,
            concurrency=local.concurrency,
            max_image_bytes=int(core.max_image_mb * 1_000_000),
        ),
    )
    registry.register("local-image", local_image_pipeline)
    _register_fal(registry, settings)
    _register_kling(registry, settings)
    _register_replicate(registry, settings)
    _register_openai(registry, settings)
    _register_runway(registry, settings)
    _register_flux(registry, settings)
    _register_comfyui(registry, settings)
    _register_google(registry, settings)
    # A provider the operator configured beats the offline renderer; direct text-to-video
    # before chains (one paid step instead of two); the operator's own ComfyUI GPU before the
    # always-there local renderer.
    registry.video_preference = [
        "runway", "sora", "kling", "fal", "veo", "gemini-video", "replicate", "gpt-image+runway", "flux+runway", "gpt-image+sora",
        "gpt-image+fal", "flux+fal", "comfyui", "local",
    ]  # fmt: skip
    registry.image_preference = ["gpt-image", "gemini-image", "comfyui-image", "replicate-image", "local-image"]
    return registry


def _secret(value: SecretStr | None) -> str | None:
    """An empty line in .env (KEY=) means unset."""
    return (value.get_secret_value() if value else None) or None


def _register_fal(registry: PipelineRegistry, settings: Settings) -> None:
    """`fal`, and fal as an image-to-video target (`gpt-image+fal`, `flux+fal`, ...)."""
    from providers.fal import FalVideoProvider, load_table
    from providers.polling import PollPolicy

    fl, core = settings.fal, settings.core
    key = _secret(fl.key)
    no_fal = "" if key else "FAL_KEY is not set"

    def fal(default_mode: str) -> FalVideoProvider:
        return FalVideoProvider(
            key=key, work_dir=core.media_root / "fal-provider", queue_url=fl.queue_url, video_model=fl.video_model,
            i2v_model=fl.i2v_model, prices=fl.prices, table=load_table(fl.endpoints_file), negative_prompt=fl.negative_prompt,
            default_mode=default_mode, poll_seconds=fl.poll_seconds, timeout=fl.request_timeout_seconds,
            policy=PollPolicy(backoff_base=fl.retry_backoff_seconds, backoff_max=max(fl.retry_backoff_seconds * 30, 0.05)),
        )  # fmt: skip

    registry.register("fal", lambda: Pipeline(
        name="fal", video=fal("text"), configured=not no_fal, not_configured_reason=no_fal,
        description=f"fal queue: text to video ({fl.video_model}), image to video ({fl.i2v_model}).",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="fal", provider=lambda: fal("image"), not_configured=no_fal,
        describe=f"{{still}}, written for video and cropped to the ratio, animated by fal {fl.i2v_model}.",
    ))  # fmt: skip


def _register_kling(registry: PipelineRegistry, settings: Settings) -> None:
    """`kling`, and Kling as an image-to-video target (`gpt-image+kling`, `flux+kling`, ...)."""
    from providers.kling import KlingVideoProvider
    from providers.polling import PollPolicy

    kl, core = settings.kling, settings.core
    access, secret = _secret(kl.access_key), _secret(kl.secret_key)
    no_kling = "" if access and secret else "KLING_ACCESS_KEY and KLING_SECRET_KEY are not set"
    shared: list[KlingVideoProvider] = []

    def kling() -> KlingVideoProvider:
        # One client for every Kling pipeline: one connection pool, one token.
        if not shared:
            shared.append(KlingVideoProvider(
                access_key=access, secret_key=secret, work_dir=core.media_root / "kling-provider", base_url=kl.base_url,
                model=kl.model, mode=kl.mode, prices=kl.prices, negative_prompt=kl.negative_prompt, cfg_scale=kl.cfg_scale,
                poll_seconds=kl.poll_seconds, timeout=kl.request_timeout_seconds, absence_grace=kl.absence_grace_seconds,
                policy=PollPolicy(backoff_base=kl.retry_backoff_seconds, backoff_max=max(kl.retry_backoff_seconds * 30, 0.05)),
            ))  # fmt: skip
        return shared[0]

    registry.register("kling", lambda: Pipeline(
        name="kling", video=kling(), configured=not no_kling, not_configured_reason=no_kling,
        description=f"Kling ({kl.model}, {kl.mode}): text or image to video, extend; never created twice after a crash.",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="kling", provider=kling, not_configured=no_kling,
        describe=f"{{still}}, written for video and cropped to the size, animated by Kling {kl.model}.",
    ))  # fmt: skip


def _register_openai(registry: PipelineRegistry, settings: Settings) -> None:
    """`sora`, `gpt-image`, and the chain parts `gpt-image` (a source) and `sora` (a target):
    listed even without keys, refusing jobs until set."""
    from providers.openai_images import OpenAIImageProvider
    from providers.openai_videos import OpenAIVideoProvider

    oa, core = settings.openai, settings.core
    key = _secret(oa.api_key)
    video_key = _secret(oa.video_api_key) or key
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
    registry.register("gpt-image", lambda: Pipeline(
        name="gpt-image", video=None, image=images(snap_size=False), configured=not no_image,
        not_configured_reason=no_image, description=f"OpenAI {oa.image_model} stills.",
    ))  # fmt: skip
    # As a first frame the still is cropped to the video's size afterwards: sizes snap to what it makes.
    registry.add_image_source(ImageSource(
        name="gpt-image", provider=lambda: images(snap_size=True), not_configured=no_image, still=f"A {oa.image_model} still",
    ))  # fmt: skip
    # The Videos protocol fits the reference image itself: the still goes as it is made.
    registry.add_video_target(VideoTarget(
        name="sora", provider=videos, not_configured=no_video, first_frame=lambda image: image,
        describe=f"{{still}} as the first frame of a {oa.video_model} video.",
    ))  # fmt: skip


def _register_runway(registry: PipelineRegistry, settings: Settings) -> None:
    """`runway`, and Runway as the target of the seeds' DALL-E → Runway path (`gpt-image+runway`)."""
    from providers.polling import PollPolicy
    from providers.runway import RunwayVideoProvider

    rw, core = settings.runway, settings.core
    secret = _secret(rw.api_secret)
    shared: list[RunwayVideoProvider] = []

    def runway() -> RunwayVideoProvider:
        # One client for every Runway pipeline: one connection pool, one output-URL cache.
        if not shared:
            shared.append(RunwayVideoProvider(
                api_secret=secret, base_url=rw.base_url, work_dir=core.media_root / "runway-provider",
                api_version=rw.api_version, text_model=rw.text_model, image_model=rw.image_model,
                credits_per_second=rw.credits_per_second, unknown_credits_per_second=rw.unknown_credits_per_second,
                credit_usd=rw.credit_usd, max_data_uri_bytes=int(rw.max_data_uri_mb * 1024 * 1024),
                retired_models=frozenset(m.strip() for m in rw.retired_models.split(",") if m.strip()),
                poll_seconds=rw.poll_seconds, timeout=rw.request_timeout_seconds,
                policy=PollPolicy(backoff_base=rw.retry_backoff_seconds, backoff_max=max(rw.retry_backoff_seconds * 30, 0.05)),
            ))  # fmt: skip
        return shared[0]

    no_runway = "" if secret else "RUNWAYML_API_SECRET is not set"
    registry.register("runway", lambda: Pipeline(
        name="runway", video=runway(), configured=not no_runway, not_configured_reason=no_runway,
        description=f"Runway: text to video ({rw.text_model}), image to video ({rw.image_model}), remix, extend.",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="runway", provider=runway, not_configured=no_runway,
        describe=f"{{still}}, written for video and cropped to the ratio, animated by Runway {rw.image_model}.",
    ))  # fmt: skip


def _register_flux(registry: PipelineRegistry, settings: Settings) -> None:
    """Flux as an image source (`flux+runway`, `flux+fal`, ...)."""
    from providers.flux import FluxImageProvider

    fx = settings.flux
    bfl_key = _secret(fx.api_key)

    def flux() -> FluxImageProvider:
        return FluxImageProvider(
            api_key=bfl_key, base_url=fx.base_url, model=fx.model, prices=fx.prices, poll_seconds=fx.poll_seconds,
            timeout_seconds=fx.timeout_seconds, request_timeout=fx.request_timeout_seconds, retry_backoff=fx.retry_backoff_seconds,
        )  # fmt: skip

    registry.add_image_source(ImageSource(
        name="flux", provider=flux, not_configured="" if bfl_key else "BFL_API_KEY is not set",
        still=f"A Flux ({fx.model}) still",
    ))  # fmt: skip


def _register_comfyui(registry: PipelineRegistry, settings: Settings) -> None:
    """`comfyui` (text or image to video) and `comfyui-image` (stills), plus ComfyUI as an image
    source (`comfyui-image+runway`, ...) and an image-to-video target (`gpt-image+comfyui`,
    `comfyui-image+comfyui`, ...).

    With COMFYUI_URL set, the workflows are loaded and checked now, at start-up: a missing file
    or a missing `videobot.*` title stops the bot with one line naming the file and the title.
    """
    from pathlib import Path

    from bot.core.errors import ConfigError
    from providers.comfyui import ComfyUIImageProvider, ComfyUIJobs, ComfyUIVideoProvider
    from providers.comfyui_client import ComfyUIClient
    from providers.comfyui_workflow import Workflow, WorkflowError, WorkflowKind, load_workflow, resolve
    from providers.prompting import FirstFrameImages

    cu, core = settings.comfyui, settings.core
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
                client, work_dir=core.media_root / "comfyui-provider", poll_seconds=cu.poll_seconds,
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
    if i2v is not None:
        animate = i2v
        registry.add_video_target(VideoTarget(
            name="comfyui", provider=lambda: video(None, animate), not_configured=no_url,
            describe=f"{{still}}, written for video and cropped to the size, animated by {animate.name} on your ComfyUI server.",
        ))  # fmt: skip
    if t2i is not None:
        image_flow = t2i
        registry.register("comfyui-image", lambda: Pipeline(
            name="comfyui-image", video=None, image=stills(image_flow), configured=not no_url, not_configured_reason=no_url,
            description=f"Stills from your ComfyUI server ({image_flow.name}).",
        ))  # fmt: skip
        registry.add_image_source(ImageSource(
            name="comfyui-image", provider=lambda: stills(image_flow), not_configured=no_url,
            still=f"A ComfyUI ({image_flow.name}) still",
        ))  # fmt: skip


def _register_google(registry: PipelineRegistry, settings: Settings) -> None:
    """`gemini-video` (Gemini Omni, API key), `veo` (Veo 3.1, Vertex AI), `gemini-image` (either),
    and the chain parts: `gemini-image` a source, `veo` and `gemini-video` targets."""
    from providers.google_common import gemini_client, seconds_list, vertex_client
    from providers.google_images import GeminiImageProvider
    from providers.google_omni import GeminiOmniVideoProvider
    from providers.google_veo import VeoVideoProvider
    from providers.polling import PollPolicy

    gg, core = settings.google, settings.core
    key = _secret(gg.api_key)
    token = _secret(gg.access_token)
    policy = PollPolicy(backoff_base=gg.retry_backoff_seconds, backoff_max=max(gg.retry_backoff_seconds * 30, 0.05))
    no_key = "" if key else "GEMINI_API_KEY (or GOOGLE_API_KEY) is not set"
    no_vertex = gg.vertex_reason
    sizes = lambda text: tuple(s for s in text.replace(" ", "").split(",") if s)  # noqa: E731
    shared: dict[str, object] = {}

    def omni() -> GeminiOmniVideoProvider:
        # One provider per process: one connection pool and one output cache for every pipeline.
        if "omni" not in shared:
            shared["omni"] = GeminiOmniVideoProvider(
                api_key=key, work_dir=core.media_root / "gemini-provider", base_url=gg.gemini_base_url, model=gg.omni_model,
                seconds=seconds_list(gg.omni_seconds), sizes=sizes(gg.omni_sizes), prices=gg.prices,
                delivery=gg.omni_delivery, poll_seconds=gg.omni_poll_seconds, timeout=gg.request_timeout_seconds, policy=policy,
            )  # fmt: skip
        return shared["omni"]  # type: ignore[return-value]

    def veo() -> VeoVideoProvider:
        if "veo" not in shared:
            shared["veo"] = VeoVideoProvider(
                project=gg.cloud_project, location=gg.cloud_location, work_dir=core.media_root / "veo-provider",
                not_configured=no_vertex, access_token=token, base_url=gg.vertex_base_url, model=gg.veo_model,
                seconds=seconds_list(gg.veo_seconds), extend_seconds=seconds_list(gg.veo_extend_seconds),
                sizes=sizes(gg.veo_sizes), prices=gg.prices, negative_prompt=gg.veo_negative_prompt,
                poll_seconds=gg.veo_poll_seconds, timeout=gg.request_timeout_seconds, policy=policy,
            )  # fmt: skip
        return shared["veo"]  # type: ignore[return-value]

    # Images: the API key when there is one, else Vertex.
    if key:
        image_client = lambda: gemini_client(key, base_url=gg.gemini_base_url, timeout=gg.request_timeout_seconds)  # noqa: E731
    elif not no_vertex:
        image_client = lambda: vertex_client(  # noqa: E731
            project=gg.cloud_project or "", location=gg.cloud_location, access_token=token, base_url=gg.vertex_base_url,
            timeout=gg.request_timeout_seconds,
        )
    else:
        image_client = None
    no_image = "" if image_client else "GEMINI_API_KEY (or Vertex AI: GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_CLOUD_PROJECT) is not set"

    def images() -> GeminiImageProvider:
        return GeminiImageProvider(client_factory=image_client, not_configured=no_image, model=gg.image_model,
                                   prices=gg.prices, policy=policy)  # fmt: skip

    registry.register("gemini-video", lambda: Pipeline(
        name="gemini-video", video=omni(), configured=not no_key, not_configured_reason=no_key,
        description=f"Gemini Omni ({gg.omni_model}, Interactions API): text or image to video, remix, extend.",
    ))  # fmt: skip
    registry.register("veo", lambda: Pipeline(
        name="veo", video=veo(), configured=not no_vertex, not_configured_reason=no_vertex,
        description=f"Veo ({gg.veo_model}) on Vertex AI: text or image to video, remix, extend; --audio for sound.",
    ))  # fmt: skip
    registry.register("gemini-image", lambda: Pipeline(
        name="gemini-image", video=None, image=images(), configured=not no_image, not_configured_reason=no_image,
        description=f"Gemini {gg.image_model} stills.",
    ))  # fmt: skip
    registry.add_image_source(ImageSource(
        name="gemini-image", provider=images, not_configured=no_image, still=f"A Gemini ({gg.image_model}) still",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="veo", provider=veo, not_configured=no_vertex,
        describe=f"{{still}}, written for video and cropped to the size, animated by Veo ({gg.veo_model}).",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="gemini-video", provider=omni, not_configured=no_key,
        describe=f"{{still}}, written for video and cropped to the size, animated by Gemini Omni ({gg.omni_model}).",
    ))  # fmt: skip


def _register_replicate(registry: PipelineRegistry, settings: Settings) -> None:
    """`replicate` (REPLICATE_VIDEO_MODEL, REPLICATE_I2V_MODEL, or any catalogue model with --model),
    and Replicate as an image-to-video target (`gpt-image+replicate`, `flux+replicate`, ...)."""
    from providers.polling import PollPolicy
    from providers.replicate import ReplicateImageProvider, ReplicateVideoProvider
    from providers.replicate_models import load_catalogue

    rp, core = settings.replicate, settings.core
    token = _secret(rp.api_token)
    no_token = "" if token else "REPLICATE_API_TOKEN is not set"

    def replicate(default_mode: str) -> ReplicateVideoProvider:
        return ReplicateVideoProvider(
            api_token=token, work_dir=core.media_root / "replicate-provider", base_url=rp.base_url, video_model=rp.video_model,
            i2v_model=rp.i2v_model, catalogue=load_catalogue(rp.models_file), prices=rp.prices, default_mode=default_mode,
            poll_seconds=rp.poll_seconds, timeout=rp.request_timeout_seconds, absence_grace=rp.absence_grace_seconds,
            policy=PollPolicy(backoff_base=rp.retry_backoff_seconds, backoff_max=max(rp.retry_backoff_seconds * 30, 0.05)),
        )  # fmt: skip

    registry.register("replicate", lambda: Pipeline(
        name="replicate", video=replicate("text"), configured=not no_token, not_configured_reason=no_token,
        description=f"Replicate: text to video ({rp.video_model}), image to video ({rp.i2v_model}); other models with --model.",
    ))  # fmt: skip
    registry.add_video_target(VideoTarget(
        name="replicate", provider=lambda: replicate("image"), not_configured=no_token,
        describe=f"{{still}}, written for video and cropped to the size, animated by Replicate {rp.i2v_model}.",
    ))  # fmt: skip

    def stills(*, snap_size: bool) -> ReplicateImageProvider:
        return ReplicateImageProvider(replicate("text"), model=rp.image_model, snap_size=snap_size)

    registry.register("replicate-image", lambda: Pipeline(
        name="replicate-image", video=None, image=stills(snap_size=False), configured=not no_token,
        not_configured_reason=no_token, description=f"Replicate {rp.image_model} stills.",
    ))  # fmt: skip
    # As a first frame the still is cropped to the video's size afterwards: it is made in the nearest shape.
    registry.add_image_source(ImageSource(
        name="replicate-image", provider=lambda: stills(snap_size=True), not_configured=no_token,
        still=f"A Replicate {rp.image_model} still",
    ))  # fmt: skip
