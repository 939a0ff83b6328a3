"""The chaos verdict tells a create whose answer died with the process from a lost job.

The emulators run on the harness's own event loop, and the harness kills the bot with a
synchronous SIGKILL. A create the bot wrote to its socket just before the kill is therefore
read and handled by the emulator only after the process is dead: its recorded start comes
after the kill. The bot never got its answer, so the documented ending is "not sent again";
the verdict once took the create for one sent after the kill and counted the job as lost
(`make chaos`, runway, 1 loss in about 100 kills). Here a real process sends a Runway create
and dies by SIGKILL while this loop is blocked, exactly as under the harness.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos import World, judge
from tests.chaos.db import EventRow, JobRow
from tests.chaos.emulators import Create
from tests.chaos.verdict import PIPELINES, cut_off
from tests.fakes.runway_server import SECRET, VERSION

pytestmark = pytest.mark.timeout(60)

JOB_ID = "cx001job"
TOKEN = "cx001q"
PROMPT = f"chaos runway wave 1 clip {TOKEN}"
NOTE = (
    "The bot restarted while sending this job, and the provider cannot tell whether it arrived. "
    "To avoid paying twice it was not sent again: re-roll to try again."
)

#: Sends one text-to-video create the way the SDK does (one HTTP request) and dies by SIGKILL
#: before reading the answer: a `videobot run` killed while its create was on the wire.
SENDER = r"""
import json, os, signal, socket, sys
port, secret, version, prompt = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
body = json.dumps({"model": "gen4.5", "promptText": prompt, "ratio": "1280:720", "duration": 2}).encode()
head = (
    f"POST /v1/text_to_video HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    f"Authorization: Bearer {secret}\r\nX-Runway-Version: {version}\r\nContent-Length: {len(body)}\r\n\r\n"
).encode()
sock = socket.create_connection(("127.0.0.1", int(port)))
sock.sendall(head + body)
os.kill(os.getpid(), signal.SIGKILL)
"""


class NoEvents:
    """The verdict reads each job's event log; this job's has nothing the rule depends on."""

    def events(self, job_id: str) -> list[EventRow]:
        return []


def failed_row() -> JobRow:
    """The job as the restarted bot left it: failed with the documented "not sent again" note."""
    now = time.time()
    return JobRow(
        id=JOB_ID, prompt=PROMPT, pipeline="runway", status="failed", progress=0, remote_id=None,
        status_message_id=None, result_message_id=None, error_code="error", error_message=NOTE,
        updated_at=now, created_at=now - 5,
    )  # fmt: skip


async def until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_create_the_emulator_handles_after_the_kill_was_cut_off_by_it(tmp_path: Path) -> None:
    async with World(tmp_path / "emulators") as world:
        port = world.runway.base_url.rsplit(":", 1)[1]
        # Blocking, like the harness's kill: the emulator cannot read the request until the sender is dead.
        sender = subprocess.run([sys.executable, "-c", SENDER, port, SECRET, VERSION, PROMPT], timeout=30)
        assert sender.returncode == -9, f"the sender was meant to die by SIGKILL, exited {sender.returncode}"
        killed_at = time.monotonic()
        await until(lambda: world.runway.create_log, 10, "the emulator to accept the dead process's create")
        [create] = world.runway.create_log
        assert create.started > killed_at, "the emulator was meant to handle the create only after the kill"
        assert create.caller_gone, "the create's caller hung up before its answer: the emulator must record it"
        assert cut_off(create, [killed_at]), "a create whose sender died before its answer was cut off by the kill"

        [verdict] = judge(
            world, NoEvents(), PIPELINES["runway"], [failed_row()], {PROMPT: TOKEN}, [killed_at], {JOB_ID},  # type: ignore[arg-type]
            unanswered_at={JOB_ID: [killed_at]},
        )  # fmt: skip
    assert verdict.creates == {"runway": 1} and verdict.cut_off == {"runway": 1}
    assert verdict.ambiguous and not verdict.lost, verdict.describe()


def test_an_answer_the_process_did_not_store_was_cut_off_however_late_the_kill() -> None:
    """The answer left the emulator, but the process died before writing the id down (the
    database it left says so): cut off, even on a machine slow enough to take longer than any grace."""
    create = Create("runway", PROMPT, started=100.0, answered=100.25)
    killed_at = 101.0  # long after the answer; the dead process still had no remote id
    assert cut_off(create, [killed_at], unanswered=[killed_at])
    assert not cut_off(create, [killed_at], unanswered=[])  # a kill that found the id stored did not cut it off
    assert not cut_off(Create("runway", PROMPT, started=102.0, answered=102.25), [killed_at], unanswered=[killed_at])
