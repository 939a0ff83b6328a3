"""The web gallery in a real browser: Debian's Chromium driven by Playwright against the served app.

A personal link is opened, the gallery shows the tenant's videos, a job page's <video> loads its
metadata with the right duration and seeks (the file is served with Range requests), and the
lineage link leads to the parent. Screenshots of the gallery and a job page are kept under
tests/artifacts/ (printed) for a person to look at.

Skipped with a reason where Chromium or Playwright is absent, except in CI (CI=1, true, True...),
where it fails instead.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App
from bot.config import Settings
from bot.core.models import GenerateRequest, Job, Origin
from bot.core.stories import StoryRequest, submit_story
from tests.apps import AppMaker
from tests.ci import skip_or_fail
from tests.web.web_support import ALICE, BOB, PUBLIC_URL, WEB_SECRET, Served, link_for, serve

CHROMIUM = Path(os.environ.get("VIDEOBOT_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is not None:
        skip_or_fail(missing, what="the browser test")


def _outcome() -> tuple[str, str]:
    """What `_need_browser` does: "fail", "skip" or "run", with its message (a skip is caught
    too, so a test expecting a failure fails when it skips)."""
    try:
        _need_browser()
    except pytest.fail.Exception as exc:
        return "fail", str(exc)
    except pytest.skip.Exception as exc:
        return "skip", str(exc)
    return "run", ""


@pytest.mark.parametrize("ci", ["1", "true", "True", "yes"])
def test_in_ci_a_missing_browser_fails_the_test(ci: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", ci)
    with monkeypatch.context() as no_chromium:
        no_chromium.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
        kind, message = _outcome()
        assert kind == "fail" and "the browser test must run" in message and "apt-get install chromium" in message, (kind, message)
    if CHROMIUM.exists():
        monkeypatch.setitem(sys.modules, "playwright.async_api", None)  # the package missing: its import fails
        kind, message = _outcome()
        assert kind == "fail" and "playwright" in message, (kind, message)


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_outside_ci_a_missing_browser_skips_with_the_reason(ci: str | None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    kind, message = _outcome()
    assert kind == "skip" and "apt-get install chromium" in message, (kind, message)


async def _make(app: App, prompt: str, origin: Origin, seconds: int = 2, **kw: object) -> Job:
    job = await app.service.submit(GenerateRequest(prompt=prompt, seconds=seconds, size="640x360", pipeline="local", **kw), origin)  # type: ignore[arg-type]
    return await asyncio.wait_for(app.runner.wait(job.id), 60)


@pytest.fixture
async def site(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[App, Served, dict[str, Job]]]:
    _need_browser()
    apps = AppMaker(monkeypatch, {"VIDEOBOT_WEB_SECRET": WEB_SECRET, "VIDEOBOT_PUBLIC_URL": PUBLIC_URL}, platforms=("cli", "slack"))
    app = await apps.make()
    jobs: dict[str, Job] = {}
    jobs["coupe"] = await _make(app, "a teal coupe crossing a desert at noon", ALICE, seconds=3)
    jobs["kite"] = await _make(app, "a red kite over a grey winter sea", BOB)
    jobs["reroll"] = await asyncio.wait_for(app.runner.wait((await app.service.reroll(jobs["coupe"].id, ALICE)).id), 60)
    story = await submit_story(app.service, StoryRequest(script="a lighthouse at dusk | its lamp turns on | a ship passes", seconds=1, pipeline="local", size="640x360"), ALICE)
    jobs["story"] = await asyncio.wait_for(app.runner.wait(story.id), 90)
    served = await serve(app)
    try:
        yield app, served, jobs
    finally:
        await served.close()
        await apps.close()


async def test_gallery_player_seek_and_lineage_in_chromium(site: tuple[App, Served, dict[str, Job]]) -> None:
    from playwright.async_api import async_playwright

    app, served, jobs = site
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # The personal link signs the browser in and lands on the gallery.
            await page.goto(served.url + link_for(app, ALICE))
            assert page.url == served.url + "/"
            cards = page.locator(".card")
            await cards.first.wait_for()
            shown = await cards.evaluate_all("cards => cards.map(c => c.dataset.job)")
            assert shown[0] == jobs["story"].id and set(shown) == {j.id for j in jobs.values()}
            # Thumbnails play on hover: the card's video gets its source and starts.
            await page.wait_for_function("() => [...document.images].every(i => i.complete)")
            coupe = page.locator(f'.card[data-job="{jobs["coupe"].id}"]')
            await coupe.hover()
            await page.wait_for_function(
                "id => { const v = document.querySelector(`.card[data-job='${id}'] video`); return v && !v.paused && v.currentTime > 0 }",
                arg=jobs["coupe"].id,
            )
            await page.mouse.move(5, 5)
            gallery_png = ARTIFACTS / "gallery.png"
            await page.screenshot(path=str(gallery_png), full_page=True)

            # A search narrows the grid.
            await page.fill("input[name=q]", "kite")
            await page.press("input[name=q]", "Enter")
            await page.wait_for_url("**/?q=kite")
            assert await page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.job)") == [jobs["kite"].id]

            # The re-roll's page: the player reads the metadata, reports the duration, and seeks.
            await page.goto(f"{served.url}/jobs/{jobs['reroll'].id}")
            duration = await page.evaluate(
                """() => new Promise((resolve, reject) => {
                    const v = document.getElementById('player');
                    const done = () => resolve(v.duration);
                    if (v.readyState >= 1) done(); else { v.addEventListener('loadedmetadata', done); v.addEventListener('error', () => reject('video error')); }
                })"""
            )
            assert abs(duration - 3.0) < 0.2, duration
            seeked = await page.evaluate(
                """() => new Promise(resolve => {
                    const v = document.getElementById('player');
                    v.addEventListener('seeked', () => resolve(v.currentTime), { once: true });
                    v.currentTime = 2.0;
                })"""
            )
            assert abs(seeked - 2.0) < 0.2, seeked
            frame_ready = "() => document.getElementById('player').readyState >= 2"
            await page.wait_for_function(frame_ready)
            job_png = ARTIFACTS / "job.png"
            await page.screenshot(path=str(job_png), full_page=True)

            # Lineage: the parent link opens the original.
            await page.click("#parent")
            await page.wait_for_url(f"**/jobs/{jobs['coupe'].id}")
            assert jobs["reroll"].id in await page.content()

            # A story's page shows its scenes in order and the storyboard.
            await page.goto(f"{served.url}/jobs/{jobs['story'].id}")
            scenes = await page.locator(".scenes .n").all_inner_texts()
            assert scenes == ["scene 1", "scene 2", "scene 3"]
            await page.wait_for_function("() => document.querySelector('img.storyboard').naturalWidth > 0")
            story_png = ARTIFACTS / "story.png"
            await page.screenshot(path=str(story_png), full_page=True)

            # An admin's usage page: charts drawn on the server.
            admin = await browser.new_page(viewport={"width": 1280, "height": 860})
            await admin.goto(served.url + link_for(app, ALICE, admin=True))
            await admin.goto(served.url + "/usage")
            assert await admin.locator("svg").count() >= 3
            usage_png = ARTIFACTS / "usage.png"
            await admin.screenshot(path=str(usage_png), full_page=True)
            assert errors == [], errors
        finally:
            await browser.close()
    for png in (gallery_png, job_png, story_png, usage_png):
        assert png.stat().st_size > 10_000
        print(f"screenshot: {png}")
