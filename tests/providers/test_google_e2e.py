"""The Google pipelines through the real core (service, runner, store), with the real google-genai
client talking to a loopback emulator of the Interactions API, Vertex's long-running Veo
operations and generateContent: what crossed the wire, and what the user gets (decoded MP4s)."""
from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App
from bot.config import Settings
from bot.core.models import Actor, GenerateRequest, Job, JobKind, JobStatus, Origin
from providers.errors import NotConfigured
from tests.apps import AppFactory, AppMaker, run_job, until
from tests.fakes.google_server import KEY, LOCATION, PROJECT, TOKEN, GoogleServer, google_server  # noqa: F401
from tests.helpers import assert_audio, assert_no_audio, assert_video

ORIGIN = Origin(platform="cli", user_id="tester")


@pytest.fixture
async def make_app(settings: Settings, google_server: GoogleServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AppFactory]:
    """An app on the Google emulator (API key and Vertex both set); keyword arguments are extra env
    vars (None removes one)."""
    async with AppMaker(monkeypatch, {
        "GEMINI_API_KEY": KEY, "GOOGLE_GEMINI_BASE_URL": google_server.base_url,
        "GOOGLE_GENAI_USE_VERTEXAI": "true", "GOOGLE_CLOUD_PROJECT": PROJECT, "GOOGLE_CLOUD_LOCATION": LOCATION,
        "GOOGLE_ACCESS_TOKEN": TOKEN, "GOOGLE_VERTEX_BASE_URL": google_server.base_url,
        "GOOGLE_OMNI_POLL_SECONDS": "0.01", "GOOGLE_VEO_POLL_SECONDS": "0.01", "GOOGLE_RETRY_BACKOFF_SECONDS": "0.01",
    }) as apps:  # fmt: skip
        yield apps.make


async def run(app: App, request: GenerateRequest) -> Job:
    return await run_job(app, request, ORIGIN)


async def wait_job(app: App, job: Job) -> Job:
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


