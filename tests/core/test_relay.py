"""Progress across processes, media paths across machines, and the operator's view of both.

Two apps on one data directory stand for a worker and a gateway (each with its own store
connection, bus and runner, like two processes). What is checked: the events the gateway's
adapters would receive, the rows and signals in the store, and the CLI's output.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.cli import main
from bot.config import load_settings
from bot.core.errors import MediaMissing
from bot.core.events import EventBus
from bot.core.heartbeat import Heartbeat
from bot.core.media_paths import MediaPaths
from bot.core.models import EventKind, GenerateRequest, JobKind, JobStatus, Origin, ProgressEvent
from bot.core.relay import Relay, SignalPublisher
from storage.jobs import JobStore
from tests.apps import FAST

pytestmark = pytest.mark.timeout(60)

ORIGIN = Origin(platform="cli", user_id="local")


async def until(check: Any, timeout: float = 10.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def worker_and_gateway(settings: Any) -> tuple[App, App, SignalPublisher, Relay, list[ProgressEvent]]:
    worker = await open_app(settings)
    worker.runner.poll_policy = FAST
    worker.runner.deliverers["cli"] = _deliver_nowhere
    publisher = SignalPublisher(worker.store, worker.bus)
    publisher.start()
    gateway = await open_app(load_settings())
    gateway.service.runner = None
    relay = Relay(gateway.store, gateway.bus, wait_seconds=0.05, sweep_seconds=0.2, error_pause=0.05)
    await relay.start()
    seen: list[ProgressEvent] = []

    async def record(event: ProgressEvent) -> None:
        seen.append(event)

    gateway.bus.subscribe(record)
    return worker, gateway, publisher, relay, seen


async def _deliver_nowhere(job: Any) -> None:
    return None


async def close(*apps: App, publisher: SignalPublisher | None = None, relay: Relay | None = None) -> None:
    if relay is not None:
        await relay.stop()
    if publisher is not None:
        await publisher.stop()
    for app in apps:
        await app.close()


async def test_a_workers_events_reach_the_gateways_bus_in_order_with_their_progress(settings: Any) -> None:
    worker, gateway, publisher, relay, seen = await worker_and_gateway(settings)
    try:
        await worker.runner.start(resume=False)
        job = await worker.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
        await worker.runner.wait(job.id)
        await until(lambda: any(e.kind is EventKind.COMPLETED for e in seen), what="the completed event at the gateway")
        kinds = [e.kind for e in seen if e.job.id == job.id]
        assert kinds[0] is EventKind.QUEUED and kinds[-1] is EventKind.COMPLETED and kinds.count(EventKind.COMPLETED) == 1
        # In order; a state change read after the job ended is dropped as stale (the ending follows).
        order = [EventKind.QUEUED, EventKind.STARTED, EventKind.PROGRESS, EventKind.DELIVERING, EventKind.COMPLETED]
        ranks = [order.index(k) for k in kinds if k is not EventKind.PROGRESS]
        assert ranks == sorted(ranks), kinds
        done = seen[-1]
        assert done.job.status is JobStatus.COMPLETED and done.job.output_path and Path(done.job.output_path).is_file()
        assert publisher.published >= len(kinds)
    finally:
        await close(worker, gateway, publisher=publisher, relay=relay)


async def test_the_relay_resumes_from_its_cursor_after_a_store_error_without_skipping(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, gateway, publisher, relay, seen = await worker_and_gateway(settings)
    try:
        job = await gateway.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
        # The queued signal, and the job's place in line (read from the store's order) after it.
        last = await gateway.store.last_signal_id()
        await until(lambda: relay.cursor >= last and not relay._order_due, what="the queued signal and the place in line")
        await gateway.bus.drain()
        assert seen[-1].kind is EventKind.QUEUED and seen[-1].position == 1
        shown = len(seen)
        real_get = gateway.store.get
        failures = {"left": 2}

        async def flaky_get(job_id: str) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise sqlite3.OperationalError("database is locked")
            return await real_get(job_id)

        monkeypatch.setattr(gateway.store, "get", flaky_get)
        for k in range(5):
            await worker.store.publish(job.id, "progress", {"progress": 10 * (k + 1), "message": f"tick {k}"})
        await until(lambda: len(seen) == shown + 5, what="five progress events after two failed reads")
        assert [e.progress for e in seen[shown:]] == [10, 20, 30, 40, 50]
        assert [e.message for e in seen[shown:]] == [f"tick {k}" for k in range(5)]
        assert failures["left"] == 0
    finally:
        await close(worker, gateway, publisher=publisher, relay=relay)


async def test_an_ending_nobody_signalled_is_found_by_the_sweep(settings: Any) -> None:
    """A worker killed between its last write and its signal: the gateway still shows the end."""
    worker, gateway, publisher, relay, seen = await worker_and_gateway(settings)
    try:
        job = await gateway.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
        await until(lambda: any(e.job.id == job.id for e in seen), what="the queued signal")
        await worker.store.update(job.id, status=JobStatus.FAILED, error_message="it broke", finished_at=time.time() - 5)
        await until(lambda: any(e.kind is EventKind.FAILED for e in seen), what="the sweep")
        assert seen[-1].job.id == job.id and seen[-1].message == "it broke"
    finally:
        await close(worker, gateway, publisher=publisher, relay=relay)


async def test_the_publisher_keeps_every_state_change_and_only_the_newest_pending_tick(settings: Any) -> None:
    store = await JobStore.open(Path(settings.core.data_dir) / "videobot.sqlite3")
    bus = EventBus()
    publisher = SignalPublisher(store, bus)
    publisher.start()
    try:
        app = await open_app(settings)
        job = await app.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
        await app.close()
        start = await store.last_signal_id()
        # A burst faster than the store: ticks coalesce, state changes and their order stay.
        for kind, progress in [(EventKind.STARTED, 0), *[(EventKind.PROGRESS, p) for p in range(1, 60)], (EventKind.DELIVERING, 100),
                               (EventKind.PROGRESS, 100), (EventKind.COMPLETED, 100)]:  # fmt: skip
            bus.publish(ProgressEvent(kind=kind, job=job, progress=progress))
        await publisher.drain()
        signals = [s for s in await store.signals_after(start) if s.job_id == job.id]
        kinds = [s.kind for s in signals]
        assert kinds[0] == "started" and kinds[-3:] == ["delivering", "progress", "completed"]
        ticks = [s.payload["progress"] for s in signals if s.kind == "progress"]
        assert ticks == sorted(ticks) and ticks[-2] == 59, ticks
    finally:
        await publisher.stop()
        await bus.close()
        await store.close()


def test_media_paths_are_stored_relative_and_read_under_each_machines_own_mount(tmp_path: Path) -> None:
    here, there = MediaPaths(tmp_path / "a" / "media"), MediaPaths(tmp_path / "b" / "mnt")
    stored = here.to_store(str(here.root / "ab12cd34" / "video.mp4"))
    assert stored == "ab12cd34/video.mp4"
    assert there.from_store(stored) == str(there.root / "ab12cd34" / "video.mp4")
    assert here.from_store("/old/absolute/video.mp4") == "/old/absolute/video.mp4"  # rows from before
    assert here.to_store("/elsewhere/input.png") == "/elsewhere/input.png"


async def test_jobs_keep_media_paths_relative_in_the_database_and_absolute_in_memory(app: App, settings: Any) -> None:
    job = await app.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
    done = await app.runner.wait(job.id)
    assert done.output_path == str(app.media.root / job.id / "video.mp4") and Path(done.output_path).is_file()
    with sqlite3.connect(Path(settings.core.data_dir) / "videobot.sqlite3") as conn:
        row = conn.execute("SELECT output_path, thumbnail_path FROM jobs WHERE id = ?", (job.id,)).fetchone()
    assert row == (f"{job.id}/video.mp4", f"{job.id}/thumb.jpg")
    remix = await app.service.remix(job.id, "the same kite at night", ORIGIN)
    assert remix.state["source_video"] == done.output_path  # absolute for the runner
    finished = await app.runner.wait(remix.id)
    assert finished.status is JobStatus.COMPLETED


async def test_a_worker_without_the_media_volume_fails_a_remix_naming_the_missing_file(app: App) -> None:
    job = await app.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
    await app.runner.wait(job.id)
    remix = await app.service.remix(job.id, "the same kite at night", ORIGIN)  # stored before the file goes
    Path(remix.state["source_video"]).unlink()
    failed = await app.runner.wait(remix.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == MediaMissing.code
    assert failed.error_message == (
        f"The source video is not on this worker's media volume: {job.id}/video.mp4; mount VIDEOBOT_MEDIA_DIR on every worker."
    )


async def test_status_lists_live_processes_and_the_queue(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app = await open_app(settings)
    try:
        beat = Heartbeat(app.store, worker_id=app.runner.owner, role="worker", held=lambda: 3, interval=1.0)
        await beat.beat()
        app.service.runner = None  # stored for a worker, as a gateway does: a "queued" signal
        queued = await app.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
        assert [s.kind for s in await app.store.signals_after(0)] == ["queued"]
        pruner = Heartbeat(app.store, worker_id="pruner", role="worker", held=lambda: 0, keep_signals=0.0)
        await asyncio.sleep(0.01)
        await pruner.beat()  # the first beat prunes; nothing is kept here
        await app.store.drop_worker("pruner")
        assert await app.store.signals_after(0) == []
    finally:
        await app.close()  # the runner was never started: the job stays queued
    assert queued.status is JobStatus.QUEUED
    assert await asyncio.to_thread(main, ["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (worker,) = report["workers"]
    assert worker["role"] == "worker" and worker["held"] == 3 and worker["alive"] and worker["pid"] == beat.pid
    assert report["queue"]["queued"] == 1 and report["queue"]["oldest_queued_age"] >= 0
    assert await asyncio.to_thread(main, ["status"]) == 0
    text = capsys.readouterr().out
    assert "processes alive: 1" in text and "worker" in text and "queue: 1 queued" in text


async def test_show_names_the_runner_of_each_event(app: App, capsys: pytest.CaptureFixture[str]) -> None:
    job = await app.service.submit(GenerateRequest(prompt="a kite", seconds=1, size="320x180"), ORIGIN)
    await app.runner.wait(job.id)
    await app.close()
    assert await asyncio.to_thread(main, ["show", job.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    by_runner = [e for e in shown["events"] if e["status"] == "running"]
    assert by_runner and by_runner[0]["runner_pid"] == app.runner.holder.pid
    assert by_runner[0]["runner_host"] == app.runner.holder.host.split("~")[0]
    assert await asyncio.to_thread(main, ["show", job.id]) == 0
    assert f"[pid {app.runner.holder.pid} on " in capsys.readouterr().out
    assert job.kind is JobKind.GENERATE


async def test_detached_generate_and_story_are_stored_unleased_and_made_by_a_worker(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`--detach` only stores (queued, no lease, a "queued" signal); a worker claims and makes both,
    the story's scenes included (made by the same worker, in order)."""
    assert await asyncio.to_thread(main, ["generate", "a fox in the snow", "--seconds", "1", "--size", "320x180", "--detach"]) == 0
    assert await asyncio.to_thread(main, ["story", "a kite rises | it lands", "--seconds", "1", "--size", "320x180", "--detach"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 2
    app = await open_app(load_settings())
    app.runner.poll_policy = FAST
    from bot.cli.run import Worker

    worker = Worker(app)
    try:
        stored = [await app.store.get(job_id) for job_id in ids]
        assert all(j is not None and j.status is JobStatus.QUEUED and j.lease_owner is None for j in stored)
        signals = await app.store.signals_after(0)
        assert {s.job_id for s in signals if s.kind == "queued"} == set(ids)
        await worker.start()
        done = await asyncio.wait_for(asyncio.gather(*(app.runner.wait(job_id) for job_id in ids)), 60)
        assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
        story = done[1]
        assert story.kind is JobKind.STORY and Path(story.output_path or "").is_file()
        scenes = [c for c in await app.store.children(story.id) if c.state.get("story_scene")]
        assert len(scenes) == 2 and all(c.status is JobStatus.COMPLETED for c in scenes)
        assert worker.claimer.claimed == 2  # the two stored jobs; the scenes were the story's own
    finally:
        await worker.stop()
        await app.close()


def test_a_gateway_needs_a_chat_platform(settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--role", "gateway"]) == 78
    assert "A gateway serves Slack or Discord" in capsys.readouterr().err


async def test_a_cancel_at_the_gateway_stops_the_workers_job_at_once(settings: Any, tmp_path: Path) -> None:
    """The gateway marks the job cancelled and signals it; the worker holding it stops it (and the
    provider's work) on that signal, not at its next lease renewal (a third of 60 s here)."""
    from bench.sleep_provider import sleep_pipeline
    from bot.cli.run import Worker
    from bot.core.models import Actor

    worker_app = await open_app(settings)
    worker_app.registry.register("sleep", lambda: sleep_pipeline(60.0, tmp_path))
    worker_app.runner.poll_policy = FAST
    gateway = await open_app(load_settings())
    gateway.registry.register("sleep", lambda: sleep_pipeline(60.0, tmp_path))  # the same pipelines everywhere
    gateway.service.runner = None
    worker = Worker(worker_app)
    seen: list[ProgressEvent] = []
    relay = Relay(gateway.store, gateway.bus, wait_seconds=0.05)

    async def record(event: ProgressEvent) -> None:
        seen.append(event)

    gateway.bus.subscribe(record)
    try:
        await relay.start()
        await worker.start()
        job = await gateway.service.submit(GenerateRequest(prompt="a long pan", pipeline="sleep", seconds=1, size="128x72"), ORIGIN)
        await until(lambda: any(e.kind is EventKind.PROGRESS for e in seen), what="the worker to start the job")
        asked = time.monotonic()
        await gateway.service.cancel(job.id, Actor(user_id="local"))
        ended = await asyncio.wait_for(worker_app.runner.wait(job.id), 10)
        assert time.monotonic() - asked < 5, "the worker waited for its lease renewal"
        assert ended.status is JobStatus.CANCELLED
        notes = [e["detail"] or "" for e in await gateway.store.events(job.id)]
        assert any("remote" in n and "cancelled at sleep" in n for n in notes), notes
        await until(lambda: any(e.kind is EventKind.CANCELLED for e in seen), what="the gateway to show the cancel")
    finally:
        await relay.stop()
        await worker.stop()
        await worker_app.close()
        await gateway.close()
