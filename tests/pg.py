"""A throwaway PostgreSQL cluster for the tests: Debian's initdb/pg_ctl, a private socket
directory, a free port, fsync off. Started once per session (on first use), one fresh
database per test (CREATE DATABASE ... TEMPLATE, a file copy), stopped at the end.

PostgreSQL refuses to run as root: when we are root the server runs as the `postgres`
system user (runuser), its directories chowned to it. Where no PostgreSQL binaries exist the
tests that need it are skipped with the reason; with CI=true they fail instead.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

from tests.ci import skip_or_fail

INSTALL_HINT = "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql to run these tests"


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="videobot-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "postgres"
        self._as: list[str] = []
        self._names = itertools.count(1)
        self._template_ready = False

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.chmod(0o755)
        self.sockets.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = " ".join([
            f"-p {self.port}", f"-k {self.sockets}", "-c listen_addresses=''", "-c fsync=off",
            "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=300",
            "-c shared_buffers=32MB", "-c max_locks_per_transaction=128",
        ])  # fmt: skip
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")

    # --- databases --------------------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.sockets}&port={self.port}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fresh_database(self, *, migrated: bool = True) -> str:
        """A new database's URL: migrated (copied from a migrated template) or empty."""
        name = f"t{next(self._names)}"
        if not migrated:
            await self._admin(f"CREATE DATABASE {name}")
            return self.url(name)
        if not self._template_ready:
            from storage.pg.schema import migrate

            await self._admin("CREATE DATABASE videobot_template")
            conn = await asyncpg.connect(self.url("videobot_template"))
            try:
                await migrate(conn)
            finally:
                await conn.close()
            self._template_ready = True
        await self._admin(f"CREATE DATABASE {name} TEMPLATE videobot_template STRATEGY FILE_COPY")
        return self.url(name)

    async def drop(self, url: str) -> None:
        name = url.split("?")[0].rsplit("/", 1)[-1]
        await self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_cluster_session() -> Iterator[PgCluster | str]:
    """The session's cluster, or why there is none (a string)."""
    bindir = find_bindir()
    if bindir is None:
        yield INSTALL_HINT
        return
    cluster = PgCluster(bindir)
    try:
        cluster.start()
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(cluster.root, ignore_errors=True)
        yield f"cannot start a PostgreSQL cluster: {exc}"
        return
    try:
        yield cluster
    finally:
        cluster.stop()


def unavailable(reason: str) -> NoReturn:
    """Skip a test that needs PostgreSQL, with the reason; in CI (CI=true, 1, ...) fail it instead."""
    skip_or_fail(reason, what="PostgreSQL tests")


@pytest.fixture
def pg_cluster(pg_cluster_session: PgCluster | str) -> PgCluster:
    """The cluster; skipped (failed with CI=true) where PostgreSQL cannot run."""
    if isinstance(pg_cluster_session, str):
        unavailable(pg_cluster_session)
    return pg_cluster_session


@pytest.fixture
async def pg_url(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh migrated database on the cluster, dropped after the test."""
    url = await pg_cluster.fresh_database()
    yield url
    await pg_cluster.drop(url)
