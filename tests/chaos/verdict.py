"""What each job left behind, checked against the promises of issue 9.

Per job: one create at each paid provider, one file message in Slack, one status message
that ends at "Done", and an event log that only moves forward. Everything is read from
what crossed the wire (the emulators' records) and from the bot's database.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.chaos.db import DbView, JobRow, backward_moves
from tests.chaos.emulators import Create, World

#: How the status card shows each ending (bot/core/render.py).
ENDING_SHOWN = {"completed": "✅ Done", "failed": "❌", "cancelled": "🚫"}


@dataclass
class PipelineSpec:
    name: str
    #: The flags of every /video command for this pipeline (the smallest valid clip).
    flags: str
    #: Paid providers whose creates must be exactly one per job ("" = none: the local renderer is free).
    paid: tuple[str, ...]


PIPELINES: dict[str, PipelineSpec] = {
    # Offline renderer: re-rendering is free, so only the channel is counted. Big enough to be
    # seen running (about a third of a second per clip on one core).
    "local": PipelineSpec("local", "--seconds 4 --size 640x360", ()),
    # sora-2 makes 4, 8 or 12 s at fixed sizes; the emulator renders a tenth of the size.
    "sora": PipelineSpec("sora", "--seconds 4 --size 1280x720", ("sora",)),
    "runway": PipelineSpec("runway", "--seconds 2 --size 1280x720", ("runway",)),
    "gpt-image+runway": PipelineSpec("gpt-image+runway", "--seconds 2 --size 1280x720", ("gpt-image", "runway")),
    # Kling's creates carry our job id (external_task_id): an interrupted one is read back, never ambiguous.
    "kling": PipelineSpec("kling", "--seconds 5 --size 1280x720", ("kling",)),
}


#: The documented ending of a job whose create may or may not have arrived (README, "How it works").
AMBIGUOUS_NOTE = re.compile(r"restarted while sending|cannot tell whether it arrived|ambiguous", re.I)
#: A kill this soon after a create's answer left the emulator may still have cut it off (unread socket).
#: Used only when the database's word on the kill is not at hand (see `cut_off`'s `unanswered`).
ANSWER_GRACE = 0.1
#: Image steps are synchronous calls: an image whose answer died with the process cannot be fetched
#: again, so making it again is the only way on (and is reported as "re-paid", not as a duplicate).
SYNCHRONOUS = {"gpt-image"}


def cut_off(
    create: Create, kills: list[float], *, kept_at: list[float] | None = None, unanswered: list[float] | None = None,
) -> bool:
    """The process died while this create was in flight: the bot never got its answer.

    A create whose caller had hung up before the answer was ready was cut off whatever the
    clocks say: the emulators share the harness's event loop, so a create the bot wrote just
    before the (synchronous) kill is handled, and its start recorded, after the kill.

    For a synchronous step (`kept_at` given: when the job's event log says the step's result was
    kept, on the monotonic clock) the answer is only safe once the bot has kept it: a kill after
    the answer left the emulator but before the bot wrote the image down (decode, fsync, rename:
    more than ANSWER_GRACE on a loaded machine) loses it as surely as a kill mid-request.

    For a video create, `unanswered` (when given) are the kills that left the job with its create
    sent and no remote id stored, as the dead process's database shows: a create that had started
    by one of them lost its answer, however long after the answer left the emulator the kill came."""
    if create.caller_gone:
        return True
    if kept_at is not None:
        return any(create.started <= k and not any(create.started <= at <= k for at in kept_at) for k in kills)
    if unanswered is not None:
        return any(create.started <= k for k in unanswered)
    return any(create.started <= k <= create.answered + ANSWER_GRACE for k in kills)


#: Event details that say a synchronous step's result is on disk (bot/core/runner.py `_image_step`).
KEPT_NOTE = re.compile(r"^image step (done|reused)")


def file_messages(world: World, job_id: str) -> list[dict]:  # type: ignore[type-arg]
    """Channel and thread messages carrying a file of this job (named or titled with its id)."""
    found = []
    for message in world.slack.messages.values():
        for file_id in message.get("files") or []:
            file = world.slack.files.get(file_id) or {}
            if job_id in str(file.get("name") or "") or job_id in str(file.get("title") or ""):
                found.append(message)
                break
    return found


def status_messages(world: World, job_id: str) -> list[str]:
    """Timestamps of top-level messages without files that show this job (its status card)."""
    return [
        ts for ts, m in world.slack.messages.items()
        if not m.get("files") and "thread_ts" not in m and f"job {job_id}" in world.slack.text_of(ts)
    ]  # fmt: skip


@dataclass
class JobVerdict:
    job_id: str
    prompt: str
    status: str
    error: str | None
    #: Accepted creates per paid provider, and how many of them lost their answer to a kill.
    creates: dict[str, int]
    cut_off: dict[str, int]
    files: int
    status_messages: int
    #: The status card shows how the job ended (Done, the error, cancelled).
    done_shown: bool
    #: Failed with the documented "not sent again" note after a kill inside its create window.
    ambiguous: bool = False
    #: The last line of each status card of the job, as a user sees it now.
    shown_lines: list[str] = field(default_factory=list)
    event_problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def extra_creates(self, provider: str) -> int:
        """Creates beyond one that the bot could have avoided (a re-made image whose answer was lost is not)."""
        allowed = 1 + (self.cut_off[provider] if provider in SYNCHRONOUS else 0)
        return max(0, self.creates[provider] - allowed)

    @property
    def repaid(self) -> int:
        """Synchronous paid steps made again because the first answer died with the process."""
        return sum(max(0, min(self.creates[p] - 1, self.cut_off[p])) for p in self.creates if p in SYNCHRONOUS)

    @property
    def duplicate(self) -> bool:
        return any(self.extra_creates(p) for p in self.creates) or self.files > 1 or self.status_messages > 1

    @property
    def lost(self) -> bool:
        return not self.ambiguous and (self.status != "completed" or self.files == 0)

    def problems(self) -> list[str]:
        if self.status not in ENDING_SHOWN:
            return [f"never ended: still {self.status}"]
        out = []
        if self.ambiguous:
            if self.files:
                out.append(f"ended {self.status} with the 'not sent again' note, yet its file was posted")
        elif self.status != "completed":
            out.append(f"ended {self.status}" + (f": {self.error}" if self.error else ""))
        for provider, n in self.creates.items():
            if self.extra_creates(provider):
                out.append(f"{n} creates at {provider} ({self.cut_off[provider]} cut off by a kill; expected exactly 1)")
            elif n == 0 and not self.ambiguous:
                out.append(f"no create at {provider}")
        if self.files != 1 and not (self.ambiguous and self.files == 0):
            out.append(f"{self.files} file messages in the channel (expected exactly 1)")
        if self.status_messages != 1:
            out.append(f"{self.status_messages} status messages (expected exactly 1)")
        if not self.done_shown:
            out.append(f"status message does not show the ending ({ENDING_SHOWN.get(self.status, self.status)!r}): {self.shown_lines}")
        out += [f"event log moves back: {p}" for p in self.event_problems]
        return out

    def describe(self) -> str:
        return f"job {self.job_id} ({self.prompt!r}): " + "; ".join(self.problems()) + f"  [events: {' > '.join(self.events)}]"


def judge(
    world: World, db: DbView, spec: PipelineSpec, rows: list[JobRow], token_of: dict[str, str],
    kills: list[float], submitting_at_kill: set[str], *, unanswered_at: Mapping[str, list[float]] | None = None,
) -> list[JobVerdict]:
    """Every job checked; `kills` are the moments of the SIGKILLs, `submitting_at_kill` the jobs
    that were in `submitting` at one of them (the only ones that may end ambiguous).

    `unanswered_at` (the chaos harness reads it from the database each kill left): per job, the
    kills that found its create sent (`submit_sent_to` written) and its remote id not stored, the
    one window the documented "not sent again" ending covers. When given, only those jobs may end
    ambiguous, and a video create counts as cut off by what the database says, not by a grace."""
    log = world.creates()
    verdicts = []
    for row in rows:
        token = token_of.get(row.prompt, row.prompt)
        statuses = status_messages(world, row.id)
        stored = row.status_message_id if row.status_message_id in world.slack.messages else None
        shown = [stored] if stored else statuses
        events = db.events(row.id)
        # Event times are wall-clock (the bot's time.time()); creates and kills are monotonic here.
        offset = time.time() - time.monotonic()
        kept_at = [e.at - offset for e in events if e.detail and KEPT_NOTE.search(e.detail)]

        unanswered = None if unanswered_at is None else unanswered_at.get(row.id, [])

        def lost(c: Create) -> bool:
            if c.provider in SYNCHRONOUS:
                return cut_off(c, kills, kept_at=kept_at)
            return cut_off(c, kills, unanswered=unanswered)
        mine: dict[str, list[Create]] = {p: [c for c in log if c.provider == p and token in c.prompt] for p in spec.paid}
        video_creates = [c for p, cs in mine.items() if p not in SYNCHRONOUS for c in cs]
        ambiguous = (
            row.status == "failed" and AMBIGUOUS_NOTE.search(row.error_message or "") is not None
            and row.id in submitting_at_kill and (unanswered is None or bool(unanswered))
            and len(video_creates) <= 1 and all(lost(c) for c in video_creates)
        )  # fmt: skip
        verdicts.append(JobVerdict(
            job_id=row.id, prompt=row.prompt, status=row.status, error=row.error_message,
            creates={p: len(cs) for p, cs in mine.items()},
            cut_off={p: sum(lost(c) for c in cs) for p, cs in mine.items()},
            files=len(file_messages(world, row.id)),
            status_messages=len(statuses),
            done_shown=ending_shown(world, row, shown),
            ambiguous=ambiguous,
            shown_lines=[_status_line(world, ts) for ts in statuses],
            event_problems=backward_moves(events),
            events=[e.status + (f"({e.detail})" if e.detail else "") for e in events],
        ))  # fmt: skip
    return verdicts


def _status_line(world: World, ts: str) -> str:
    text = world.slack.messages[ts].get("text", "") or world.slack.text_of(ts)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:120] if lines else ""


def ending_shown(world: World, row: JobRow, shown: list[str]) -> bool:
    mark = ENDING_SHOWN.get(row.status)
    return mark is not None and any(mark in world.slack.text_of(ts) for ts in shown if ts in world.slack.messages)


def settled(world: World, rows: list[JobRow]) -> bool:
    """Every job shows its ending, and every completed one has its file in the channel (what a user waits for)."""
    for row in rows:
        if row.status == "completed" and not file_messages(world, row.id):
            return False
        shown = [row.status_message_id] if row.status_message_id in world.slack.messages else status_messages(world, row.id)
        if not ending_shown(world, row, [ts for ts in shown if ts]):
            return False
    return True
