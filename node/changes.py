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
        try:
            await asyncio.wait_for(asyncio.shield(self._future), timeout=timeout_s)
            return True
        except TimeoutError:
            return False
