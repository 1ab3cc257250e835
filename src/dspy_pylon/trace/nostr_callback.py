"""``NostrCallback``: a trace recorder that publishes each finished run as signed receipts, as
the program goes — off the program's threads, in a bounded queue, never blocking DSPy."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from dspy_pylon.trace.graph import TraceGraph
from dspy_pylon.trace.nostr_bridge import NostrBridge, PublishedTrace
from dspy_pylon.trace.recorder import TraceRecorder

log = logging.getLogger(__name__)


class NostrCallback(TraceRecorder):
    """Records every run (a :class:`~dspy_pylon.trace.recorder.TraceRecorder`) and publishes it
    to ``relays`` as receipts signed with ``keys`` once it ends (:class:`NostrBridge`).

    Runs wait in a queue of ``max_runs``; a publisher thread of its own sends them one by one.
    When relays fall behind, a run that does not fit is dropped and counted (``dropped``); one
    that no relay takes is counted in ``failures`` (logged once). ``published`` holds what went
    out, oldest first (the latest 1,000). A finished run is forgotten by the recorder once queued.
    """

    def __init__(
        self,
        relays: Sequence[str],
        keys: Any,
        *,
        manifest: Any = None,
        keep_content: bool = False,
        max_runs: int = 1_000,
        bridge: NostrBridge | None = None,
    ) -> None:
        super().__init__(keep_content=keep_content)
        self.bridge = bridge if bridge is not None else NostrBridge(relays, keys)
        if self.bridge.keys is None:
            from dspy_pylon.errors import ConfigError

            raise ConfigError("NostrCallback needs keys to sign its receipts")
        self.manifest = manifest
        self.published: list[PublishedTrace] = []
        self.dropped = 0
        self.failures = 0
        self._queue: queue.Queue[TraceGraph | None] = queue.Queue(max_runs)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        atexit.register(self.flush, 30.0)  # runs queued when the program ends still go out

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        """Queue the finished run for publishing (never waits)."""
        self.forget(graph)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish_all, name="pylon-receipts", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(graph)
        except queue.Full:
            with self._start_lock:
                self.dropped += 1

    def _publish_all(self) -> None:
        from dspy_pylon.errors import PylonError

        while True:
            graph = self._queue.get()
            try:
                if graph is None:
                    return
                published = self.bridge.publish_trace(graph, self.manifest)
                self.published.append(published)
                del self.published[:-1000]
            except PylonError as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("trace receipts not published (%s: %s); the run goes on", type(exc).__name__, exc)
            except Exception:  # a bug must not end the publisher thread
                self.failures += 1
                log.exception("publishing trace receipts failed")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every queued run was published (or failed); whether it happened in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Publish what is queued, stop the publisher, disconnect, and leave DSPy's callbacks."""
        import contextlib

        import dspy

        atexit.unregister(self.flush)
        self.flush(timeout)
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            thread.join(timeout)
            if thread.is_alive():  # still publishing: its client stays open to the end of the process
                log.warning("trace receipts still publishing after %.0f s; left to finish", timeout)
                return
            self._thread = None
        self.bridge.close()
        callbacks = list(dspy.settings.get("callbacks", None) or [])
        if self in callbacks:
            with contextlib.suppress(RuntimeError):  # another thread owns DSPy's configuration
                dspy.configure(callbacks=[c for c in callbacks if c is not self])
