"""Web gallery benchmark: page time with 10,000 jobs in the store, and memory while 20 clients
stream a 500 MB video (`--mb`: its size).

Run: `.venv/bin/python -m bench.gallery [--jobs 10000] [--requests 100] [--clients 20] [--mb 500]`.
The gallery runs as the real `videobot web` in its own process (its RSS is what is measured);
the store is filled directly (one transaction) with jobs across tenants, users, pipelines and
statuses, their prompts indexed by the FTS5 triggers as any insert is. Prints a table; not a test.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from bot.config import CoreSettings
from bot.core.grants import link_grant, sign
from bot.core.models import Actor, GenerateParams, Job, JobKind, JobStatus, Origin
from storage.jobs import JobStore

SECRET = "bench-web-secret-0123456789-abcdefghijklmnop"
WORDS = ("kite lighthouse coupe desert storm harbour lantern fox meadow neon city rain glacier "
         "orchard robot comet violin canyon tram market owl bridge sunrise dune ferry").split()  # fmt: skip
PIPELINES = ("local", "sora", "runway", "gpt-image+runway", "fal")
STATUSES = [JobStatus.COMPLETED] * 8 + [JobStatus.FAILED, JobStatus.CANCELLED]
TENANT = ("slack", "TBENCH")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(data: Path, count: int, mb: int = 500) -> tuple[str, Path]:
    """`count` jobs (80 % in the measured tenant), one real-looking `mb` MB file's job; returns its id."""
    store = await JobStore.open(data / "videobot.sqlite3")
    rng = random.Random(7)
    now = time.time()
    rows = []
    for i in range(count):
        ours = rng.random() < 0.8
        origin = Origin(
            platform=TENANT[0] if ours else "discord", workspace_id=TENANT[1] if ours else f"G{rng.randrange(5)}",
            channel_id=f"C{rng.randrange(8)}", user_id=f"U{rng.randrange(20):02d}", user_name=f"user{rng.randrange(20):02d}",
        )  # fmt: skip
        created = now - rng.uniform(0, 60 * 86400)
        status = rng.choice(STATUSES)
        job = Job(
            id=f"j{i:07d}", kind=JobKind.GENERATE, origin=origin, prompt=" ".join(rng.sample(WORDS, 6)),
            params=GenerateParams(seconds=4, size="1280x720", seed=i), pipeline=rng.choice(PIPELINES), provider="local",
            status=status, progress=100, cost_estimate=0.4, cost_actual=0.4 if status is JobStatus.COMPLETED else 0.0,
            created_at=created, started_at=created + 1, finished_at=created + rng.uniform(20, 200),
        )  # fmt: skip
        rows.append(store.rows.to_row(job))
    cols = list(rows[0])

    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", [tuple(r[c] for c in cols) for r in rows])

    await store.writer.run(insert)
    big_dir = data / "media" / "jbig"
    big_dir.mkdir(parents=True, exist_ok=True)
    big = big_dir / "video.mp4"
    with big.open("wb") as fh:
        fh.truncate(mb * 1_000_000)  # sparse: made at once, read back as zeros
    job = Job(
        id="jbig", kind=JobKind.GENERATE, origin=Origin(platform=TENANT[0], workspace_id=TENANT[1], user_id="U00"),
        prompt="a very long video", params=GenerateParams(seconds=600, size="1920x1080", seed=1), pipeline="local",
        status=JobStatus.COMPLETED, output_path=str(big), created_at=now - 10 * 86400, finished_at=now - 10 * 86400,
    )  # fmt: skip
    await store.create(job)
    await store.close()
    return job.id, big


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"videobot web exited with {proc.returncode}")
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("videobot web did not come up")


