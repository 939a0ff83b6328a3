"""The web gallery as an attacker tries it, over real HTTP: where a personal link may send a browser,
forged, altered, expired and swapped grants, the signing key (weak, half-written, raced, rotated),
what a job page tells members, and a costly request confirmed in the browser (Runway emulator)."""
from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import re
import stat
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from yarl import URL

from bot.app import App
from bot.cli import main
from bot.config import CoreSettings, Settings
from bot.core.errors import NeedsConfirmation
from bot.core.grants import read, secret, sign
from bot.core.models import Actor, GenerateRequest, Job, JobStatus
from bot.core.signing_key import MIN_BYTES, WeakSigningKey, rotate
from tests.apps import AppMaker
from tests.fakes.runway_server import SECRET as RUNWAY_SECRET, RunwayServer
from tests.web.web_support import ALICE, BOB, MALLORY, OPERATOR, PUBLIC_URL, WEB_SECRET, Served, Visitor, link_for, serve

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@dataclass
class Site:
    app: App
    served: Served
    visitors: list[Visitor]

    async def visitor(self, origin: object = None, **grant: bool) -> Visitor:
        person = Visitor(self.served)
        self.visitors.append(person)
        if origin is not None:
            response = await person.open_link(link_for(self.app, origin, **grant))  # type: ignore[arg-type]
            assert response.status == 303, await response.text()
        return person


async def _site(apps: AppMaker, **env: str | None) -> AsyncIterator[Site]:
    app = await apps.make(**env)
    served = await serve(app)
    site = Site(app, served, [])
    try:
        yield site
    finally:
        for person in site.visitors:
            await person.close()
        await served.close()
        await apps.close()


