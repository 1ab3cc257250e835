"""Callbacks: DSPy's ``BaseCallback`` with what pylon adds, and a composite that never breaks a run.

``PylonCallback`` adds ``on_optimizer_candidate`` (fed by :func:`dspy_pylon.compile`) and
``on_trace_complete`` (fed by the trace recorder when a run's outermost call ends). Register
callbacks as DSPy does (``dspy.configure(callbacks=[...])``) or with :func:`set_callback`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from dspy.utils.callback import BaseCallback

log = logging.getLogger(__name__)


class PylonCallback(BaseCallback):  # type: ignore[misc]  # dspy ships no types
    """A DSPy callback that also hears optimizer candidates and finished traces."""

    def on_optimizer_candidate(
        self, candidate_id: str, metrics: Mapping[str, float], parent_id: str | None, program_state: Mapping[str, Any]
    ) -> None:
        """A candidate program an optimizer produced (its ``compiled_id``, scores, parent's id, artifact)."""

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        """A run's outermost call ended: ``graph`` is its :class:`~dspy_pylon.trace.graph.TraceGraph`."""

    @staticmethod
    def lm_call_info(call_id: str) -> Any:
        """In ``on_lm_end``: a pylon LM call's tokens, exact cost (msats) and route
        (:class:`~dspy_pylon.trace.lm_calls.LmCallInfo`), or ``None`` for another LM's call."""
        from dspy_pylon.trace import lm_calls

        return lm_calls.get(call_id)


_HOOKS = tuple(name for name in dir(PylonCallback) if name.startswith("on_") and callable(getattr(PylonCallback, name)))


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
            if method is None:
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


def _forwarder(hook: str) -> Any:
    def forward(self: CompositeCallback, *args: Any, **kwargs: Any) -> None:
        self._forward(hook, *args, **kwargs)

    forward.__name__ = hook
    forward.__doc__ = f"Forward ``{hook}`` to every callback."
    return forward


for _hook in _HOOKS:
    setattr(CompositeCallback, _hook, _forwarder(_hook))


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
