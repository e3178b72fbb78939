"""ChangeSignal: "the metadata changed", broadcast to any number of asyncio waiters.

One asyncio.Event shared by several consumers that each clear it loses wake-ups; here
every waiter waits on the current generation's future, and `notify` (called on the event
loop) resolves it and starts the next generation.
"""
from __future__ import annotations

import asyncio


class ChangeSignal:
    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next notify, at most timeout_s; True if it came."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        try:   # not wait_for: Python 3.11's returns the result and drops a cancel that lands as it fires,
            async with asyncio.timeout(timeout_s):   # and a `while True` waiter then never stops (seen: a node that ignored SIGTERM)
                await asyncio.shield(self._future)
            return True
        except TimeoutError:
            return False