def b64_image(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def interaction_bodies(server: GoogleServer) -> list[dict[str, Any]]:
    return [r.json for r in server.calls("POST") if r.path == "/v1/interactions"]


def contents(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for step in body["input"] for c in step["content"]]


# --- Gemini Omni (Interactions API) ------------------------------------------------------------


async def test_omni_text_to_video_with_sound(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a lighthouse in a storm", pipeline="gemini-video", audio=True))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = google_server.creates()
    assert create.headers["x-goog-api-key"] == KEY and "Authorization" not in create.headers
    body = create.json
    assert (body["model"], body["background"], body["response_modalities"]) == ("gemini-omni-1.2-flash", True, ["video", "audio"])
    assert body["response_format"] == {"type": "video", "delivery": "uri", "aspect_ratio": "16:9", "resolution": "720p", "duration": "8s"}
    assert contents(body) == [{"type": "text", "text": "a lighthouse in a storm"}]
    assert "previous_interaction_id" not in body
    assert job.remote_id in google_server.jobs and job.model == "gemini-omni-1.2-flash"
    # The video was a URI on the API's host: downloaded with the key, streamed to disk.
    (download,) = google_server.calls("GET", "/files/")
    assert download.headers["x-goog-api-key"] == KEY and download.query == {"alt": "media"}
    assert job.cost_estimate == pytest.approx(0.15 * 8)
    assert_video(job.output_path, width=128, height=72, seconds=8)  # type: ignore[arg-type]
    assert_audio(job.output_path, seconds=8)  # type: ignore[arg-type]


async def test_omni_image_to_video_portrait_inline(make_app: AppFactory, google_server: GoogleServer, tmp_path: Path) -> None:
    app = await make_app(GOOGLE_OMNI_DELIVERY="inline")
    picture = tmp_path / "poster.png"
    Image.new("RGB", (900, 1400), (200, 40, 40)).save(picture)
    job = await run(app, GenerateRequest(prompt="the poster flutters", pipeline="gemini-video", image_path=picture,
                                         size="720x1280", seconds=4))  # fmt: skip
    assert job.status is JobStatus.COMPLETED, job.error_message
    (body,) = interaction_bodies(google_server)
    text, image = contents(body)
    assert text == {"type": "text", "text": "the poster flutters"} and image["mime_type"] == "image/jpeg"
    sent = b64_image(image["data"])
    assert sent.size == (720, 1280) and sent.getpixel((360, 640))[0] > 150  # the user's red poster, cropped to the size
    assert body["response_format"]["aspect_ratio"] == "9:16" and body["response_format"]["delivery"] == "inline"
    assert body["generation_config"]["video_config"] == {"task": "image_to_video"} and body["response_modalities"] == ["video"]
    assert google_server.calls("GET", "/files/") == []  # the video came inside the interaction
    assert_video(job.output_path, width=72, height=128, seconds=4)  # type: ignore[arg-type]
    assert_no_audio(job.output_path)  # type: ignore[arg-type]


async def test_omni_remix_and_extend_continue_the_interaction(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    first = await run(app, GenerateRequest(prompt="a fox in fresh snow", pipeline="gemini-video", seconds=6, audio=True))
    assert first.status is JobStatus.COMPLETED, first.error_message
    remix = await wait_job(app, await app.service.remix(first.id, "the fox in autumn leaves", ORIGIN))
    assert remix.status is JobStatus.COMPLETED, remix.error_message
    extended = await wait_job(app, await app.service.extend(first.id, ORIGIN, seconds=4, prompt="the fox runs off"))
    assert extended.status is JobStatus.COMPLETED, extended.error_message
    _, remix_body, extend_body = interaction_bodies(google_server)
    assert remix_body["previous_interaction_id"] == first.remote_id
    assert remix_body["generation_config"]["video_config"] == {"task": "edit"}
    assert contents(remix_body) == [{"type": "text", "text": "the fox in autumn leaves"}]  # nothing re-uploaded
    assert extend_body["previous_interaction_id"] == first.remote_id
    assert extend_body["generation_config"]["video_config"] == {"task": "extend"} and extend_body["response_format"]["duration"] == "4s"
    assert remix.remote_id != first.remote_id != extended.remote_id
    assert_video(remix.output_path, width=128, height=72, seconds=6)  # type: ignore[arg-type]
    # Omni answers an extension with the new seconds: the bot joins them to the source, sound and all.
    assert_video(extended.output_path, width=128, height=72, seconds=10)  # type: ignore[arg-type]
    assert_audio(extended.output_path, seconds=10, tolerance=0.2)  # type: ignore[arg-type]
    assert remix_body["response_modalities"] == extend_body["response_modalities"] == ["video", "audio"]


async def test_omni_safety_block_is_a_refusal_never_retried(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="gemini-video:local")
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="gemini-video"))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy" and job.pipeline == "gemini-video"
    assert "fallbacks" not in job.state and not job.cost_actual
    assert len(google_server.creates()) == 1
    assert "content policy" in (job.error_message or "") and "blocked by safety filters" in (job.error_message or "")


async def test_omni_429_on_create_is_waited_out(make_app: AppFactory, google_server: GoogleServer) -> None:
    google_server.fail("POST", "/v1/interactions", 429, times=4, headers={"Retry-After": "0.05"})
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a popular model", pipeline="gemini-video", seconds=4))
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert len(google_server.creates()) == 5 and len(google_server.jobs) == 1  # refused four times, made once
    assert_video(job.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


async def test_an_ambiguous_create_is_not_sent_again(make_app: AppFactory, google_server: GoogleServer) -> None:
    google_server.fail("POST", "/v1/interactions", 500)
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="gemini-video", seconds=4))
    assert job.status is JobStatus.FAILED and "not billed twice" in (job.error_message or "")
    assert len(google_server.creates()) == 1


