"""Contract tests: the ComfyUI providers against the loopback ComfyUI emulator, over HTTP and
the websocket, driven by the same polling engine the runner uses."""
from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from providers.base import ImageRequest, RemoteJob, RemoteStatus, VideoRequest
from providers.comfyui import ComfyUIImageProvider, ComfyUIJobs, ComfyUIVideoProvider, prompt_ids
from providers.comfyui_client import ComfyUIClient
from providers.comfyui_workflow import SHIPPED_DIR, WorkflowKind, load_workflow
from providers.errors import GenerationFailed, NotConfigured, ProviderInvalidRequest, RemoteCancelled
from providers.media import first_frame
from providers.polling import PollPolicy, wait_for_completion
from tests.fakes.comfyui_server import ComfyUIServer, Failure, Recorded, comfyui_server, load_shipped  # noqa: F401 (fixture)
from tests.helpers import assert_video

FAST = PollPolicy(interval=0.02, min_interval=0.01, timeout=20, backoff_base=0.01, backoff_max=0.05)
T2V = load_workflow(SHIPPED_DIR / "wan2.2_ti2v_5b_t2v.json", WorkflowKind.TEXT_TO_VIDEO)
I2V = load_workflow(SHIPPED_DIR / "wan2.2_ti2v_5b_i2v.json", WorkflowKind.IMAGE_TO_VIDEO)
T2I = load_workflow(SHIPPED_DIR / "flux1_schnell_t2i.json", WorkflowKind.TEXT_TO_IMAGE)


@pytest.fixture
async def make_jobs(comfyui_server: ComfyUIServer, tmp_path: Path) -> AsyncIterator[Callable[..., ComfyUIJobs]]:
    clients: list[ComfyUIClient] = []

    def factory(**headers: str) -> ComfyUIJobs:
        client = ComfyUIClient(comfyui_server.base_url, headers=headers, timeout=10, reconnect_max=0.05)
        clients.append(client)
        return ComfyUIJobs(client, work_dir=tmp_path / "comfyui-provider", poll_seconds=0.02, absence_grace=0.3, policy=FAST)

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def video(make_jobs: Callable[..., ComfyUIJobs]) -> ComfyUIVideoProvider:
    return ComfyUIVideoProvider(make_jobs(), text_workflow=T2V, image_workflow=I2V)


def request(prompt: str = "a red kite over the sea", *, ref: str = "job-1", **kw: object) -> VideoRequest:
    return VideoRequest(prompt=prompt, seconds=kw.pop("seconds", 4), size=kw.pop("size", "1280x704"), client_ref=ref, **kw)  # type: ignore[arg-type]


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def finish(provider: ComfyUIVideoProvider, remote_id: str, seen: list[RemoteJob] | None = None) -> RemoteJob:
    async def record(job: RemoteJob) -> None:
        if seen is not None:
            seen.append(job)

    return await wait_for_completion(provider, remote_id, on_update=record, policy=FAST)


# --- the happy paths ------------------------------------------------------------------------------


