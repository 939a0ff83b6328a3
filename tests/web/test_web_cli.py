"""The gallery as the operator runs it: inside `videobot run` (VIDEOBOT_WEB_PORT) with the console's
`/gallery`, and `videobot web --link-only`; real processes."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "OPENAI_", "RUNWAYML_", "BFL_", "FAL_", "COMFYUI_", "SLACK_", "DISCORD_"))}
    clean.update({"VIDEOBOT_DATA_DIR": str(tmp_path / "data"), "VIDEOBOT_LOCAL_FPS": "12", "PYTHONPATH": str(ROOT), **extra})
    return clean


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str], timeout: float = 30) -> re.Match[str]:
    async def scan() -> re.Match[str]:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"output ended without {pattern!r}: {seen}")
            seen.append(line)
            if found := re.search(pattern, line):
                return found

    return await asyncio.wait_for(scan(), timeout)


async def test_videobot_run_serves_the_gallery_and_console_gallery_gives_an_operator_link(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env_for(tmp_path, VIDEOBOT_WEB_PORT=str(port)),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    seen: list[str] = []
    try:
        await read_until(proc.stdout, rf"web gallery on http://127\.0\.0\.1:{port}", seen)
        proc.stdin.write(b"/video a red kite over the sea --seconds 1 --size 256x144\n")
        job_id = (await read_until(proc.stdout, r"job ([a-z0-9]{8})", seen)).group(1)
        await read_until(proc.stdout, r"Done in", seen)
        proc.stdin.write(b"/gallery\n")
        link = (await read_until(proc.stdout, rf"http://127\.0\.0\.1:{port}(/g/\S+)", seen)).group(1)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            base = f"http://127.0.0.1:{port}"
            async with browser.get(base + link) as page:
                assert page.status == 200 and job_id in await page.text()
            async with browser.get(f"{base}/jobs/{job_id}") as page:
                text = await page.text()
            csrf = re.search(r'name="csrf" value="([^"]+)"', text)
            assert csrf is not None and "operator" in text
            # A re-roll from the page runs in this process at once (its runner has the job).
            async with browser.post(f"{base}/jobs/{job_id}/reroll", data={"csrf": csrf.group(1)}, allow_redirects=False) as made:
                assert made.status == 303
                child = made.headers["Location"].removeprefix("/jobs/")
            for _ in range(300):
                async with browser.get(f"{base}/jobs/{child}") as page:
                    if 'badge completed">completed' in await page.text():
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"re-roll {child} did not complete")
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0, seen
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_videobot_web_link_only_prints_a_signed_operator_link(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "web", "--link-only", cwd=tmp_path,
        env=env_for(tmp_path, VIDEOBOT_PUBLIC_URL="https://videos.example.org/"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert re.fullmatch(r"https://videos\.example\.org/g/[\w-]+\.[\w-]+\n", out.decode())
    secret = tmp_path / "data" / "web_secret"
    assert secret.exists() and secret.stat().st_mode & 0o077 == 0, "a made secret is kept private"