async def test_an_unknown_model_is_one_line_naming_the_setting(make_app: AppFactory, google_server: GoogleServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    app = await make_app(GOOGLE_OMNI_MODEL="gemini-omni-0.9-preview", GOOGLE_PRICES='{"gemini-omni-0.9-preview": 0.1}')
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="gemini-video", seconds=4))
    assert job.status is JobStatus.FAILED and job.error_code == "model_unavailable"
    assert "model is unavailable" in (job.error_message or "")
    # The operator's log line names the model and the setting to change.
    (line,) = [r.getMessage() for r in caplog.records if "gemini-omni-0.9-preview" in r.getMessage() and r.name == "bot.core.runner"]
    assert "Gemini does not know the model 'gemini-omni-0.9-preview' (set GOOGLE_OMNI_MODEL)" in line
    assert google_server.jobs == {}


async def test_cancel_reaches_the_interaction(make_app: AppFactory, google_server: GoogleServer) -> None:
    google_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a very long take", pipeline="gemini-video"), ORIGIN)

    async def running() -> bool:
        current = await app.store.get(job.id)
        return current is not None and current.remote_id is not None

    await until(running, "the interaction was created")
    await app.service.cancel(job.id, Actor.of(ORIGIN))
    done = await wait_job(app, job)
    assert done.status is JobStatus.CANCELLED
    (cancel,) = google_server.calls("POST", "/cancel")
    assert cancel.path == f"/v1/interactions/{done.remote_id}/cancel"
    assert google_server.jobs[done.remote_id].status == "cancelled"  # type: ignore[index]


