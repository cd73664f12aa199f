"""Concurrency limits that prefer work closest to done.

A plain semaphore serves waiters first-come; this one serves the waiter with the lowest
priority value first (the engine passes minus the stage's depth), so accounts already in
`write` finish before new ones start `research`: results arrive early and memory stays flat.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from contextlib import asynccontextmanager
from typing import AsyncIterator


class PriorityLimiter:
    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._limit = limit
        self.in_flight = 0
        self.peak = 0
        self._waiters: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Change the limit (the adaptive governor shrinks and grows it)."""
        self._limit = max(1, int(limit))
        self._wake()

    async def acquire(self, priority: float = 0.0) -> None:
        if self.in_flight < self._limit and not self._waiters:
            self._take()
            return
        fut = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._seq), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # we were granted a slot but cancelled before using it
            else:
                try:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                except ValueError:
                    pass
            raise

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._limit:
            _, _, fut = heapq.heappop(self._waiters)
            if fut.done():
                continue
            self._take()
            fut.set_result(None)

    @asynccontextmanager
    async def slot(self, priority: float = 0.0) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
