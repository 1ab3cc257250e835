"""The one background event loop per process that owns all Nostr I/O.

nostr-sdk is asyncio-only, while DSPy calls LMs from its own worker threads
(Evaluate, Parallel, optimizers). One daemon thread runs an event loop; sync callers
submit coroutines to it and wait on the future, async callers await the same future
from their own loop. Clients and subscriptions live on this loop only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class NostrLoop:
    """A daemon thread running an asyncio event loop; :meth:`shared` is the process-wide one."""

    _shared: NostrLoop | None = None
    _shared_lock = threading.Lock()

    def __init__(self, name: str = "pylon-nostr") -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=main, name=name, daemon=True)
        self.thread.start()
        ready.wait()

    @classmethod
    def shared(cls) -> NostrLoop:
        """The process-wide loop, started on first use."""
        with cls._shared_lock:
            if cls._shared is None or not cls._shared.thread.is_alive():
                cls._shared = cls()
            return cls._shared

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (from any thread but the loop's)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("NostrLoop.run called from the loop thread itself; await the coroutine instead")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the loop, from another event loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        """Stop the loop and join its thread (tests; the shared loop lives as long as the process)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
