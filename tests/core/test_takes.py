"""Takes through the real core (service, admission, runner, store) on the `sora` pipeline, the real
openai SDK talking to the loopback emulator: a set of N takes made at once, priced and reserved
as one request, one contact sheet of their middle frames; a failing take leaves the others;
Use N posts one take alone (free); More like N starts new takes from take N's first frame."""
from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.core.errors import JobStateError, LimitReached, NeedsConfirmation
from bot.core.models import Actor, GenerateRequest, Job, JobKind, JobStatus, Origin
from bot.core.take_set import TAKE, middle_frame, results_of
from bot.core.takes import more_like, take_rows, use_take
from providers.errors import InvalidRequest
from providers.media import first_frame
from providers.openai_common import SORA_DEPRECATION
from providers.polling import PollPolicy
from tests.fakes.openai_server import OpenAIEmulator
from tests.helpers import assert_video

pytestmark = [pytest.mark.filterwarnings(f"ignore:{SORA_DEPRECATION}:DeprecationWarning"), pytest.mark.timeout(90)]

CLI = Origin(platform="cli", user_id="tester")
SLACK = Origin(platform="slack", workspace_id="T1", channel_id="C1", user_id="U1")
ASK = GenerateRequest(prompt="a lighthouse at dusk", pipeline="sora", seconds=4, size="1280x720", takes=3)


