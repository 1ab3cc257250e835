"""Callbacks: DSPy's ``BaseCallback`` with what pylon adds, a composite that never breaks a run,
and a queue in front of slow sinks.

``PylonCallback`` adds ``on_optimizer_candidate`` (fed by :func:`dspy_pylon.compile`), and
``on_trace_node_start`` / ``on_trace_node_end`` / ``on_trace_complete`` (fed by the trace
recorder registered with DSPy: a live view needs nodes as they start, spans only arrive when
they end). Register callbacks as DSPy does (``dspy.configure(callbacks=[...])``) or with
:func:`set_callback`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dspy.utils.callback import ACTIVE_CALL_ID, BaseCallback

log = logging.getLogger(__name__)


class PylonCallback(BaseCallback):  # type: ignore[misc]  # dspy ships no types
    """A DSPy callback that also hears optimizer candidates and the trace as it is recorded."""

    def on_optimizer_candidate(
        self, candidate_id: str, metrics: Mapping[str, float], parent_id: str | None, program_state: Mapping[str, Any]
    ) -> None:
        """A candidate program an optimizer produced (its ``compiled_id``, scores, parent's id, artifact)."""

    def on_trace_node_start(self, node: Any) -> None:
        """The recorder saw a call begin: ``node`` is a copy of its
        :class:`~dspy_pylon.trace.graph.TraceNode` (status running, parent set)."""

    def on_trace_node_end(self, node: Any) -> None:
        """The recorder saw a call end: a copy of its node with status, timing, usage and route."""

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        """A run's outermost call ended: ``graph`` is its :class:`~dspy_pylon.trace.graph.TraceGraph`."""

    @staticmethod
    def lm_call_info(call_id: str) -> Any:
        """In ``on_lm_end``: a pylon LM call's tokens, exact cost (msats) and route
        (:class:`~dspy_pylon.trace.lm_calls.LmCallInfo`), or ``None`` for another LM's call."""
        from dspy_pylon.trace import lm_calls

        return lm_calls.get(call_id)


_HOOKS = tuple(name for name in dir(PylonCallback) if name.startswith("on_") and callable(getattr(PylonCallback, name)))
#: Hooks a recorder feeds: a recorder never hears another's (it would export that run twice).
TRACE_HOOKS = frozenset({"on_trace_node_start", "on_trace_node_end", "on_trace_complete"})


def records_traces(callback: Any) -> bool:
    """Whether ``callback`` is a trace recorder (which makes trace events rather than hearing them)."""
    return bool(getattr(callback, "records_traces", False))


class CompositeCallback(PylonCallback):
    """Calls every callback in order for every hook. A callback that raises is logged (once per
    callback and hook) and skipped; the run and the other callbacks go on."""

    def __init__(self, callbacks: Iterable[BaseCallback]) -> None:
        self.callbacks = tuple(callbacks)
        self._reported: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self.failures = 0

    def _forward(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is None or (hook in TRACE_HOOKS and records_traces(callback)):
                continue
            try:
                method(*args, **kwargs)
            except Exception:
                with self._lock:
                    self.failures += 1
                    first = (id(callback), hook) not in self._reported
                    self._reported.add((id(callback), hook))
                if first:
                    log.exception("callback %s failed in %s (reported once; the run goes on)", callback, hook)

    def __deepcopy__(self, memo: dict[int, Any]) -> CompositeCallback:
        return self  # optimizers deep-copy programs: their callbacks are sinks shared by every copy


def _forwarder(hook: str) -> Any:
    def forward(self: CompositeCallback, *args: Any, **kwargs: Any) -> None:
        self._forward(hook, *args, **kwargs)

    forward.__name__ = hook
    forward.__doc__ = f"Forward ``{hook}`` to every callback."
    return forward


for _hook in _HOOKS:
    setattr(CompositeCallback, _hook, _forwarder(_hook))


class QueuedCallback(PylonCallback):
    """Puts a slow sink behind a bounded queue: every hook returns at once, the sink hears the
    hooks in order on a thread of its own, and when the queue is full a hook is dropped and
    counted (``dropped``), never waited for. A sink that raises is logged once and goes on.

    The sink sees DSPy's ``ACTIVE_CALL_ID`` as the caller had it. It must not be a trace
    recorder (a recorder reads the caller's state as the call happens: register it directly).
    """

    def __init__(self, callback: BaseCallback, max_queue: int = 10_000) -> None:
        if records_traces(callback):
            from dspy_pylon.plain_errors import ConfigError

            raise ConfigError("a trace recorder cannot sit behind a queue: register it with DSPy directly")
        self.callback = callback
        self.max_queue = max_queue
        self.dropped = 0
        self._composite = CompositeCallback([callback])
        self._queue: queue.Queue[tuple[str, Any, tuple[Any, ...], dict[str, Any]] | None] = queue.Queue(max_queue)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def failures(self) -> int:
        """How many hooks the sink raised in."""
        return self._composite.failures

    def _put(self, hook: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:  # against close(): nothing is queued behind its end marker
            if self._closed:
                self.dropped += 1
                return
            if self._worker is None:  # the thread starts with the first hook: constructing does no I/O
                self._worker = threading.Thread(target=self._drain, name="pylon-callback-queue", daemon=True)
                self._worker.start()
            try:
                self._queue.put_nowait((hook, ACTIVE_CALL_ID.get(), args, kwargs))
            except queue.Full:
                self.dropped += 1

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                hook, call_id, args, kwargs = item
                token = ACTIVE_CALL_ID.set(call_id)
                try:
                    self._composite._forward(hook, *args, **kwargs)
                finally:
                    ACTIVE_CALL_ID.reset(token)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the sink heard everything queued so far; whether it did in ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Let the sink hear what is queued, then stop its thread; later hooks are dropped."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._lock:
            self._closed = True
            worker = self._worker
        if worker is not None:
            try:
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                return  # the sink is stuck: its daemon thread is left to the process's end
            worker.join(max(0.0, deadline - time.monotonic()))

    def __deepcopy__(self, memo: dict[int, Any]) -> QueuedCallback:
        return self


def _enqueuer(hook: str) -> Any:
    def enqueue(self: QueuedCallback, *args: Any, **kwargs: Any) -> None:
        self._put(hook, args, kwargs)

    enqueue.__name__ = hook
    enqueue.__doc__ = f"Queue ``{hook}`` for the sink."
    return enqueue


for _hook in _HOOKS:
    setattr(QueuedCallback, _hook, _enqueuer(_hook))


def set_callback(callback: BaseCallback) -> None:
    """Register ``callback`` globally (beside the ones already configured in DSPy)."""
    import dspy

    current = list(dspy.settings.get("callbacks", None) or [])
    if callback not in current:
        dspy.configure(callbacks=[*current, callback])


def get_callback(kind: type[BaseCallback] = PylonCallback) -> BaseCallback | None:
    """The first globally registered callback of ``kind`` (a pylon callback by default), if any."""
    import dspy

    for callback in dspy.settings.get("callbacks", None) or []:
        if isinstance(callback, kind):
            return callback
    return None