async def test_restart_mid_job_reads_the_same_interaction(make_app: AppFactory, google_server: GoogleServer) -> None:
    google_server.hold = True
    app = await make_app()
    job = await app.service.submit(GenerateRequest(prompt="a slow glacier", pipeline="gemini-video", seconds=4), ORIGIN)

    async def started() -> Job | None:
        current = await app.store.get(job.id)
        return current if current is not None and current.remote_id else None

    current = await until(started, "the interaction was created")
    await app.runner.stop()
    await app.close()
    google_server.hold = False
    again = await make_app()
    done = await asyncio.wait_for(again.runner.wait(job.id), 30)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.remote_id == current.remote_id and len(google_server.creates()) == 1
    assert_video(done.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


# --- Veo on Vertex AI ------------------------------------------------------------------------


def veo_bodies(server: GoogleServer) -> list[dict[str, Any]]:
    return [r.json for r in server.calls("POST") if r.path.endswith(":predictLongRunning")]


async def test_veo_text_to_video_sends_every_parameter(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app(GOOGLE_VEO_NEGATIVE_PROMPT="blurry, text")
    job = await run(app, GenerateRequest(prompt="a red kite over dunes", pipeline="veo", size="1920x1080", seconds=6,
                                         seed=7, audio=True))  # fmt: skip
    assert job.status is JobStatus.COMPLETED, job.error_message
    (create,) = google_server.creates()
    assert create.path == f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/veo-3.1-generate-001:predictLongRunning"
    assert create.headers["Authorization"] == f"Bearer {TOKEN}" and "x-goog-api-key" not in create.headers
    assert create.json["instances"] == [{"prompt": "a red kite over dunes"}]
    assert create.json["parameters"] == {
        "sampleCount": 1, "durationSeconds": 6, "seed": 7, "aspectRatio": "16:9", "resolution": "1080p",
        "negativePrompt": "blurry, text", "generateAudio": True,
    }  # fmt: skip
    reads = google_server.calls("POST", ":fetchPredictOperation")
    assert reads and all(r.json == {"operationName": job.remote_id} for r in reads)
    assert job.cost_estimate == pytest.approx(0.40 * 6)
    assert_video(job.output_path, width=192, height=108, seconds=6)  # type: ignore[arg-type]
    assert_audio(job.output_path, seconds=6)  # type: ignore[arg-type]


async def test_veo_without_audio_has_no_sound(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a quiet pond", pipeline="veo", size="720x1280", seconds=4))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (body,) = veo_bodies(google_server)
    assert body["parameters"]["generateAudio"] is False and body["parameters"]["aspectRatio"] == "9:16"
    assert job.cost_estimate == pytest.approx(0.20 * 4)
    assert_video(job.output_path, width=72, height=128, seconds=4)  # type: ignore[arg-type]
    assert_no_audio(job.output_path)  # type: ignore[arg-type]


async def test_veo_image_then_extend_with_veos_own_video(make_app: AppFactory, google_server: GoogleServer, tmp_path: Path) -> None:
    app = await make_app()
    picture = tmp_path / "pic.png"
    Image.new("RGB", (1600, 900), (20, 200, 40)).save(picture)
    first = await run(app, GenerateRequest(prompt="the field sways", pipeline="veo", image_path=picture, audio=True))
    assert first.status is JobStatus.COMPLETED, first.error_message
    extended = await wait_job(app, await app.service.extend(first.id, ORIGIN, seconds=7, prompt="a storm rolls in"))
    assert extended.status is JobStatus.COMPLETED, extended.error_message
    create, extend = veo_bodies(google_server)
    sent = b64_image(create["instances"][0]["image"]["bytesBase64Encoded"])
    assert sent.size == (1280, 720) and sent.getpixel((640, 360))[1] > 150
    instance = extend["instances"][0]
    assert base64.b64decode(instance["video"]["bytesBase64Encoded"]) == Path(first.output_path).read_bytes()  # type: ignore[arg-type]
    assert "image" not in instance and extend["parameters"]["durationSeconds"] == 7
    # Veo answers with the whole clip (source + 7 s): taken as it is, sound kept.
    assert_video(extended.output_path, width=128, height=72, seconds=15)  # type: ignore[arg-type]
    assert_audio(extended.output_path, seconds=15, tolerance=0.2)  # type: ignore[arg-type]


async def test_veo_remix_animates_the_first_frame_again(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    first = await run(app, GenerateRequest(prompt="a harbour at dawn", pipeline="veo", seconds=4))
    remix = await wait_job(app, await app.service.remix(first.id, "the harbour at night", ORIGIN))
    assert remix.status is JobStatus.COMPLETED, remix.error_message
    _, body = veo_bodies(google_server)
    assert body["instances"][0]["prompt"] == "the harbour at night" and "image" in body["instances"][0]
    assert b64_image(body["instances"][0]["image"]["bytesBase64Encoded"]).size == (1280, 720)
    assert_video(remix.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


async def test_veo_filtered_output_is_a_refusal_never_retried(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app(VIDEOBOT_FALLBACKS="veo:local")
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="veo", seconds=4))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy" and job.pipeline == "veo"
    assert not job.cost_actual and len(google_server.creates()) == 1
    assert "content policy" in (job.error_message or "") and "usage guidelines" in (job.error_message or "")


async def test_veo_failed_operation_reports_googles_reason(make_app: AppFactory, google_server: GoogleServer) -> None:
    google_server.next_failures.append((3, "The input could not be processed."))
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a fox", pipeline="veo", seconds=4))
    assert job.status is JobStatus.FAILED and job.error_code == "generation_failed"
    assert len(google_server.creates()) == 1
    assert "could not be processed" in (job.error_message or "")


async def test_veo_is_not_offered_with_an_api_key_alone(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app(GOOGLE_GENAI_USE_VERTEXAI=None, GOOGLE_CLOUD_PROJECT=None)
    pipeline = app.registry.get("veo")
    assert not pipeline.configured and "GOOGLE_GENAI_USE_VERTEXAI" in pipeline.not_configured_reason
    assert app.registry.chains()["gemini-image+veo"] == pipeline.not_configured_reason  # type: ignore[attr-defined]
    with pytest.raises(NotConfigured):
        await app.service.submit(GenerateRequest(prompt="a fox", pipeline="veo", seconds=4), ORIGIN)
    assert app.registry.get("gemini-video").configured and google_server.requests == []


# --- Gemini images -----------------------------------------------------------------------------


async def test_gemini_image_job(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a teal coupe", kind=JobKind.IMAGE, pipeline="gemini-image", size="1344x768"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (call,) = google_server.calls("POST", ":generateContent")
    assert call.path == "/v1/models/gemini-2.5-flash-image:generateContent" and call.headers["x-goog-api-key"] == KEY
    assert call.json["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    with Image.open(job.output_path) as image:  # type: ignore[arg-type]
        assert image.format == "PNG" and image.size == (1344, 768)


async def test_gemini_image_then_veo(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="a red fox in fresh snow", pipeline="gemini-image+veo", seconds=4))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (image_call,) = google_server.calls("POST", ":generateContent")
    parts = image_call.json["contents"][0]["parts"]
    assert parts[0]["text"].startswith("a red fox in fresh snow") and image_call.json["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    (body,) = veo_bodies(google_server)
    assert body["instances"][0]["prompt"] == "a red fox in fresh snow"
    assert b64_image(body["instances"][0]["image"]["bytesBase64Encoded"]).size == (1280, 720)  # cropped to the video
    assert job.cost_estimate == pytest.approx(0.039 + 0.20 * 4)
    assert_video(job.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]


async def test_gemini_image_on_vertex_without_an_api_key(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app(GEMINI_API_KEY=None)
    assert not app.registry.get("gemini-video").configured
    job = await run(app, GenerateRequest(prompt="a teal coupe", kind=JobKind.IMAGE, pipeline="gemini-image", size="768x1344"))
    assert job.status is JobStatus.COMPLETED, job.error_message
    (call,) = google_server.calls("POST", ":generateContent")
    assert call.path.startswith(f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/") and call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.json["generationConfig"]["imageConfig"] == {"aspectRatio": "9:16"}


async def test_a_blocked_image_prompt_is_a_refusal(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    job = await run(app, GenerateRequest(prompt="something forbidden", pipeline="gemini-image+veo", seconds=4))
    assert job.status is JobStatus.FAILED and job.error_code == "content_policy"
    assert len(google_server.calls("POST", ":generateContent")) == 1 and google_server.creates() == []


async def test_help_offers_the_google_pipelines(make_app: AppFactory, google_server: GoogleServer) -> None:
    from bot.core.help import deployment_help

    app = await make_app(start=False, GOOGLE_GENAI_USE_VERTEXAI=None)
    text = (await deployment_help(app.service)).plain_text()
    offered = {line.split(",")[0].strip() for line in text.splitlines() if line.startswith("    ")}
    # The only configured providers are the defaults, ahead of the offline ones.
    assert {"gemini-video (default)", "gemini-image+gemini-video", "gemini-image (default)"} <= offered
    line = next(line for line in text.splitlines() if line.strip().startswith("gemini-video (default),"))
    assert "animate" in line and "remix" in line and "extend" in line
    not_here = next(line for line in text.splitlines() if "not configured here" in line)
    assert "veo" in not_here and "gemini-image+veo" in not_here and google_server.requests == []


async def test_veo_extends_by_other_lengths_from_the_last_frame(make_app: AppFactory, google_server: GoogleServer) -> None:
    app = await make_app()
    first = await run(app, GenerateRequest(prompt="a slow pan", pipeline="veo", seconds=4))
    extended = await wait_job(app, await app.service.extend(first.id, ORIGIN, seconds=6))
    assert extended.status is JobStatus.COMPLETED, extended.error_message
    _, body = veo_bodies(google_server)
    assert "video" not in body["instances"][0] and "image" in body["instances"][0] and body["parameters"]["durationSeconds"] == 6
    assert_video(extended.output_path, width=128, height=72, seconds=10)  # type: ignore[arg-type]
