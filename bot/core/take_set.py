"""A set of takes as data: several versions of one prompt, made at once, compared side by side.

A set is a parent job (kind `takes`) whose takes are ordinary child jobs (`state["take"]` = k,
1-based). The set holds what every take shares (prompt, pipeline, size, length, options) and
each take's seed (`state["seeds"]`); its `cost_estimate` is all N takes' at once, so the confirm
threshold, the budgets and the reservation see the whole set. Take rows count nothing of their
own against budgets (`storage.spend`); the set settles to what its takes billed.

This module has no service or runner in it (the service imports it to turn a request into a set).
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel

from bot.core.models import Job, JobKind, JobStatus

#: In a take's state: its number in the set (1-based).
TAKE = "take"
#: A take posted on its own by Use N (its delivery is no longer suppressed).
USED = "take_used"
#: The most takes any set has, whatever the operator allows (four fit a contact sheet's row).
MOST_TAKES = 4

_SEED_SPACE = 2**31


def take_seeds(base: int, n: int) -> list[int]:
    """Each take's own seed: consecutive from the set's."""
    return [(base + k) % _SEED_SPACE for k in range(n)]


def as_set(job: Job, n: int, *, seeds: list[int] | None = None) -> Job:
    """The set of `n` takes of `job` (a single video or image not stored yet), same id."""
    take_kind = JobKind.IMAGE if job.kind is JobKind.IMAGE else JobKind.GENERATE
    state = {**job.state, "takes": n, "take_kind": take_kind.value, "seeds": seeds or take_seeds(job.params.seed, n)}
    return job.model_copy(update={"kind": JobKind.TAKES, "state": state})


def takes_count(job: Job) -> int:
    return int(job.state.get("takes") or 0)


def take_kind(job: Job) -> JobKind:
    return JobKind(job.state.get("take_kind") or JobKind.GENERATE.value)


def is_take(job: Job) -> bool:
    return bool(job.state.get(TAKE))


def suppressed(job: Job) -> bool:
    """A take is posted as part of its set, never on its own, unless Use N posted it."""
    return is_take(job) and not job.state.get(USED)


class TakeResult(BaseModel):
    """One take as the set's result shows it (stored on the set when it is delivered)."""

    take: int
    job_id: str
    seed: int
    status: JobStatus
    output_path: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.COMPLETED and self.output_path is not None


def results_of(job: Job) -> list[TakeResult]:
    return [TakeResult.model_validate(r) for r in job.state.get("take_results", [])]


def failure_lines(results: list[TakeResult]) -> list[str]:
    return [f"Take {r.take} {'was cancelled' if r.status is JobStatus.CANCELLED else 'failed'}: {r.error or 'no reason given'}"
            for r in results if not r.ok]  # fmt: skip


# --- the status line ---------------------------------------------------------------------------

_BAR = 5


def _bar(percent: int) -> str:
    filled = round(_BAR * max(0, min(100, percent)) / 100)
    return "▓" * filled + "░" * (_BAR - filled)


def take_state(job: Job) -> str:
    """One take's part of the set's line: `▓▓▓▓░ 80%`, `queued`, `done`, `failed`."""
    if job.status is JobStatus.QUEUED:
        return "queued"
    if job.status is JobStatus.COMPLETED:
        return "done"
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return job.status.value
    return f"{_bar(job.progress)} {job.progress}%"


def takes_line(takes: dict[int, Job], n: int) -> str:
    """`1 ▓▓▓▓░ 80% · 2 ▓▓░░░ 40% · 3 queued · 4 done` (a take not created yet is queued)."""
    return " · ".join(f"{k} {take_state(takes[k]) if k in takes else 'queued'}" for k in range(1, n + 1))


def set_progress(takes: dict[int, Job], n: int) -> int:
    """The set's percent: the mean of its takes' (an ended take counts as whole)."""
    total = sum(100 if t.terminal else t.progress for t in takes.values())
    return min(99, total // max(1, n))


def billed(takes: list[Job]) -> float:
    """What the takes cost, as the spend ledger would count each on its own (only what reached a provider)."""
    total = 0.0
    for t in takes:
        if t.status is JobStatus.COMPLETED:
            total += t.cost_actual if t.cost_actual is not None else (t.cost_estimate or 0.0)
        elif t.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            total += t.cost_actual if t.cost_actual is not None else (t.state.get("image_step_cost") or 0.0)
    return round(total, 4)


# --- the contact sheet -------------------------------------------------------------------------


def middle_frame(path: Path) -> Image.Image:
    """A frame from the middle of a video (an image file is itself): the decoder seeks to the
    keyframe before the middle and decodes forward from there, not from the first frame."""
    import av

    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        with Image.open(path) as image:
            return image.convert("RGB")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = float(container.duration or 0) / av.time_base if container.duration else float(stream.duration or 0) * float(stream.time_base or 0)
        middle = duration / 2
        if middle > 0 and stream.time_base:
            container.seek(int(middle / float(stream.time_base)), stream=stream, backward=True, any_frame=False)
        frame = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= middle:
                break
        if frame is None:
            raise ValueError(f"{path.name} has no frames")
        return frame.to_image().convert("RGB")


#: The tile of a take that has no picture (failed, cancelled).
MISSING_TILE = (40, 40, 40)


def write_contact_sheet(takes: list[tuple[int, int, Path | None]], dest: Path, *, tile_width: int = 360) -> Path:
    """One PNG: a frame from the middle of each take (number, seed, file or None when it has none),
    side by side in take order, each labelled with its number and seed."""
    frames = {k: middle_frame(p) for k, _, p in takes if p is not None}
    w0, h0 = next(iter(frames.values())).size if frames else (16, 9)
    tile_h = max(1, round(tile_width * h0 / w0))
    gap, label_h = 6, 18
    cols = len(takes)
    sheet = Image.new("RGB", (cols * tile_width + (cols + 1) * gap, tile_h + label_h + 2 * gap), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (k, seed, _) in enumerate(takes):
        x, y = gap + i * (tile_width + gap), gap
        frame = frames.get(k)
        if frame is not None:
            sheet.paste(frame.resize((tile_width, tile_h)), (x, y))
        else:
            draw.rectangle((x, y, x + tile_width - 1, y + tile_h - 1), fill=MISSING_TILE)
            draw.text((x + 8, y + tile_h // 2 - 6), "failed", fill=(220, 90, 90), font=font)
        draw.rectangle((x, y, x + 24, y + 16), fill=(0, 0, 0))
        draw.text((x + 7, y + 3), str(k), fill=(255, 255, 255), font=font)
        draw.text((x + 2, y + tile_h + 3), f"take {k} · seed {seed}", fill=(200, 200, 200), font=font)
    sheet.save(dest, "PNG")
    return dest


def result_lines(job: Job) -> list[str]:
    """What the set's result message says under its title: each take with its seed, the failures
    named with their reasons, and how to pick one."""
    results = results_of(job)
    lines = [f"Take {r.take} · seed {r.seed}" for r in results if r.ok]
    lines += failure_lines(results)
    if any(r.ok for r in results):
        lines.append("Use N posts a take alone · More like N makes new takes from it · react 1️⃣–4️⃣ to use a take")
    return lines
