from __future__ import annotations

from bot.app import App
from bot.core.models import EventKind, GenerateRequest, JobKind, JobStatus, Origin, ProgressEvent
from tests.helpers import assert_video


async def test_generate_gives_mp4_of_requested_size_and_duration(app: App) -> None:
    seen: list[ProgressEvent] = []

    async def record(event: ProgressEvent) -> None:
        seen.append(event)

    app.bus.subscribe(record)
    job = await app.service.submit(
        GenerateRequest(prompt="a teal coupe crossing a desert at noon", seconds=2, size="320x180"), Origin()
    )
    assert job.status is JobStatus.QUEUED
    done = await app.runner.wait(job.id)
    await app.bus.drain()

    assert done.status is JobStatus.COMPLETED
    assert_video(done.output_path, width=320, height=180, seconds=2)
    assert done.thumbnail_path and done.thumbnail_path.endswith(".jpg")
    stored = await app.store.get(job.id)
    assert stored is not None and stored.status is JobStatus.COMPLETED and stored.progress == 100
    statuses = [e["status"] for e in await app.store.events(job.id)]
    assert statuses == ["queued", "submitting", "running", "downloading", "delivering", "completed"]
    kinds = [e.kind for e in seen if e.job.id == job.id]
    assert kinds[0] is EventKind.QUEUED and kinds[-1] is EventKind.COMPLETED
    assert EventKind.STARTED in kinds and EventKind.DELIVERING in kinds
    progress = [e.progress for e in seen if e.job.id == job.id and e.kind is EventKind.PROGRESS]
    assert progress and progress == sorted(progress), f"progress must be reported and never go back: {progress}"


async def test_remix_and_extend_keep_lineage(app: App) -> None:
    origin = Origin()
    base = await app.service.submit(GenerateRequest(prompt="a red fox in snow", seconds=2, size="256x144", seed=7), origin)
    base = await app.runner.wait(base.id)
    remix = await app.service.remix(base.id, "a blue fox in snow", origin)
    extend = await app.service.extend(base.id, origin, seconds=1)
    remix, extend = await app.runner.wait(remix.id), await app.runner.wait(extend.id)

    assert remix.kind is JobKind.REMIX and remix.parent_id == base.id and remix.prompt == "a blue fox in snow"
    assert remix.params.seed == base.params.seed
    assert_video(remix.output_path, width=256, height=144, seconds=2)
    assert extend.kind is JobKind.EXTEND and extend.parent_id == base.id
    assert_video(extend.output_path, width=256, height=144, seconds=3)
    assert [c.id for c in await app.store.children(base.id)] == [remix.id, extend.id]
