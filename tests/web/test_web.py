"""The web gallery over real HTTP: grants, tenants, Range requests, CSRF, the buttons, search,
usage and the providers' diagnostics (against the OpenAI and Runway emulators)."""
from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import App
from bot.config import Settings
from bot.core.commands import parse_command
from bot.core.dispatch import run_command
from bot.core.models import Actor, GenerateRequest, Job, JobKind, JobStatus, Origin
from bot.core.stories import StoryRequest, submit_story
from bot.core.views import status_view
from bot.adapters.discord_bot.render import result_content
from tests.apps import AppMaker
from tests.fakes.openai_server import OpenAIEmulator
from tests.fakes.runway_server import SECRET as RUNWAY_SECRET, RunwayServer
from tests.web.web_support import ALICE, BOB, MALLORY, OPERATOR, PUBLIC_URL, WEB_SECRET, Served, Visitor, link_for, serve

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API is scheduled:DeprecationWarning")


@dataclass
class World:
    app: App
    served: Served
    alice: Job  # tenant TA, channel C1
    bob: Job  # tenant TA, another user
    mallory: Job  # another tenant (a Discord guild)
    visitors: list[Visitor]

    async def visitor(self, origin: Origin | None = None, **grant: bool) -> Visitor:
        person = Visitor(self.served)
        self.visitors.append(person)
        if origin is not None:
            response = await person.open_link(link_for(self.app, origin, **grant))
            assert response.status == 303, await response.text()
            assert person.csrf
        return person


async def make(app: App, prompt: str, origin: Origin, **kw: object) -> Job:
    job = await app.service.submit(GenerateRequest(prompt=prompt, seconds=1, size="256x144", pipeline="local", **kw), origin)  # type: ignore[arg-type]
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


@pytest.fixture
async def world(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIEmulator, runway_server: RunwayServer
) -> AsyncIterator[World]:
    apps = AppMaker(monkeypatch, {
        "VIDEOBOT_WEB_SECRET": WEB_SECRET, "VIDEOBOT_PUBLIC_URL": PUBLIC_URL,
        "OPENAI_API_KEY": openai_server.api_key, "OPENAI_BASE_URL": openai_server.base_url,
        "RUNWAYML_API_SECRET": RUNWAY_SECRET, "RUNWAYML_BASE_URL": runway_server.base_url, "RUNWAYML_POLL_SECONDS": "0.01",
    }, platforms=("cli", "slack", "discord"))  # fmt: skip
    app = await apps.make()
    served = await serve(app)
    alice = await make(app, "a lighthouse in a storm at night", ALICE)
    bob = await make(app, "a red kite over the sea", BOB)
    mallory = await make(app, "a secret lighthouse blueprint", MALLORY)
    world = World(app, served, alice, bob, mallory, [])
    try:
        yield world
    finally:
        for person in world.visitors:
            await person.close()
        await served.close()
        await apps.close()


# --- access -------------------------------------------------------------------------------------


async def test_nothing_is_reachable_without_a_grant(world: World) -> None:
    stranger = await world.visitor()
    for path in ("/", f"/jobs/{world.alice.id}", f"/media/{world.alice.id}/file", f"/media/{world.alice.id}/thumb", "/usage", "/admin"):
        response = await stranger.get(path)
        assert response.status == 401, path
    page = await stranger.get("/")
    assert "/gallery" in await page.text() and "lighthouse" not in await page.text()
    assert (await stranger.post(f"/jobs/{world.alice.id}/delete", csrf=False)).status == 401
    # A forged, altered or expired link grants nothing.
    assert (await stranger.get("/g/not-a-token")).status == 401
    token = link_for(world.app, ALICE).removeprefix("/g/")
    body, _, mac = token.partition(".")
    assert (await stranger.get(f"/g/{body}x.{mac}")).status == 401
    assert (await stranger.get(link_for(world.app, ALICE, expires_at=time.time() - 1))).status == 401
    assert (await stranger.get("/")).status == 401
    assert world.alice.deleted_at is None and (await world.app.store.get(world.alice.id)).deleted_at is None  # type: ignore[union-attr]


async def test_a_personal_link_sets_an_httponly_samesite_session_for_its_tenant(world: World) -> None:
    alice = await world.visitor()
    response = await alice.open_link(link_for(world.app, ALICE) + "?next=//evil.example/")
    assert response.status == 303 and response.headers["Location"] == "/"  # never sent elsewhere
    cookie = response.headers["Set-Cookie"]
    assert "videobot_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = await alice.text("/")
    assert world.alice.id in page and world.bob.id in page, "the tenant's jobs, everyone's"
    assert world.mallory.id not in page and "blueprint" not in page, "never another tenant's"
    assert "Usage" not in page, "admin pages only for admins"
    assert (await alice.get("/usage")).status == 403 and (await alice.get("/admin")).status == 403
    for header in ("Content-Security-Policy", "X-Content-Type-Options"):
        assert header in (await alice.get("/")).headers


