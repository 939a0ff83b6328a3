"""Platform-neutral text for progress and results. Adapters wrap it in their own markup."""
from __future__ import annotations

from bot.core.models import EventKind, Job, JobKind, JobStatus, ProgressEvent
from storage.leases import HolderState, holder_state

BAR_WIDTH = 12


def progress_bar(percent: int, width: int = BAR_WIDTH) -> str:
    percent = max(0, min(100, percent))
    filled = round(width * percent / 100)
    return "▰" * filled + "▱" * (width - filled)


def format_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def describe_params(job: Job) -> str:
    if job.kind is JobKind.IMAGE:
        return f"{job.params.size} · {job.pipeline}"
    if job.kind is JobKind.STORY:
        scenes = len(job.state.get("plan", {}).get("scenes", []))
        return f"{scenes} scenes × {job.params.seconds}s · {job.params.size} · {job.pipeline}"
    if job.kind is JobKind.TAKES:
        each = job.params.size if job.state.get("take_kind") == JobKind.IMAGE.value else f"{job.params.seconds}s · {job.params.size}"
        return f"{job.state.get('takes', '?')} takes × {each} · {job.pipeline}"
    seconds = f"+{job.params.seconds}s" if job.kind is JobKind.EXTEND else f"{job.params.seconds}s"
    return f"{seconds} · {job.params.size} · {job.pipeline}"


def status_line(event: ProgressEvent) -> str:
    """One line for the status message: what is happening, how far, for how long."""
    job = event.job
    elapsed = format_elapsed(job.elapsed if job.started_at else event.at - job.created_at)
    eta = f" · ETA {format_elapsed(event.eta)}" if event.eta is not None and event.eta >= 1 else ""
    if event.kind is EventKind.QUEUED:
        where = f"#{event.position} in line" if event.position else "in line"
        return f"⏳ Queued, {where}{eta}"
    if event.kind is EventKind.STARTED:
        return f"🚀 Starting · {elapsed}{eta}"
    if event.kind is EventKind.PROGRESS:
        note = f" · {event.message}" if event.message else ""
        return f"🎬 {progress_bar(event.progress)} {event.progress}% · {elapsed}{eta}{note}"
    if event.kind is EventKind.DELIVERING:
        return f"📦 {progress_bar(100)} 100% · delivering · {elapsed}"
    if event.kind is EventKind.COMPLETED:
        undelivered = f" · ⚠️ {job.error_message}" if job.error_code == "undelivered" and job.error_message else ""
        return f"✅ Done in {format_elapsed(job.elapsed)}{undelivered}"
    if event.kind is EventKind.FAILED:
        return f"❌ {event.message or job.error_message or 'Failed.'}"
    return "🚫 Cancelled"


def job_title(job: Job) -> str:
    label = {
        JobKind.GENERATE: "Video",
        JobKind.VARIATION: "Re-roll",
        JobKind.REMIX: "Remix",
        JobKind.EXTEND: "Extension",
        JobKind.IMAGE: "Image",
        JobKind.STORY: "Story",
        JobKind.TAKES: "Takes",
    }[job.kind]
    parent = f" of {job.parent_id}" if job.parent_id else ""
    if job.state.get("story_scene"):
        label, parent = f"Scene {job.state['story_scene']}", f" of story {job.parent_id}"
    elif job.state.get("take"):
        label, parent = f"Take {job.state['take']}", f" of set {job.parent_id}"
    return f"{label}{parent} · job {job.id} · {describe_params(job)}"


INTERRUPTED = "interrupted: resumes when the bot runs"


def interrupted(job: Job) -> bool:
    """An unfinished job that no live runner drives (its process died, or the bot is stopped)."""
    if job.status.terminal:
        return False
    state = holder_state(job.lease_owner, job.lease_until)
    return state in (None, HolderState.GONE, HolderState.EXPIRED)


def status_label(job: Job) -> str:
    status = job.status.value + (f" {job.progress}%" if job.status is JobStatus.RUNNING else "")
    if job.media_expired_at is not None:
        return f"{status} (file removed)"
    if job.status is JobStatus.COMPLETED and job.error_code == "undelivered":
        return f"{status} (not posted: videobot redeliver {job.id})"
    return f"{status} ({INTERRUPTED})" if interrupted(job) else status


def job_row(job: Job) -> str:
    """One line per job for /jobs listings."""
    prompt = job.prompt if len(job.prompt) <= 48 else job.prompt[:47] + "…"
    return f"{job.id}  {status_label(job):<14} {job.kind.value:<9} {describe_params(job)}  “{prompt}”"

