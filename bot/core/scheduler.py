"""Fair scheduling: round-robin across users, a global cap and a per-user cap.

One user's twenty jobs take turns with another user's one: the next job to start
comes from the user after the one who started last, skipping users at their cap.
Pure in-memory bookkeeping; the runner persists everything.
"""
from __future__ import annotations

from collections import OrderedDict, deque


class FairQueue:
    def __init__(self, max_running: int, max_running_per_user: int) -> None:
        self.max_running = max_running
        self.max_running_per_user = max_running_per_user
        # Users in turn order; a user moves to the back when one of their jobs starts.
        self._queues: OrderedDict[str, deque[str]] = OrderedDict()
        self._running: dict[str, str] = {}  # job id -> user key
        self._running_per_user: dict[str, int] = {}
        #: Every queued id, so membership and length cost O(1) with thousands queued (each enqueue asks).
        self._queued: set[str] = set()

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self._running)

    def push(self, user: str, job_id: str, *, front: bool = False) -> None:
        queue = self._queues.setdefault(user, deque())
        queue.appendleft(job_id) if front else queue.append(job_id)
        self._queued.add(job_id)

    def remove(self, job_id: str) -> bool:
        if job_id not in self._queued:
            return False
        self._queued.discard(job_id)
        for user, queue in self._queues.items():
            if job_id in queue:
                queue.remove(job_id)
                if not queue:
                    del self._queues[user]
                return True
        return False

    def is_queued(self, job_id: str) -> bool:
        return job_id in self._queued

    def pop_ready(self) -> tuple[str, str] | None:
        """The next (user, job id) allowed to start now, or None."""
        if len(self._running) >= self.max_running:
            return None
        for user in list(self._queues):
            if self._running_per_user.get(user, 0) >= self.max_running_per_user:
                continue
            queue = self._queues.pop(user)
            job_id = queue.popleft()
            self._queued.discard(job_id)
            if queue:
                self._queues[user] = queue  # to the back of the turn order
            self._running[job_id] = user
            self._running_per_user[user] = self._running_per_user.get(user, 0) + 1
            return user, job_id
        return None

    def mark_running(self, user: str, job_id: str) -> None:
        """A resumed job that was already past the queue counts against the caps."""
        self._running[job_id] = user
        self._running_per_user[user] = self._running_per_user.get(user, 0) + 1

    def finish(self, job_id: str) -> None:
        user = self._running.pop(job_id, None)
        if user is not None:
            left = self._running_per_user.get(user, 1) - 1
            if left > 0:
                self._running_per_user[user] = left
            else:
                self._running_per_user.pop(user, None)

    def positions(self) -> dict[str, int]:
        """1-based start order of every queued job if nothing else arrived: round-robin
        over users in turn order (caps delay starts but do not reorder them)."""
        order: dict[str, int] = {}
        queues = [list(q) for q in self._queues.values()]
        depth = 0
        place = 1
        while True:
            any_left = False
            for q in queues:
                if depth < len(q):
                    order[q[depth]] = place
                    place += 1
                    any_left = True
            if not any_left:
                return order
            depth += 1