async def test_another_tenants_job_file_and_page_are_404(world: World) -> None:
    alice = await world.visitor(ALICE)
    other = world.mallory.id
    for path in (f"/jobs/{other}", f"/media/{other}/file", f"/media/{other}/thumb", "/jobs/nosuchjob", f"/jobs/{other[:5]}"):
        assert (await alice.get(path)).status == 404, path
    for action in ("delete", "reroll"):
        assert (await alice.post(f"/jobs/{other}/{action}")).status == 404
    assert (await world.app.store.get(other)).deleted_at is None  # type: ignore[union-attr]
    # The other tenant sees its own job (and only it).
    mallory = await world.visitor(MALLORY)
    page = await mallory.text("/")
    assert other in page and world.alice.id not in page
    assert (await mallory.get(f"/jobs/{world.alice.id}")).status == 404


# --- files ----------------------------------------------------------------------------------


async def test_video_is_served_with_range_requests(world: World) -> None:
    alice = await world.visitor(ALICE)
    data = Path(world.alice.output_path or "").read_bytes()
    size = len(data)
    url = f"/media/{world.alice.id}/file"
    whole = await alice.get(url)
    assert whole.status == 200 and whole.headers["Content-Type"] == "video/mp4" and whole.headers["Accept-Ranges"] == "bytes"
    assert int(whole.headers["Content-Length"]) == size and await whole.read() == data

    part = await alice.get(url, headers={"Range": "bytes=100-299"})
    assert part.status == 206 and part.headers["Content-Range"] == f"bytes 100-299/{size}"
    assert await part.read() == data[100:300]
    suffix = await alice.get(url, headers={"Range": "bytes=-500"})
    assert suffix.status == 206 and suffix.headers["Content-Range"] == f"bytes {size - 500}-{size - 1}/{size}"
    assert await suffix.read() == data[-500:]
    open_ended = await alice.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert open_ended.status == 206 and await open_ended.read() == data[-10:]
    beyond = await alice.get(url, headers={"Range": f"bytes={size + 10}-{size + 20}"})
    assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{size}"

    thumb = await alice.get(f"/media/{world.alice.id}/thumb")
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/jpeg" and (await thumb.read())[:2] == b"\xff\xd8"
    assert (await alice.get(f"/media/{world.alice.id}/elsewhere")).status == 404


# --- buttons --------------------------------------------------------------------------------


async def test_state_changes_need_a_post_with_the_csrf_token(world: World) -> None:
    alice = await world.visitor(ALICE)
    before = len(await world.app.store.children(world.alice.id))
    assert (await alice.post(f"/jobs/{world.alice.id}/reroll", csrf=False)).status == 403
    alice.csrf, real = "forged", alice.csrf
    assert (await alice.post(f"/jobs/{world.alice.id}/delete")).status == 403
    alice.csrf = real
    assert (await alice.get(f"/jobs/{world.alice.id}/delete")).status == 405, "GET never changes anything"
    assert len(await world.app.store.children(world.alice.id)) == before
    assert (await world.app.store.get(world.alice.id)).deleted_at is None  # type: ignore[union-attr]
    assert (await alice.post("/logout", csrf=False)).status == 403


async def test_delete_by_someone_else_is_403_and_by_the_owner_removes_the_files(world: World) -> None:
    bob = await world.visitor(BOB)
    page = await bob.text(f"/jobs/{world.alice.id}")
    assert "Delete" not in page, "buttons only for the owner and admins"
    refused = await bob.post(f"/jobs/{world.alice.id}/delete")
    assert refused.status == 403 and "Only the person who asked" in await refused.text()
    assert (await world.app.store.get(world.alice.id)).deleted_at is None  # type: ignore[union-attr]

    alice = await world.visitor(ALICE)
    assert "Delete" in await alice.text(f"/jobs/{world.alice.id}")
    done = await alice.post(f"/jobs/{world.alice.id}/delete")
    assert done.status == 303 and done.headers["Location"] == "/", "back to the grid: the job's page is gone"
    job = await world.app.store.get(world.alice.id)
    assert job is not None and job.deleted_at is not None and not Path(world.alice.output_path or "").exists()
    assert (await alice.get(f"/media/{job.id}/file")).status == 404
    assert job.id not in await alice.text("/"), "deleted jobs leave the grid"
    # A tenant admin may delete anyone's job in the tenant (the core's rule, as in chat).
    admin = await world.visitor(ALICE, admin=True)
    assert (await admin.post(f"/jobs/{world.bob.id}/delete")).status == 303