def start_server(data: Path, port: int, *, sendfile: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOBOT_", "SLACK_", "DISCORD_", "OPENAI_", "RUNWAYML_"))}
    env.update(VIDEOBOT_DATA_DIR=str(data), VIDEOBOT_WEB_SECRET=SECRET, VIDEOBOT_LOG_LEVEL="WARNING")
    if not sendfile:
        env["AIOHTTP_NOSENDFILE"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "web", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=data,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def session(url: str, data: Path, *, operator: bool = False) -> aiohttp.ClientSession:
    core = CoreSettings(data_dir=data, web_secret=SECRET)  # type: ignore[call-arg]
    origin = Origin(platform=TENANT[0], workspace_id=TENANT[1], user_id="U00", user_name="user00")
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    token = sign(link_grant(origin, Actor.of(origin), core, operator=operator), SECRET.encode())
    async with http.get(f"{url}/g/{token}", allow_redirects=False) as r:
        assert r.status == 303, r.status
    return http


async def page_times(http: aiohttp.ClientSession, url: str, paths: list[str], n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        async with http.get(url + paths[i % len(paths)]) as r:
            body = await r.read()
            assert r.status == 200 and b"card" in body, (paths[i % len(paths)], r.status)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def stream_all(url: str, data: Path, job_id: str, clients: int, size: int, proc: psutil.Process) -> tuple[float, float, float, float]:
    """`clients` at once download the whole file; returns (rss before, peak rss, seconds, MB/s)."""
    sessions = [await session(url, data) for _ in range(clients)]
    before = proc.memory_info().rss / 1e6
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss / 1e6)
            await asyncio.sleep(0.05)

    async def one(http: aiohttp.ClientSession) -> int:
        got = 0
        async with http.get(f"{url}/media/{job_id}/file") as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                got += len(chunk)
        return got

    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    sizes = await asyncio.gather(*(one(h) for h in sessions))
    took = time.perf_counter() - start
    done.set()
    await sampler
    for h in sessions:
        await h.close()
    assert all(s == size for s in sizes), sizes
    return before, peak, took, clients * size / 1e6 / took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--mb", type=int, default=500, help="size of the streamed video in MB (default 500)")
    args = parser.parse_args()
    if args.mb < 1:
        parser.error("--mb must be at least 1")
    with tempfile.TemporaryDirectory(prefix="videobot-bench-gallery-") as tmp:
        data = Path(tmp)
        started = time.perf_counter()
        big_id, big = await fill(data, args.jobs, args.mb)
        print(f"filled {args.jobs:,} jobs (+FTS5 via triggers) in {time.perf_counter() - started:.1f} s")
        rows = []
        for sendfile in (True, False):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = start_server(data, port, sendfile=sendfile)
            try:
                await wait_up(url, server)
                proc = psutil.Process(server.pid)
                if sendfile:
                    http = await session(url, data)
                    operator = await session(url, data, operator=True)
                    await page_times(http, url, ["/"], 5)  # warm up
                    unfiltered = await page_times(http, url, ["/"], args.requests)
                    filtered = await page_times(http, url, [
                        "/?q=lighthouse", "/?user=U07", "/?pipeline=runway&status=failed", "/?q=kite+storm&pipeline=sora",
                        "/?channel=C3&from=2000-01-01", f"/?q=comet&user=U03&status=completed",
                    ], args.requests)  # fmt: skip
                    first = await (await http.get(url + "/")).text()
                    after = first.split('data-after="', 1)[1].split('"', 1)[0]
                    deep = await page_times(http, url, [f"/?after={after}&partial=1"], args.requests)
                    everyone = await page_times(operator, url, ["/"], args.requests)
                    await http.close()
                    await operator.close()
                    for name, times in (("gallery page, unfiltered", unfiltered), ("gallery page, filtered/searched", filtered),
                                        ("next page (keyset cursor)", deep), ("operator, every tenant", everyone)):  # fmt: skip
                        rows.append((name, f"p50 {statistics.median(times):6.1f} ms   p99 {pct(times, 0.99):6.1f} ms"))
                before, peak, took, rate = await stream_all(url, data, big_id, args.clients, big.stat().st_size, proc)
                mode = "sendfile" if sendfile else "chunked reads (AIOHTTP_NOSENDFILE)"
                rows.append((f"RSS, {args.clients} x {args.mb} MB streams, {mode}",
                             f"{before:6.1f} MB idle -> {peak:6.1f} MB peak ({took:.1f} s, {rate:,.0f} MB/s total)"))  # fmt: skip
            finally:
                server.terminate()
                server.wait(10)
        width = max(len(r[0]) for r in rows)
        print(f"\n{'web gallery, ' + format(args.jobs, ',') + ' jobs':<{width}}   {args.requests} requests each")
        for name, value in rows:
            print(f"{name:<{width}}   {value}")


if __name__ == "__main__":
    asyncio.run(main())