@pytest.fixture
async def site(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    """The gallery with its key in the data dir (no VIDEOBOT_WEB_SECRET): what a rotation replaces."""
    apps = AppMaker(monkeypatch, {"VIDEOBOT_PUBLIC_URL": PUBLIC_URL, "VIDEOBOT_WEB_SECRET": None}, platforms=("cli", "slack", "discord"))
    async for s in _site(apps):
        yield s


@pytest.fixture
async def runway_site(settings: Settings, monkeypatch: pytest.MonkeyPatch, runway_server: RunwayServer) -> AsyncIterator[Site]:
    """Runway behind the gallery, every paid request above the confirm threshold."""
    apps = AppMaker(monkeypatch, {
        "VIDEOBOT_PUBLIC_URL": PUBLIC_URL, "VIDEOBOT_WEB_SECRET": WEB_SECRET, "VIDEOBOT_CONFIRM_ABOVE_USD": "0.01",
        "RUNWAYML_API_SECRET": RUNWAY_SECRET, "RUNWAYML_BASE_URL": runway_server.base_url, "RUNWAYML_POLL_SECONDS": "0.01",
    }, platforms=("cli", "slack", "discord"))  # fmt: skip
    async for s in _site(apps):
        yield s


async def local_job(app: App, prompt: str, origin: object) -> Job:
    job = await app.service.submit(GenerateRequest(prompt=prompt, seconds=1, size="256x144", pipeline="local"), origin)  # type: ignore[arg-type]
    return await asyncio.wait_for(app.runner.wait(job.id), 30)


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "SLACK_", "DISCORD_", "FAL_", "BFL_", "COMFYUI_"))}
    return {**clean, "VIDEOBOT_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


async def videobot(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """`videobot ARGS` as the operator types it: a real process, its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=data_dir.parent, env=env_for(data_dir, **env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- where a link may land --------------------------------------------------------------------

#: `next` values as they cross the wire (percent-encoded), each an attempt to leave the site.
CRAFTED = [
    "/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example", "/%0d%0a/evil.example", "%09//evil.example",
    "/%2509/evil.example", "/%00/evil.example", "/%7f/evil.example", "/%C2%85/evil.example",
    "//evil.example", "%2F%2Fevil.example", "/%2Fevil.example", "///evil.example",
    "/%5Cevil.example", "%5C%5Cevil.example", "/%5C/evil.example", "/%255C/evil.example",
    "https://evil.example/", "https:%2F%2Fevil.example", "http:evil.example", "javascript:alert(1)",
    "evil.example", "/%E3%80%80/evil.example", "/jobs/../..//evil.example", "/jobs/x%0d%0aSet-Cookie:%20a=b",
    "/jobs/%2F%2Fevil.example", "/%20/evil.example", "/?next=//evil.example%09",
]


def as_a_browser_reads(location: str, base: str) -> str:
    """Where a browser goes for a Location header: tabs and newlines dropped, backslashes read as slashes."""
    cleaned = re.sub(r"[\t\n\r]", "", location).replace("\\", "/").strip(" \x00-\x1f")
    return urljoin(base + "/", cleaned)


async def test_next_only_lands_on_the_gallerys_own_pages(site: Site) -> None:
    job = await local_job(site.app, "a harbour at dawn", ALICE)
    token = link_for(site.app, ALICE)
    host = urlsplit(site.served.url).netloc
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:

        async def landing(next_value: str) -> str:
            url = URL(f"{site.served.url}{token}?next={next_value}", encoded=True)  # sent exactly as crafted
            async with browser.get(url, allow_redirects=False) as response:
                assert response.status == 303, (next_value, response.status)
                return response.headers["Location"]

        for crafted in CRAFTED:
            location = await landing(crafted)
            assert location == "/", (crafted, location)
            assert urlsplit(as_a_browser_reads(location, site.served.url)).netloc == host, crafted
        # Our own pages stay reachable through a link.
        for local in ("/", f"/jobs/{job.id}", "/usage", "/?q=harbour"):
            assert await landing(local) == local
        assert await landing("%2F%3Fq%3Dharbour%26status%3Dcompleted") == "/?q=harbour&status=completed"


# --- grants: altered, expired, swapped ---------------------------------------------------------


async def test_altered_expired_and_swapped_grants_are_refused(site: Site) -> None:
    await local_job(site.app, "a quiet canal", ALICE)
    alice = await site.visitor(ALICE)
    cookie = next(c for c in alice.session.cookie_jar if c.key == "videobot_session").value
    key = secret(site.app.settings.core)
    session = read(cookie, key, kind="session")
    base = site.served.url

    async def status_with_cookie(value: str, path: str = "/") -> int:
        async with aiohttp.ClientSession() as plain, plain.get(base + path, headers={"Cookie": f"videobot_session={value}"}, allow_redirects=False) as r:
            return r.status

    assert await status_with_cookie(cookie) == 200, "the cookie as set works"
    # One byte changed, in the body or in the signature: refused.
    body, _, mac = cookie.partition(".")
    for i in (0, len(body) // 2, len(body) - 1):
        flipped = body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
        assert await status_with_cookie(f"{flipped}.{mac}") == 401, i
    for i in (0, len(mac) - 2):
        flipped = mac[:i] + ("A" if mac[i] != "A" else "B") + mac[i + 1 :]
        assert await status_with_cookie(f"{body}.{flipped}") == 401, i
    # A rewritten grant (operator!) with the old signature: refused.
    forged = sign(session.model_copy(update={"operator": True}), key).partition(".")[0] + "." + mac
    assert await status_with_cookie(forged) == 401
    # Expired: the browser may still send it; the server refuses it.
    stale = sign(session.model_copy(update={"expires_at": time.time() - 1}), key)
    assert await status_with_cookie(stale) == 401
    # A personal link is not a session, and a session is not a link.
    link = link_for(site.app, ALICE).removeprefix("/g/")
    assert await status_with_cookie(link) == 401
    assert await status_with_cookie(link, "/jobs/x") == 401
    assert (await alice.get(f"/g/{cookie}")).status == 401
    # And a grant signed with another key (another deployment's) means nothing here.
    assert await status_with_cookie(sign(session, b"k" * 48)) == 401


# --- the signing key -------------------------------------------------------------------------


def one_line_refusal(code: int, out: str, err: str) -> str:
    assert code != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("videobot: "), err
    return lines[0]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The `videobot` entry point in this process (argparse main, settings from the environment)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("content", [b"", b"\n", b"x" * (MIN_BYTES - 1), b"0123456789abcdef\n"], ids=["empty", "newline", "31-bytes", "cut-short"])
def test_a_short_key_file_is_refused_at_start_with_one_line(settings: Settings, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    data = Path(settings.core.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    (data / "web_secret").write_bytes(content)
    for args in (("web", "--link-only"), ("web", "--port", "0")):  # a link, and serving: both refuse before anything
        line = one_line_refusal(*cli(capsys, *args))
        assert "web_secret" in line and f"at least {MIN_BYTES}" in line, line
    assert (data / "web_secret").read_bytes() == content, "the file is left for the operator to look at"


async def test_a_real_process_refuses_an_empty_key_file_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "web_secret").write_bytes(b"")
    line = one_line_refusal(*await videobot(data, "web", "--port", "0"))
    assert "holds a signing key of 0 bytes" in line


def test_a_short_env_secret_is_refused_at_start_with_one_line(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDEOBOT_WEB_SECRET", "short-secret")
    monkeypatch.setenv("VIDEOBOT_PUBLIC_URL", PUBLIC_URL)
    # `videobot run` signs /gallery links with it: it refuses too, before any chat is served.
    for args in (("web", "--link-only"), ("web", "--port", "0"), ("run",)):
        line = one_line_refusal(*cli(capsys, *args))
        assert "VIDEOBOT_WEB_SECRET is 12 bytes" in line and f"at least {MIN_BYTES}" in line, line
    monkeypatch.setenv("VIDEOBOT_WEB_SECRET", "y" * MIN_BYTES)
    code, out, err = cli(capsys, "web", "--link-only")
    assert code == 0 and "/g/" in out, err
    with pytest.raises(WeakSigningKey):
        secret(CoreSettings(data_dir=settings.core.data_dir, web_secret="z" * (MIN_BYTES - 1)))  # type: ignore[call-arg]


def test_a_full_disk_leaves_no_key_file_and_says_so_in_one_line(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = Path(settings.core.data_dir)

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as disk:
        disk.setattr(os, "fsync", full_disk)  # the write is only sure once fsync says so
        line = one_line_refusal(*cli(capsys, "web", "--link-only"))
        assert "No space left on device" in line and "web_secret" in line, line
        assert sorted(p.name for p in data.iterdir() if "web_secret" in p.name) == [], "no empty or half key, no temp file"
    code, out, err = cli(capsys, "web", "--link-only")  # space again: a whole key is made
    assert code == 0 and "/g/" in out, err
    assert len((data / "web_secret").read_bytes()) >= MIN_BYTES


def _first_start(data_dir: str, barrier: object, out: object) -> None:
    """One process's first start: wait for the others, then take the key (made by whoever is first)."""
    barrier.wait()  # type: ignore[attr-defined]
    try:
        out.put(secret(CoreSettings(data_dir=Path(data_dir))))  # type: ignore[attr-defined, call-arg]
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(repr(exc))  # type: ignore[attr-defined]


def test_concurrent_first_starts_make_one_key_that_all_use(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")  # separate processes, started in milliseconds
    for round_ in range(10):
        data = tmp_path / f"data{round_}"
        n = 6
        barrier, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_first_start, args=(str(data), barrier, out)) for _ in range(n)]
        for p in procs:
            p.start()
        try:
            keys = [out.get(timeout=60) for _ in procs]
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
        assert all(isinstance(k, bytes) for k in keys), keys
        assert len(set(keys)) == 1 and len(keys[0]) >= MIN_BYTES, keys
        path = data / "web_secret"
        assert path.read_bytes().strip() == keys[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in data.iterdir()) == ["web_secret"], "no temp file left behind"


async def test_rotate_secret_ends_every_session_and_link(site: Site) -> None:
    job = await local_job(site.app, "a lantern on a jetty", ALICE)
    data = Path(site.app.settings.core.data_dir)
    old_key = (data / "web_secret").read_bytes()
    alice = await site.visitor(ALICE)
    operator = await site.visitor(OPERATOR, operator=True)
    unopened = link_for(site.app, BOB)
    assert job.id in await alice.text("/") and (await operator.get("/admin")).status == 200

    code, out, err = await videobot(data, "web", "--rotate-secret")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "every gallery session and personal link" in lines[0] and str(data / "web_secret") in lines[0], out

    new_key = (data / "web_secret").read_bytes()
    assert new_key != old_key and len(new_key.strip()) >= MIN_BYTES
    assert stat.S_IMODE((data / "web_secret").stat().st_mode) == 0o600
    assert sorted(p.name for p in data.iterdir() if p.name.startswith((".web_secret", "web_secret"))) == ["web_secret"]
    # The gallery kept running: every session it handed out and every link made before are void.
    for person in (alice, operator):
        for path in ("/", f"/jobs/{job.id}", f"/media/{job.id}/file"):
            assert (await person.get(path)).status == 401, path
    assert (await alice.post(f"/jobs/{job.id}/delete")).status == 401
    assert (await (await site.visitor()).get(unopened)).status == 401
    # A link made now (as /gallery makes it) works.
    fresh = await site.visitor(ALICE)
    assert job.id in await fresh.text("/")


async def test_a_key_file_cut_short_under_a_running_gallery_stops_it_with_503(site: Site) -> None:
    alice = await site.visitor(ALICE)
    link = link_for(site.app, ALICE)
    path = Path(site.app.settings.core.data_dir) / "web_secret"
    short = path.with_name("short")
    short.write_bytes(b"tiny")
    os.replace(short, path)
    for person in (alice, await site.visitor()):
        response = await person.get("/")
        assert response.status == 503 and "signing key is not usable" in await response.text()
    assert (await alice.get(link)).status == 503, "no link opens: nothing is signed with a short key"
    # A whole key again (as `--rotate-secret` writes it): the gallery serves, the old session is void.
    rotate(site.app.settings.core)
    assert (await alice.get("/")).status == 401
    assert (await (await site.visitor(ALICE)).get("/")).status == 200


def test_rotate_secret_refuses_when_the_key_comes_from_the_environment(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDEOBOT_WEB_SECRET", WEB_SECRET)
    line = one_line_refusal(*cli(capsys, "web", "--rotate-secret"))
    assert "VIDEOBOT_WEB_SECRET" in line and "restart" in line
    assert not (Path(settings.core.data_dir) / "web_secret").exists()


# --- what a job page tells whom ------------------------------------------------------------------


async def test_provider_error_text_and_remote_ids_only_for_the_operator(runway_site: Site, runway_server: RunwayServer) -> None:
    app = runway_site.app
    # Runway fails the first task with its own code; the bot tries once more, and that one succeeds.
    runway_server.next_tasks = [(["PENDING", "FAILED"], "INTERNAL.BAD_OUTPUT.CODE01")]
    with pytest.raises(NeedsConfirmation) as asked:
        await app.service.submit(GenerateRequest(prompt="a runway lighthouse", seconds=5, pipeline="runway"), ALICE)
    job = await asyncio.wait_for(app.runner.wait((await app.service.confirm(asked.value.token, Actor.of(ALICE))).id), 30)
    assert job.status is JobStatus.COMPLETED
    failed_ids = job.state["failed_remote_ids"]
    remote_ids = [*failed_ids, job.remote_id]
    assert len(remote_ids) == 2 and all(remote_ids)
    secrets_on_page = [*remote_ids, "INTERNAL.BAD_OUTPUT", "retry after"]

    operator = await runway_site.visitor(OPERATOR, operator=True)
    page = await operator.text(f"/jobs/{job.id}")
    for needle in secrets_on_page:
        assert needle in page, f"the operator sees {needle}"

    for person in (await runway_site.visitor(ALICE), await runway_site.visitor(ALICE, admin=True), await runway_site.visitor(BOB)):
        page = await person.text(f"/jobs/{job.id}")
        for needle in secrets_on_page:
            assert needle not in page, f"{needle} shown to a member or tenant admin"
        assert page.count('<li><time>') == (await operator.text(f"/jobs/{job.id}")).count('<li><time>'), "every event, without its note"


# --- a costly request confirmed in the browser ----------------------------------------------------


async def test_confirm_route_needs_csrf_and_the_owner_and_decline_creates_nothing(runway_site: Site, runway_server: RunwayServer) -> None:
    app = runway_site.app
    with pytest.raises(NeedsConfirmation) as asked:
        await app.service.submit(GenerateRequest(prompt="a runway kite", seconds=5, pipeline="runway"), ALICE)
    original = await asyncio.wait_for(app.runner.wait((await app.service.confirm(asked.value.token, Actor.of(ALICE))).id), 30)
    assert original.status is JobStatus.COMPLETED
    creates = len(runway_server.creates())
    jobs = len(await app.store.list())

    alice = await runway_site.visitor(ALICE)

    async def offer() -> str:
        page = await alice.post(f"/jobs/{original.id}/reroll")
        assert page.status == 200, await page.text()
        found = re.search(r'action="/confirm/(\w+)"', await page.text())
        assert found is not None and "Confirm" in await page.text()
        return found.group(1)

    async def nothing_made() -> None:
        assert len(runway_server.creates()) == creates and len(await app.store.list()) == jobs

    token = await offer()
    await nothing_made()
    # No CSRF token, or a wrong one: 403. No session: 401.
    assert (await alice.post(f"/confirm/{token}", csrf=False)).status == 403
    real, alice.csrf = alice.csrf, "forged"
    assert (await alice.post(f"/confirm/{token}")).status == 403
    assert (await alice.post(f"/confirm/{token}", {"decline": "1"})).status == 403
    alice.csrf = real
    assert (await (await runway_site.visitor()).post(f"/confirm/{token}", csrf=False)).status == 401
    # Someone else, with their own valid session and token: refused, in the tenant or outside it.
    bob = await runway_site.visitor(BOB)
    refused = await bob.post(f"/confirm/{token}")
    assert refused.status == 403 and "Only the person who asked" in await refused.text()
    assert (await bob.post(f"/confirm/{token}", {"decline": "1"})).status == 403
    assert (await (await runway_site.visitor(MALLORY)).post(f"/confirm/{token}")).status in (403, 404)
    await nothing_made()

    # The owner declines: nothing is made, and the offer cannot be confirmed afterwards.
    declined = await alice.post(f"/confirm/{token}", {"decline": "1"})
    assert declined.status == 303 and declined.headers["Location"] == "/"
    assert (await alice.post(f"/confirm/{token}")).status == 409
    await nothing_made()

    # The owner confirms a new offer: exactly one job, one create at Runway, even when sent twice.
    token = await offer()
    made = await alice.post(f"/confirm/{token}")
    assert made.status == 303, await made.text()
    child_id = made.headers["Location"].removeprefix("/jobs/")
    assert (await alice.post(f"/confirm/{token}")).status == 409
    child = await asyncio.wait_for(app.runner.wait(child_id), 30)
    assert child.status is JobStatus.COMPLETED and child.parent_id == original.id and child.origin.user_id == ALICE.user_id
    assert len(runway_server.creates()) == creates + 1
    assert len(await app.store.list()) == jobs + 1
