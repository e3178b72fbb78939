"""`RetryPolicy`: the one backoff schedule of every retry loop in Shoal, client and node.

What a loop retries, and what an outcome means, stays explicit at each call site (a
timeout is an unknown outcome, not a failure; a routing error reloads the shard map
first); this module only answers "how long to wait before the next attempt", and never
waits past the caller's deadline. Deadlines are `time.monotonic()` seconds.

`retry` / `retry_async` run the simple loops ("try until a definite answer or the
deadline"); the client's request loop and the ingest streams drive a `Backoff` directly
because they carry more state between attempts (write ids, possible application,
routing refreshes).
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Waits of first_s, first_s x multiplier, ... capped at max_s (seconds).

    multiplier 1 gives fixed pacing (first_s == max_s), used where the wait is for a peer
    to catch up rather than for contention to clear.
    """

    first_s: float = 0.02
    max_s: float = 0.5
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        assert 0 < self.first_s <= self.max_s and self.multiplier >= 1, self

    @classmethod
    def fixed(cls, pause_s: float) -> RetryPolicy:
        """The same pause between every attempt: waiting for a peer or a cluster to come back."""
        return cls(first_s=pause_s, max_s=pause_s, multiplier=1.0)

    def backoff(self) -> Backoff:
        return Backoff(self)


class Backoff:
    """One loop's position in a RetryPolicy's schedule; never sleeps past the deadline."""

    __slots__ = ("_policy", "_next_s")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._next_s = policy.first_s

    def delay_s(self, deadline_s: float, at_least_s: float = 0.0) -> float:
        """The next wait (at least `at_least_s`, e.g. a server's retry hint), clipped to the deadline."""
        wait_s = max(self._next_s, at_least_s)
        self._next_s = min(self._next_s * self._policy.multiplier, self._policy.max_s)
        return max(0.0, min(wait_s, deadline_s - time.monotonic()))

    def sleep(self, deadline_s: float, at_least_s: float = 0.0) -> None:
        time.sleep(self.delay_s(deadline_s, at_least_s))

    async def asleep(self, deadline_s: float, at_least_s: float = 0.0) -> None:
        await asyncio.sleep(self.delay_s(deadline_s, at_least_s))

    def exhausted(self, deadline_s: float) -> bool:
        """True when the next wait would reach the deadline: no attempt would follow it."""
        return time.monotonic() + self._next_s >= deadline_s

    def reset(self) -> None:
        self._next_s = self._policy.first_s


def retry(attempt: Callable[[], T], *, policy: RetryPolicy, deadline_s: float,
          retry_on: Callable[[Exception], bool]) -> T:
    """Call `attempt()` until it returns, raises something `retry_on` rejects, or the deadline passes.

    The last exception is raised when time runs out; the caller decides what it means.
    """
    backoff = policy.backoff()
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not retry_on(exc) or backoff.exhausted(deadline_s):
                raise
        backoff.sleep(deadline_s)


async def retry_async(attempt: Callable[[], Awaitable[T]], *, policy: RetryPolicy, deadline_s: float,
                      retry_on: Callable[[Exception], bool]) -> T:
    """The asyncio form of `retry`."""
    backoff = policy.backoff()
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not retry_on(exc) or backoff.exhausted(deadline_s):
                raise
        await backoff.asleep(deadline_s)
