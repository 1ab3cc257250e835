"""``HudCallback``: a trace recorder whose nodes, LM spend and optimizer candidates go to a HUD.

In-process (``HudCallback(log=server.log)``, what :func:`dspy_pylon.hud.open` makes) an event is
one append to the server's :class:`~dspy_pylon.hud.events.EventLog`. Across processes
(``HudCallback("http://127.0.0.1:8765/?token=...")``, a ``pylon hud`` started elsewhere) events
wait in a bounded queue that a thread of its own posts in batches; when the HUD cannot keep up,
what does not fit is dropped and counted (``dropped``, shown on the page), never waited for.
Each finished run is forgotten once told, so a long-lived process does not grow.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from typing import Any

from dspy_pylon.hud.events import EventKind, EventLog, budget_event, candidate_event, node_event
from dspy_pylon.plain_errors import ConfigError
from dspy_pylon.trace.graph import NodeType
from dspy_pylon.trace.recorder import TraceRecorder, now_ns

log = logging.getLogger(__name__)

#: Events a remote HUD callback sends per request, and how often.
BATCH = 500
SEND_EVERY_SECONDS = 0.1


class _Sender:
    """Posts queued events to a HUD's ``/ingest`` from a daemon thread (started with the first event).

    A HUD that is down costs one attempt per back-off period (0.1 s doubling to 5 s), never a
    busy loop; what could not be sent is dropped and its count sent with the next batch that goes.
    """

    MAX_BACKOFF_SECONDS = 5.0

    def __init__(self, url: str, max_queue: int, timeout: float = 5.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"a HUD URL is http(s)://host:port/[?token=...], got {url!r}")
        token = urllib.parse.parse_qs(parsed.query).get("token", [None])[0]
        self.endpoint = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "/ingest", "", ""))
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.queue: deque[dict[str, Any]] = deque()
        self.max_queue = max_queue
        self.dropped = 0
        self.failures = 0
        self._unsent_dropped = 0
        self._sending = 0  # events taken from the queue and not yet answered for
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def put(self, kind: EventKind, data: Mapping[str, Any]) -> None:
        with self._lock:
            if self._closed or len(self.queue) >= self.max_queue:
                self.dropped += 1
                self._unsent_dropped += 1
                return
            self.queue.append({"kind": kind.value, "data": dict(data)})
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pylon-hud-sender", daemon=True)
                self._thread.start()

    def _take(self) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
            dropped = self._unsent_dropped if batch else 0  # a lone count waits for real events
            self._unsent_dropped -= dropped
            self._sending = len(batch)
            return batch, dropped

    def _failed(self, batch: list[dict[str, Any]], dropped: int, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self.dropped += len(batch)
            self._unsent_dropped += len(batch) + dropped
            first = self.failures == 1
        if first:  # once: the run goes on without its HUD
            log.warning("the HUD at %s is not taking events (%s); they are dropped", self.endpoint, exc)

    def _run(self) -> None:
        import httpx

        backoff = SEND_EVERY_SECONDS
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                batch, dropped = self._take()
                if batch:
                    try:
                        body = json.dumps({"events": batch, "dropped": dropped}, allow_nan=False, default=str)
                        response = client.post(
                            self.endpoint,
                            content=body,
                            headers={**self.headers, "Content-Type": "application/json"},
                        )
                        response.raise_for_status()
                        backoff = SEND_EVERY_SECONDS
                    except Exception as exc:  # whatever it was, the sender goes on (and the run)
                        self._failed(batch, dropped, exc)
                        with self._lock:
                            self._sending = 0
                        if self._closed:
                            return
                        self._wake.wait(backoff)
                        self._wake.clear()
                        backoff = min(backoff * 2, self.MAX_BACKOFF_SECONDS)
                        continue
                    with self._lock:
                        self._sending = 0
                    continue
                if self._closed:
                    return
                self._wake.wait(SEND_EVERY_SECONDS)
                self._wake.clear()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued was sent or dropped; whether it was all sent."""
        deadline = time.monotonic() + timeout
        failures = self.failures
        while True:
            with self._lock:
                if not self.queue and not self._sending:
                    return self.failures == failures and not self._unsent_dropped
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