async def test_text_to_video_queues_our_prompt_id_and_fills_the_titled_inputs(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    remote = await video.submit(request(seed=7))
    (post,) = comfyui_server.prompt_posts()
    body = post.json
    assert remote.id == body["prompt_id"] == prompt_ids("video", "job-1")[0]
    assert body["client_id"] == video.client.client_id and body["extra_data"] == {"videobot_client_ref": "job-1"}
    graph = body["prompt"]
    assert graph["6"]["inputs"]["text"] == "a red kite over the sea"
    assert (graph["60"]["inputs"]["value"], graph["61"]["inputs"]["value"]) == (1280, 704)
    assert graph["62"]["inputs"]["value"] == 4 * 24  # frames = seconds x the workflow's fps
    assert graph["3"]["inputs"]["seed"] == 7
    assert graph["7"]["inputs"]["text"] == T2V.graph["7"]["inputs"]["text"]  # the workflow's own negative

    seen: list[RemoteJob] = []
    done = await finish(video, remote.id, seen)
    assert done.status is RemoteStatus.COMPLETED and done.model == "wan2.2_ti2v_5b_t2v"
    assert any(0 < job.progress < 100 for job in seen), "progress from the websocket's progress messages"
    assert done.gpu_seconds is not None and done.gpu_seconds > 0  # type: ignore[attr-defined]
    assert video.gpu_seconds(remote.id) == done.gpu_seconds  # type: ignore[attr-defined]
    out = tmp_path / "out.mp4"
    await video.download(remote.id, out)
    assert_video(out, width=128, height=70, seconds=4)
    assert comfyui_server.calls("GET", "/view")[0].query["filename"].endswith(".mp4")


async def test_image_to_video_uploads_the_cropped_image_and_loads_it(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    picture = tmp_path / "pic.png"
    Image.new("RGB", (1000, 800), (20, 30, 220)).save(picture)
    remote = await video.submit(request("the picture comes alive", input_image=picture, seconds=2))
    name = f"videobot-{remote.id}.png"
    (upload,) = comfyui_server.calls("POST", "/upload/image")
    assert upload.json["name"] == name
    stored = Image.open(io.BytesIO(comfyui_server.uploads[name].data))
    assert stored.format == "PNG" and stored.size == (1280, 704)  # cropped to the video's shape, not stretched
    graph = comfyui_server.prompt_posts()[0].json["prompt"]
    assert graph["56"]["inputs"]["image"] == name and graph["55"]["inputs"]["start_image"] == ["56", 0]
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED
    out = tmp_path / "out.mp4"
    await video.download(remote.id, out)
    assert_video(out, width=128, height=70, seconds=2)
    red, green, blue = ImageStat.Stat(first_frame(out)).mean
    assert blue > red + 40 and blue > green + 40, "the clip starts from the uploaded picture"


async def test_text_to_image_writes_a_png_and_a_repeat_adopts_the_same_prompt(
    make_jobs: Callable[..., ComfyUIJobs], comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    images = ComfyUIImageProvider(make_jobs(), workflow=T2I)
    ask = ImageRequest(prompt="a lighthouse at dusk", size="768x512", client_ref="job-9")
    result = await images.generate(ask, tmp_path / "a.png")
    assert (result.width, result.height) == (768, 512) and result.remote_id == prompt_ids("image", "job-9")[0]
    assert Image.open(tmp_path / "a.png").size == (768, 512)
    # The same step again (a restart mid-image): found in the history, not queued a second time.
    again = await images.generate(ask, tmp_path / "b.png")
    assert again.remote_id == result.remote_id and len(comfyui_server.prompt_posts()) == 1
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()


# --- progress: websocket first, HTTP when it is gone ---------------------------------------------


async def test_a_running_prompt_is_polled_from_the_websocket_without_http(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.hold_at_step = 3
    remote = await video.submit(request())
    expected = 2 + int(93 * 2 / 6)  # sampler step 2 of 6
    await until(lambda: video.client.states[remote.id].progress == expected and video.client.connected)
    await video.poll(remote.id)  # confirms over HTTP once: the socket may have connected after the queueing
    reads = len(comfyui_server.requests)
    for _ in range(5):
        job = await video.poll(remote.id)
        assert job.status is RemoteStatus.IN_PROGRESS and job.progress == expected
    assert len(comfyui_server.requests) == reads, "polls were answered from the websocket's state"
    comfyui_server.release()
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED


async def test_a_dropped_websocket_falls_back_to_history_and_queue(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    comfyui_server.hold_at_step = 2
    remote = await video.submit(request())
    await until(lambda: comfyui_server.step == 1 and video.client.connected)
    await video.poll(remote.id)
    comfyui_server.refuse_websockets = True
    await comfyui_server.drop_websockets()
    await until(lambda: not video.client.connected)
    job = await video.poll(remote.id)
    assert job.status is RemoteStatus.IN_PROGRESS
    assert comfyui_server.calls("GET", f"/history/{remote.id}") and comfyui_server.calls("GET", "/queue")
    comfyui_server.release()
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED
    assert not video.client.connected, "finished by polling, not by a reconnected socket"
    await video.download(remote.id, tmp_path / "out.mp4")
    assert_video(tmp_path / "out.mp4", width=128, height=70, seconds=4)


async def test_success_on_the_socket_before_the_history_entry_is_not_a_failure(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.history_lag = 0.3  # ComfyUI announces success, then writes history
    remote = await video.submit(request(seconds=1))
    await until(lambda: video.client.states[remote.id].phase == "success")
    job = await video.poll(remote.id)
    assert job.status is RemoteStatus.IN_PROGRESS
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED


async def test_queue_position_is_shown_while_others_run_first(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.paused = True
    for _ in range(2):
        comfyui_server.enqueue(load_shipped("flux1_schnell_t2i.json"), client_id="someone-else")
    remote = await video.submit(request(seconds=1))
    job = await video.poll(remote.id)
    assert job.status is RemoteStatus.QUEUED and job.note == "#3 in the ComfyUI queue"
    comfyui_server.paused = False
    comfyui_server._changed.set()
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED


# --- refusals and failures ------------------------------------------------------------------------


def _variant(tmp_path: Path, name: str, edit: Callable[[dict], None], kind: WorkflowKind = WorkflowKind.TEXT_TO_VIDEO):
    graph = load_shipped("wan2.2_ti2v_5b_t2v.json")
    edit(graph)
    path = tmp_path / name
    path.write_text(json.dumps(graph), encoding="utf-8")
    return load_workflow(path, kind)


async def test_node_errors_are_an_invalid_request_naming_the_node(
    make_jobs: Callable[..., ComfyUIJobs], comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    zero_steps = _variant(tmp_path, "zero.json", lambda g: g["3"]["inputs"].update(steps=0))
    provider = ComfyUIVideoProvider(make_jobs(), text_workflow=zero_steps, image_workflow=None)
    with pytest.raises(ProviderInvalidRequest) as caught:
        await provider.submit(request())
    assert "node 3 (KSampler, 'videobot.seed')" in caught.value.message and "smaller than min" in caught.value.message

    missing = _variant(tmp_path, "missing.json", lambda g: g["8"].update(class_type="WanVideoDecodeTurbo"))
    provider = ComfyUIVideoProvider(make_jobs(), text_workflow=missing, image_workflow=None)
    with pytest.raises(ProviderInvalidRequest, match="node WanVideoDecodeTurbo does not exist"):
        await provider.submit(request(ref="job-2"))
    assert not comfyui_server.pending and not comfyui_server.history


async def test_an_execution_error_fails_the_job_with_comfyuis_reason(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.fail_next = Failure()
    remote = await video.submit(request())
    with pytest.raises(GenerationFailed) as caught:
        await finish(video, remote.id)
    assert "out of GPU memory" in caught.value.message and caught.value.remote_code == "torch.OutOfMemoryError"
    assert not caught.value.retryable
    # A new attempt for the same job uses the next id: the failed entry never answers for it.
    again = await video.submit(request())
    assert again.id == prompt_ids("video", "job-1")[1] and len(comfyui_server.prompt_posts()) == 2
    assert (await finish(video, again.id)).status is RemoteStatus.COMPLETED


async def test_refused_credentials_are_not_configured(
    make_jobs: Callable[..., ComfyUIJobs], comfyui_server: ComfyUIServer, tmp_path: Path
) -> None:
    comfyui_server.required_headers = {"Authorization": "Bearer s3cret"}
    wrong = ComfyUIVideoProvider(make_jobs(Authorization="Bearer nope"), text_workflow=T2V, image_workflow=None)
    with pytest.raises(NotConfigured):
        await wrong.submit(request())
    right = ComfyUIVideoProvider(make_jobs(Authorization="Bearer s3cret"), text_workflow=T2V, image_workflow=None)
    remote = await right.submit(request(ref="job-2"))
    await until(lambda: right.client.connected)  # the websocket carries the header too
    assert (await finish(right, remote.id)).status is RemoteStatus.COMPLETED
    assert all(r.headers.get("Authorization") == "Bearer s3cret" for r in comfyui_server.requests[1:])


# --- never twice: adoption by our own id ------------------------------------------------------------


async def test_a_second_submit_of_a_live_job_adopts_it(video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer) -> None:
    comfyui_server.paused = True
    first = await video.submit(request())
    second = await video.submit(request())
    assert second.id == first.id and len(comfyui_server.prompt_posts()) == 1


async def test_find_remote_finds_the_prompt_by_id_at_once_and_proves_absence_after_the_grace(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    assert video.proves_absence
    comfyui_server.paused = True
    remote = await video.submit(request())

    def queue_reads(since: int) -> list[Recorded]:
        return [r for r in comfyui_server.requests[since:] if r.method == "GET" and r.path == "/queue"]

    before = len(comfyui_server.requests)
    found = await video.find_remote("job-1", request=request(), sent_at=time.time())
    assert found is not None and found.id == remote.id and found.status is RemoteStatus.QUEUED
    assert len(queue_reads(before)) == 1, "a hit is answered from the first look: no grace period"
    before, sent_at = len(comfyui_server.requests), time.time()
    assert await video.find_remote("job-never-sent", request=request(ref="job-never-sent"), sent_at=sent_at) is None
    reads = queue_reads(before)
    grace = video.jobs.absence_grace
    assert len(reads) == 2 and reads[1].at >= sent_at + grace, (
        f"a miss counts only from a look after the grace ({grace}s from the create) for requests in flight: "
        f"looked at {[round(r.at - sent_at, 3) for r in reads]}"
    )


async def test_a_server_that_ignores_our_prompt_id_is_searched_by_job_id(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.honour_prompt_id = False
    remote = await video.submit(request())
    assert remote.id != prompt_ids("video", "job-1")[0]
    assert (await finish(video, remote.id)).status is RemoteStatus.COMPLETED
    found = await video.find_remote("job-1", request=request(), sent_at=time.time() - 1)
    assert found is not None and found.id == remote.id and found.status is RemoteStatus.COMPLETED


# --- cancel ------------------------------------------------------------------------------------------


async def test_cancel_a_running_prompt_with_the_jobs_api(video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer) -> None:
    comfyui_server.hold_at_step = 2
    remote = await video.submit(request())
    await until(lambda: comfyui_server.step == 1)
    await video.cancel(remote.id)
    assert comfyui_server.calls("POST", f"/api/jobs/{remote.id}/cancel")
    with pytest.raises(RemoteCancelled):
        await finish(video, remote.id)
    messages = [m[0] for m in comfyui_server.history[remote.id]["status"]["messages"]]
    assert "execution_interrupted" in messages


async def test_cancel_on_an_older_server_deletes_from_the_queue_or_interrupts_only_our_prompt(
    video: ComfyUIVideoProvider, comfyui_server: ComfyUIServer
) -> None:
    comfyui_server.legacy = True
    comfyui_server.hold_at_step = 2
    running = await video.submit(request(ref="job-a"))
    waiting = await video.submit(request(ref="job-b"))
    await until(lambda: comfyui_server.step == 1)
    await video.cancel(waiting.id)
    assert comfyui_server.calls("POST", "/queue")[-1].json == {"delete": [waiting.id]}
    assert not comfyui_server.calls("POST", "/interrupt"), "the running prompt is someone else's"
    assert (await video.poll(waiting.id)).status is RemoteStatus.CANCELLED
    await video.cancel(running.id)
    assert comfyui_server.calls("POST", "/interrupt")[-1].json == {"prompt_id": running.id}
    with pytest.raises(RemoteCancelled):
        await finish(video, running.id)
