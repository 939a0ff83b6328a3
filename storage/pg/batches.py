"""Group commit for PostgreSQL: writes that arrive while a batch is being written wait and go
together in the next one, as SQLite's writer does (storage.writer). A burst of 500 submissions
is then a few transactions on one connection instead of 500 waiting for the pool's ten."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar


class Entry(Protocol):
    future: asyncio.Future[Any]


E = TypeVar("E", bound=Entry)


class Batcher(Generic[E]):
    def __init__(self, write: Callable[[list[E]], Awaitable[None]], *, name: str, max_batch: int = 500) -> None:
        #: Writes one batch and settles each entry's future (a failure it raises reaches every entry left).
        self.write = write
        self.name = name
        self.max_batch = max_batch
        self._waiting: list[E] = []
        self._task: asyncio.Task[None] | None = None

    async def put(self, entry: E) -> Any:
        """Queue `entry` for the next batch and wait for its answer. Once queued it is written even
        if the caller is cancelled."""
        self._waiting.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=self.name)
        return await asyncio.shield(entry.future)

    def futures(self) -> list[asyncio.Future[Any]]:
        return [e.future for e in self._waiting]

    async def _loop(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                await self.write(batch)
            except BaseException as exc:
                error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
