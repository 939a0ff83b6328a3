"""The fair order in which queued jobs are handed to runners, shared by both backends.

Each backend reads, inside its claiming transaction, how many jobs every user has taken
(non-terminal jobs with a live lease, whatever their status) and the oldest few queued
jobs of every user without a live lease; `fair_pick` then chooses, and the backend leases
the chosen rows in the same transaction.

The order is round-robin across users: a user's k-th waiting job (k = 0, 1, ...) stands at
level `taken + k`; lower levels go first (so users with fewer jobs running go first), ties
go to the user whose oldest queued job is older, and within a user oldest first. A job at
level `max_running_per_user` or above is not taken, nor anything past the global cap.

`fair_order` is the same order over every waiting job, without the caps: the place each
would start in if nothing else arrived (a gateway shows it as the job's queue position).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def user_key(platform: str, workspace_id: str | None, user_id: str) -> str:
    """Who a job belongs to for the per-user cap: the same person in two workspaces is two users."""
    return f"{platform}:{workspace_id or ''}:{user_id}"


@dataclass(frozen=True)
class Candidate:
    id: str
    user: str
    created_at: float


def fair_pick(
    candidates: Iterable[Candidate], taken_by_user: Mapping[str, int], *, taken_total: int, max_running: int,
    max_running_per_user: int, limit: int,
) -> list[str]:
    """Ids to lease, in the order they should start. `candidates` must come oldest first."""
    room = min(limit, max_running - taken_total)
    if room <= 0:
        return []
    per_user: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        per_user.setdefault(candidate.user, []).append(candidate)
    ranked: list[tuple[int, float, float, int, str]] = []
    order = 0
    for user, jobs in per_user.items():
        oldest = jobs[0].created_at
        for k, job in enumerate(jobs):
            level = taken_by_user.get(user, 0) + k
            if level >= max_running_per_user:
                break
            ranked.append((level, oldest, job.created_at, order, job.id))
            order += 1
    ranked.sort()
    return [item[-1] for item in ranked[:room]]


def fair_order(candidates: Iterable[Candidate], taken_by_user: Mapping[str, int]) -> list[str]:
    """Every candidate's id in the order `fair_pick` would hand them out, caps aside (caps delay
    starts but do not reorder them). `candidates` must come oldest first."""
    jobs = list(candidates)
    return fair_pick(jobs, taken_by_user, taken_total=0, max_running=len(jobs), max_running_per_user=sys.maxsize, limit=len(jobs))