@pytest.fixture
async def app(settings: Settings, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("VIDEOBOT_MAX_RUNNING_PER_USER", "4")
    monkeypatch.setenv("VIDEOBOT_CONFIRM_ABOVE_USD", "")
    app = await open_app(load_settings())
    app.runner.poll_policy = PollPolicy(interval=0.01, min_interval=0.01, timeout=60, backoff_base=0.01, backoff_max=0.2)
    app.delivered: list[Job] = []  # type: ignore[attr-defined]

    async def deliver(job: Job) -> None:
        app.delivered.append(job)  # type: ignore[attr-defined]

    app.runner.deliverers["cli"] = deliver
    app.runner.deliverers["slack"] = deliver
    await app.runner.start()
    try:
        yield app
    finally:
        await app.close()


async def done(app: App, job: Job) -> Job:
    return await asyncio.wait_for(app.runner.wait(job.id), 40)


async def takes_of(app: App, job: Job) -> list[Job]:
    return sorted((c for c in await app.store.children(job.id) if c.state.get(TAKE)), key=lambda c: c.state[TAKE])


def diff(a: Image.Image, b: Image.Image) -> float:
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def sheet_tiles(sheet: Path, n: int) -> list[Image.Image]:
    """The n pictures of a contact sheet (write_contact_sheet's layout: 360 px tiles, 6 px gaps)."""
    image = Image.open(sheet).convert("RGB")
    gap, width = 6, 360
    height = image.height - 2 * gap - 18
    return [image.crop((gap + i * (width + gap), gap, gap + i * (width + gap) + width, gap + height)) for i in range(n)]


async def test_three_takes_one_request_one_sheet(app: App, openai_server: OpenAIEmulator) -> None:
    single = await done(app, await app.service.submit(ASK.model_copy(update={"takes": None}), CLI))
    creates_before = len(openai_server.creates)
    job = await app.service.submit(ASK, CLI)
    assert job.kind is JobKind.TAKES and job.cost_estimate == pytest.approx(3 * (single.cost_estimate or 0))
    job = await done(app, job)
    assert job.status is JobStatus.COMPLETED, job.error_message
    takes = await takes_of(app, job)
    assert [t.state[TAKE] for t in takes] == [1, 2, 3] and all(t.status is JobStatus.COMPLETED for t in takes)
    assert len(openai_server.creates) - creates_before == 3, "each take created once at the provider"
    assert len({t.params.seed for t in takes}) == 3 and [t.params.seed for t in takes] == job.state["seeds"]
    for t in takes:
        assert_video(t.output_path, width=128, height=72, seconds=4)  # type: ignore[arg-type]
    # Delivered once, as a set: the takes are not posted on their own.
    assert [d.id for d in app.delivered] == [single.id, job.id]  # type: ignore[attr-defined]
    # The contact sheet: each tile is its take's middle frame, in order.
    assert job.output_path and Path(job.output_path).name == "contact-sheet.png"
    tiles = sheet_tiles(Path(job.output_path), 3)
    for i, take in enumerate(takes):
        own = diff(tiles[i], middle_frame(Path(take.output_path or "")))
        others = [diff(tiles[i], middle_frame(Path(o.output_path or ""))) for o in takes if o is not take]
        # Only the number's label box differs from the take's own frame.
        assert own < 8 and all(own * 3 < o for o in others), (i, own, others)
    # Paid once: the set settles to what its takes billed; take rows count nothing of their own.
    assert job.cost_actual == pytest.approx(sum(t.cost_actual or 0 for t in takes))
    usage = await app.service.usage(CLI)
    assert usage.user_spent == pytest.approx((single.cost_actual or 0) + (job.cost_actual or 0))
    rows = await take_rows(app.service, job)
    assert [(r["take"], r["seed"], r["status"]) for r in rows] == [(t.state[TAKE], t.params.seed, "completed") for t in takes]


async def test_a_failing_take_leaves_the_others(app: App, openai_server: OpenAIEmulator) -> None:
    openai_server.fail("create", 400, code="invalid_value", message="the emulator refuses this one")
    job = await done(app, await app.service.submit(ASK, CLI))
    assert job.status is JobStatus.COMPLETED, job.error_message
    results = results_of(job)
    assert sorted(r.ok for r in results) == [False, True, True]
    failed = next(r for r in results if not r.ok)
    assert failed.status is JobStatus.FAILED and "refuses this one" in (failed.error or "")
    takes = await takes_of(app, job)
    # Only what reached a provider is paid: the refused create cost nothing.
    assert job.cost_actual == pytest.approx(sum(t.cost_actual or 0 for t in takes if t.status is JobStatus.COMPLETED))
    assert job.cost_actual == pytest.approx(2 * (job.cost_estimate or 0) / 3)


async def test_use_posts_one_take_alone_once_and_free(app: App, openai_server: OpenAIEmulator) -> None:
    job = await done(app, await app.service.submit(ASK, CLI))
    creates = len(openai_server.creates)
    spent = (await app.service.usage(CLI)).user_spent
    take = await use_take(app.service, job.id, 2, CLI)
    assert take.state[TAKE] == 2 and take.status is JobStatus.DELIVERING
    take = await done(app, take)
    assert take.status is JobStatus.COMPLETED and take.error_code is None
    assert [d.id for d in app.delivered][-1] == take.id  # type: ignore[attr-defined]
    assert len(openai_server.creates) == creates and (await app.service.usage(CLI)).user_spent == pytest.approx(spent)
    with pytest.raises(JobStateError, match="already posted"):
        await use_take(app.service, job.id, 2, CLI)
    with pytest.raises(InvalidRequest, match="takes 1 to 3"):
        await use_take(app.service, job.id, 4, CLI)


async def test_more_like_starts_from_the_takes_first_frame(app: App, openai_server: OpenAIEmulator) -> None:
    job = await done(app, await app.service.submit(ASK, CLI))
    take1 = (await takes_of(app, job))[0]
    before = len(openai_server.creates)
    more = await done(app, await more_like(app.service, job.id, 1, CLI))
    assert more.status is JobStatus.COMPLETED and more.kind is JobKind.TAKES and more.parent_id == job.id
    creates = openai_server.creates[before:]
    assert len(creates) == 3
    wanted = first_frame(Path(take1.output_path or ""))
    for create in creates:
        sent = Image.open(io.BytesIO(create.files["input_reference"]["data"]))
        assert diff(sent, wanted) < 8, "the image-to-video request carries take 1's first frame"
    other = first_frame(Path((await takes_of(app, job))[1].output_path or ""))
    assert diff(Image.open(io.BytesIO(creates[0].files["input_reference"]["data"])), other) > diff(
        Image.open(io.BytesIO(creates[0].files["input_reference"]["data"])), wanted
    )


async def test_admission_sees_the_whole_set(app: App, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequest, match="at most 4 takes"):
        await app.service.submit(ASK.model_copy(update={"takes": 5}), CLI)
    with pytest.raises(InvalidRequest, match="at least one take"):
        await app.service.submit(ASK.model_copy(update={"takes": 0}), CLI)
    assert await app.store.list(limit=10) == [] and openai_server.creates == []
    # The confirm threshold sees all takes: one take under it, three over it.
    await app.store.put_setting("slack", "T1", "tenant", "", "confirm_above_usd", 1.0, by="test")
    single = await app.service.submit(ASK.model_copy(update={"takes": None}), SLACK)
    assert (single.cost_estimate or 0) < 1.0
    with pytest.raises(NeedsConfirmation) as offer:
        await app.service.submit(ASK, SLACK)
    assert offer.value.estimate == pytest.approx(3 * (single.cost_estimate or 0))
    # The tenant's `takes` default applies when the request names none.
    await app.store.put_setting("slack", "T1", "tenant", "", "confirm_above_usd", None, by="test")
    await app.store.put_setting("slack", "T1", "tenant", "", "takes", 2, by="test")
    default = await app.service.submit(ASK.model_copy(update={"takes": None}), SLACK)
    assert default.kind is JobKind.TAKES and default.state["takes"] == 2
    # The budget sees the set as one request: room for one take is not room for three.
    await app.store.put_setting("slack", "T1", "tenant", "", "user_budget_usd", (single.cost_estimate or 0) * 4, by="test")
    with pytest.raises(Exception, match="budget"):
        await app.service.submit(ASK, SLACK)
    await done(app, single)
    await done(app, default)


def _unused(*_: Any) -> None:
    return None


async def _running(app: App, job: Job, openai_server: OpenAIEmulator) -> list[Job]:
    """Until every take of the set runs at the provider."""
    for _ in range(2000):
        takes = await takes_of(app, job)
        if len(takes) == 3 and all(t.status is JobStatus.RUNNING and t.remote_id for t in takes):
            return takes
        await asyncio.sleep(0.01)
    raise AssertionError("the takes never all ran")


async def test_cancel_stops_every_take_and_their_remote_jobs(app: App, openai_server: OpenAIEmulator) -> None:
    openai_server.hold = True
    job = await app.service.submit(ASK, CLI)
    takes = await _running(app, job, openai_server)
    cancelled = await app.service.cancel(job.id, Actor(user_id="tester", platform="cli"))
    assert cancelled.status is JobStatus.CANCELLED
    for take in takes:
        ended = await asyncio.wait_for(app.runner.wait(take.id), 20)
        assert ended.status is JobStatus.CANCELLED
    deleted = {c.path.rsplit("/", 1)[-1] for c in openai_server.calls("delete")}
    assert deleted == {t.remote_id for t in takes}, "each take's remote job is stopped"
    assert app.delivered == []  # type: ignore[attr-defined]


async def test_the_queue_limit_counts_a_set_as_one_request(app: App, openai_server: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    app.service.admission.settings.max_queued_per_user = 2
    openai_server.hold = True
    first = await app.service.submit(ASK, CLI)
    await _running(app, first, openai_server)  # four unfinished rows: the set and its three takes
    second = await app.service.submit(ASK.model_copy(update={"takes": None}), CLI)
    with pytest.raises(LimitReached, match="2 jobs waiting or running"):
        await app.service.submit(ASK.model_copy(update={"takes": None}), CLI)
    openai_server.hold = False
    assert (await done(app, first)).status is JobStatus.COMPLETED
    assert (await done(app, second)).status is JobStatus.COMPLETED


async def test_image_takes_make_one_sheet_of_stills(app: App) -> None:
    job = await done(app, await app.service.submit(GenerateRequest(prompt="a red kite", kind=JobKind.IMAGE, pipeline="local-image", takes=2), CLI))
    assert job.status is JobStatus.COMPLETED and job.kind is JobKind.TAKES, job.error_message
    takes = await takes_of(app, job)
    assert [t.kind for t in takes] == [JobKind.IMAGE, JobKind.IMAGE] and takes[0].params.seed != takes[1].params.seed
    tiles = sheet_tiles(Path(job.output_path or ""), 2)
    for i, take in enumerate(takes):
        own = diff(tiles[i], Image.open(take.output_path or ""))
        assert own < 8, (i, own)