async def test_a_deleted_jobs_page_and_files_are_404_for_everyone(world: World) -> None:
    app = world.app
    child = await asyncio.wait_for(app.runner.wait((await app.service.reroll(world.alice.id, ALICE)).id), 30)
    alice, admin, operator = await world.visitor(ALICE), await world.visitor(ALICE, admin=True), await world.visitor(OPERATOR, operator=True)
    gone = world.alice.id
    paths = (f"/jobs/{gone}", f"/media/{gone}/file", f"/media/{gone}/thumb")
    for path in paths:
        assert (await alice.get(path)).status == 200, path
    assert f'href="/jobs/{child.id}"' in await alice.text(f"/jobs/{gone}")
    assert (await alice.post(f"/jobs/{gone}/delete")).status == 303
    for person in (alice, admin, operator):
        for path in paths:
            assert (await person.get(path)).status == 404, path
        assert (await person.post(f"/jobs/{gone}/reroll")).status == 404
    page = await alice.text(f"/jobs/{child.id}")
    assert f'href="/jobs/{gone}"' not in page, "no link to a page that is gone"


async def test_reroll_remix_extend_from_the_page_make_children_posted_where_the_original_was(world: World) -> None:
    alice = await world.visitor(ALICE)
    made: list[Job] = []
    for action, form in (("reroll", {}), ("remix", {"prompt": "the same lighthouse at dawn"}), ("extend", {"seconds": "1"})):
        response = await alice.post(f"/jobs/{world.alice.id}/{action}", form)
        assert response.status == 303, (action, await response.text())
        new_id = response.headers["Location"].removeprefix("/jobs/")
        made.append(await asyncio.wait_for(world.app.runner.wait(new_id), 30))
    kinds = [j.kind for j in made]
    assert kinds == [JobKind.VARIATION, JobKind.REMIX, JobKind.EXTEND]
    for job in made:
        assert job.status is JobStatus.COMPLETED and job.parent_id == world.alice.id
        # Same platform, tenant and channel as the original: its deliverer posts it there.
        assert (job.origin.platform, job.origin.workspace_id, job.origin.channel_id, job.origin.user_id) == ("slack", "TA", "C1", "UALICE")
    assert made[1].prompt == "the same lighthouse at dawn"
    page = await alice.text(f"/jobs/{world.alice.id}")
    assert all(f"/jobs/{j.id}" in page for j in made)
    child = await alice.text(f"/jobs/{made[0].id}")
    assert re.search(rf'id="parent" href="/jobs/{world.alice.id}"', child)
    # An empty remix prompt is the core's refusal, shown as a page.
    bad = await alice.post(f"/jobs/{world.alice.id}/remix", {"prompt": ""})
    assert bad.status == 400 and "prompt is empty" in await bad.text()


async def test_a_storys_page_offers_redo_and_add_scene(world: World) -> None:
    app = world.app
    story = await submit_story(app.service, StoryRequest(script="a kite rises | it loops", seconds=1, pipeline="local", size="256x144"), ALICE)
    story = await asyncio.wait_for(app.runner.wait(story.id), 60)
    alice = await world.visitor(ALICE)
    page = await alice.text(f"/jobs/{story.id}")
    assert "Redo scene" in page and "Add scene" in page and "Scene 2: it loops" in html.unescape(page)
    redo = await alice.post(f"/jobs/{story.id}/redo", {"scene": "2"})
    assert redo.status == 303, await redo.text()
    again = await asyncio.wait_for(app.runner.wait(redo.headers["Location"].removeprefix("/jobs/")), 60)
    assert again.kind is JobKind.STORY and again.status is JobStatus.COMPLETED
    assert (await alice.post(f"/jobs/{story.id}/redo", {"scene": "two"})).status == 400


# --- the grid ---------------------------------------------------------------------------------