class HudCallback(TraceRecorder):
    """Records the run (a :class:`~dspy_pylon.trace.recorder.TraceRecorder`) and shows it on a HUD.

    Give either ``url`` (a ``pylon hud`` page's URL, its token included) or ``log`` (an
    in-process server's event log). ``keep_content=True`` shows prompts and answers (cut
    short); otherwise only their digests. ``max_queue`` bounds what waits for a remote HUD.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        log: EventLog | None = None,
        keep_content: bool = False,
        max_queue: int = 20_000,
    ) -> None:
        if (url is None) == (log is None):
            raise ConfigError("HudCallback needs a HUD's url or an in-process event log, not both")
        super().__init__(keep_content=keep_content)
        self.log = log
        self._sender = _Sender(url, max_queue) if url is not None else None
        self._lms: dict[str, Any] = {}
        self._closed = False
        if self._sender is not None:
            atexit.register(self.flush, 10.0)  # a script's last events reach the HUD before it exits

    @property
    def dropped(self) -> int:
        """Events left out because the HUD could not keep up (always 0 in-process)."""
        return self._sender.dropped if self._sender is not None else 0

    def _emit(self, kind: EventKind, data: Mapping[str, Any]) -> None:
        if self._closed:
            return
        if self.log is not None:
            self.log.append(kind, data)
        elif self._sender is not None:
            self._sender.put(kind, data)

    def on_trace_node_start(self, node: Any) -> None:
        """Show the node as running."""
        self._emit(EventKind.NODE_START, node_event(node, ended=False))

    def on_trace_node_end(self, node: Any) -> None:
        """Show how the node ended."""
        self._emit(EventKind.NODE_END, node_event(node, ended=True))

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        """A run ended: say so, and forget it (the page keeps it). A candidate reported after its
        compile ended is no run of its own (the page shows it under the compile)."""
        self.forget(graph)
        if any(node.type is not NodeType.CANDIDATE for node in graph):
            self._emit(EventKind.RUN_COMPLETE, {"nodes": len(graph)})

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """Record the call, and remember its LM to report its spend when it ends."""
        super().on_lm_start(call_id, instance, inputs)
        if callable(getattr(instance, "total_spent_msats", None)):
            with self._lock:
                self._lms[call_id] = instance

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """Record the call; a pylon LM's spend against its budget goes to the gauge."""
        super().on_lm_end(call_id, outputs, exception)
        with self._lock:
            instance = self._lms.pop(call_id, None)
        if instance is not None:
            budget_sats = getattr(getattr(instance, "config", None), "budget_sats", 0) or 0
            limit = budget_sats * 1000 if budget_sats > 0 else None
            # Keyed by the LM's runtime: its copies share one budget, two LMs of one name do not.
            key = f"{instance.model}#{id(getattr(instance, 'runtime', instance)):x}"
            self._emit(EventKind.BUDGET, budget_event(instance.model, instance.total_spent_msats(), limit, key))

    def on_optimizer_candidate(
        self, candidate_id: str, metrics: Any, parent_id: str | None, program_state: Any
    ) -> None:
        """A candidate joins the score chart and the lineage tree (and the call tree, as a node)."""
        super().on_optimizer_candidate(candidate_id, metrics, parent_id, program_state)
        self._emit(EventKind.CANDIDATE, candidate_event(candidate_id, dict(metrics), parent_id, now_ns()))

    def flush(self, timeout: float = 30.0) -> bool:
        """Send what waits for a remote HUD; whether it all went in ``timeout`` s."""
        return self._sender.flush(timeout) if self._sender is not None else True

    def close(self, timeout: float = 10.0) -> None:
        """Send what waits, stop the sender and leave DSPy's callbacks."""
        import contextlib

        import dspy

        if self._sender is not None:
            self._sender.close(timeout)
        self._closed = True  # even if DSPy keeps it registered (another thread owns its configuration)
        callbacks = list(dspy.settings.get("callbacks", None) or [])
        if self in callbacks:
            with contextlib.suppress(RuntimeError):  # another thread owns DSPy's configuration
                dspy.configure(callbacks=[c for c in callbacks if c is not self])