async def test_search_filters_and_pages(world: World) -> None:
    app = world.app
    for i in range(27):
        await app.store.create(world.bob.model_copy(update={"id": f"zz{i:04d}", "created_at": 1_700_000_000 + i, "prompt": f"filler clip number {i}"}))
    alice = await world.visitor(ALICE)
    found = await alice.text("/?q=lighthouse")
    assert world.alice.id in found and world.bob.id not in found and world.mallory.id not in found
    assert world.alice.id in await alice.text("/?q=LIGHTHOU"), "a prefix, any case"
    assert world.alice.id in await alice.text("/?q=lighthouses+storms"), "stemmed words, all of them"
    assert world.alice.id not in await alice.text("/?q=lighthouse+kite")
    assert world.bob.id in await alice.text('/?q="kite*"(-'), "quotes and operators are no syntax, never an error"
    assert world.bob.id not in await alice.text("/?q=kite+OR+storm"), "OR is a word like the others"
    only_bob = await alice.text("/?user=UBOB")
    assert world.bob.id in only_bob and world.alice.id not in only_bob
    assert world.alice.id in await alice.text("/?pipeline=local&status=completed&channel=C1")
    assert world.alice.id not in await alice.text("/?status=failed")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    dated = await alice.text(f"/?from={today}&to={today}")
    assert world.alice.id in dated and "zz0003" not in dated
    assert (await alice.get("/?from=yesterday")).status == 400

    # Newest first, 24 a page, keyset cursor; the cards-only answer is what the page's script appends.
    first = await alice.text("/")
    ids = re.findall(r'data-job="(\w+)"', first)
    assert len(ids) == 24 and ids[:2] == [world.bob.id, world.alice.id]
    after = re.search(r'data-after="([^"]+)"', first)
    assert after is not None
    more = await alice.get(f"/?after={after.group(1)}&partial=1")
    rest = re.findall(r'data-job="(\w+)"', await more.text())
    assert len(rest) == 5 and not set(rest) & set(ids) and "X-Next-After" not in more.headers
    assert rest[-1] == "zz0000"


# --- admins -------------------------------------------------------------------------------------


async def test_usage_page_for_admins_draws_svg_charts(world: World) -> None:
    admin = await world.visitor(ALICE, admin=True)
    page = await admin.text("/usage")
    assert page.count("<svg") >= 3 and "alice" in page and "bob" in page and "local" in page
    assert "mallory" not in page, "the tenant's usage only"
    assert "100%" in page  # every local job succeeded
    operator = await world.visitor(OPERATOR, operator=True)
    everyone = await operator.text("/usage?days=7")
    assert "mallory" in everyone and "alice" in everyone
    assert world.mallory.id in await operator.text("/"), "the operator sees every tenant"


async def test_diagnostics_list_show_and_delete_remote_videos_of_the_tenant(world: World, openai_server: OpenAIEmulator, runway_server: RunwayServer) -> None:
    app = world.app

    async def remote(prompt: str, origin: Origin, pipeline: str) -> Job:
        job = await app.service.submit(GenerateRequest(prompt=prompt, seconds=4 if pipeline == "sora" else 5, pipeline=pipeline), origin)
        return await asyncio.wait_for(app.runner.wait(job.id), 30)

    ours = await remote("a sora lighthouse", ALICE, "sora")
    theirs = await remote("a sora secret", MALLORY, "sora")
    task = await remote("a runway kite", ALICE, "runway")
    assert ours.remote_id and theirs.remote_id and task.remote_id

    admin = await world.visitor(ALICE, admin=True)
    page = await admin.text("/admin")
    assert ours.remote_id in page and theirs.remote_id not in page, "a tenant's admin sees the tenant's remote videos"
    assert task.remote_id in page
    assert (await admin.get(f"/admin/remote/openai/{theirs.remote_id}")).status == 404
    shown = html.unescape(await admin.text(f"/admin/remote/openai/{ours.remote_id}"))
    assert '"status": "completed"' in shown and f"/jobs/{ours.id}" in shown
    assert '"status": "SUCCEEDED"' in html.unescape(await admin.text(f"/admin/remote/runway/{task.remote_id}"))

    assert (await admin.post(f"/admin/remote/openai/{ours.remote_id}/delete", csrf=False)).status == 403
    assert (await admin.post(f"/admin/remote/openai/{theirs.remote_id}/delete")).status == 404
    gone = await admin.post(f"/admin/remote/openai/{ours.remote_id}/delete")
    assert gone.status == 303
    assert [c.path for c in openai_server.calls("delete")] == [f"/v1/videos/{ours.remote_id}"]
    assert (await admin.post(f"/admin/remote/runway/{task.remote_id}/delete")).status == 303
    assert runway_server.calls("DELETE", f"/v1/tasks/{task.remote_id}")

    user = await world.visitor(BOB)
    assert (await user.get("/admin")).status == 403
    assert (await user.post(f"/admin/remote/runway/{task.remote_id}/delete")).status == 403
    operator = await world.visitor(OPERATOR, operator=True)
    everything = await operator.text("/admin")
    assert theirs.remote_id in everything and "Runners" in everything
    assert "no videobot run process has reported" in everything
    # A worker's heartbeat: the operator sees the process, as `videobot status` lists it.
    await world.app.store.heartbeat("w-1", host="render-box-7", pid=4242, role="worker", started_at=time.time(), held=3)
    everything = await operator.text("/admin")
    assert "render-box-7" in everything and "4242" in everything and ">worker<" in everything and "alive" in everything
    assert "render-box-7" not in await admin.text("/admin"), "a tenant admin does not see the deployment's processes"


# --- chat: /gallery and "Open in gallery" -------------------------------------------------------


async def test_gallery_command_answers_a_personal_link_that_opens_the_tenant(world: World) -> None:
    app = world.app
    reply = await run_command(app.service, parse_command("/gallery"), BOB, Actor.of(BOB))
    link = re.search(r"(http://gallery\.test)(/g/\S+)", reply.text)
    assert link is not None and "only for you" in reply.text and reply.job is None
    bob = await world.visitor()
    assert (await bob.open_link(link.group(2))).status == 303
    page = await bob.text("/")
    assert world.bob.id in page and world.mallory.id not in page and "Usage" not in page
    admin_reply = await run_command(app.service, parse_command("/gallery"), BOB, Actor.of(BOB, is_admin=True))
    admin = await world.visitor()
    await admin.open_link(re.search(r"/g/\S+", admin_reply.text).group(0))  # type: ignore[union-attr]
    assert (await admin.get("/usage")).status == 200


async def test_gallery_command_without_a_public_url_says_how_to_set_it_up(settings: Settings, app: App) -> None:
    reply = await run_command(app.service, parse_command("/gallery"), ALICE, Actor.of(ALICE))
    assert "not set up" in reply.text and "VIDEOBOT_PUBLIC_URL" in reply.text


async def test_result_payloads_carry_open_in_gallery(world: World) -> None:
    job = world.alice
    view = status_view(job, public_url=PUBLIC_URL)
    assert view.gallery_url == f"{PUBLIC_URL}/jobs/{job.id}"
    assert status_view(job).gallery_url is None
    assert f"[Open in gallery](<{PUBLIC_URL}/jobs/{job.id}>)" in result_content(job, None, gallery_url=view.gallery_url)
    assert "gallery" not in result_content(job, None)


async def test_a_set_of_takes_is_one_tile_and_its_page_lists_the_takes_with_use_and_more(world: World) -> None:
    app = world.app
    job = await make(app, "three kites over a beach", ALICE, takes=3)
    assert job.kind is JobKind.TAKES and job.status is JobStatus.COMPLETED, job.error_message
    takes = job.state["take_jobs"]
    alice = await world.visitor(ALICE)
    grid = await alice.text("/")
    # One tile for the set (its contact sheet; hovering plays take 1), none for its takes.
    assert f'href="/jobs/{job.id}"' in grid and not any(f'href="/jobs/{t}"' in grid for t in takes)
    assert f'poster="/media/{job.id}/thumb" data-src="/media/{takes[0]}/file"' in grid
    sheet = await alice.get(f"/media/{job.id}/thumb")
    assert sheet.status == 200 and (await sheet.read())[:8] == b"\x89PNG\r\n\x1a\n"
    page = html.unescape(await alice.text(f"/jobs/{job.id}"))
    for k, take in enumerate(takes, 1):
        assert f'src="/media/{take}/file"' in page and f"Use {k}" in page and f"More like {k}" in page
        assert f"seed {job.state['seeds'][k - 1]}" in page
    assert "Re-roll all" in page
    # Use 2 from the page: the same core action (take 2 posted alone, nothing made).
    used = await alice.post(f"/jobs/{job.id}/use", {"take": "2"})
    assert used.status == 303 and used.headers["Location"] == f"/jobs/{takes[1]}", await used.text()
    posted = await asyncio.wait_for(app.runner.wait(takes[1]), 30)
    assert posted.status is JobStatus.COMPLETED and posted.state.get("take_used") is True
    # More like 1: a new set whose parent is this one.
    more = await alice.post(f"/jobs/{job.id}/more", {"take": "1"})
    assert more.status == 303, await more.text()
    new = await asyncio.wait_for(app.runner.wait(more.headers["Location"].removeprefix("/jobs/")), 60)
    assert new.kind is JobKind.TAKES and new.parent_id == job.id and new.status is JobStatus.COMPLETED
    # Someone else may not Use the owner's takes.
    bob = await world.visitor(BOB)
    refused = await bob.post(f"/jobs/{job.id}/use", {"take": "3"})
    assert refused.status == 403
