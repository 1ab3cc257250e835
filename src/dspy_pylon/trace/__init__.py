"""Seeing a run: the trace DAG (``graph``), the recorder that builds it from DSPy's callbacks
(``recorder``), what an LM call reports about itself (``lm_calls``), and OpenTelemetry spans
(``otel``). ``pylon.trace.instrument()`` records every run and exports it; ``pylon.trace.export``
sends one graph to any exporter.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export": "dspy_pylon.trace.otel",
    "graph_to_spans": "dspy_pylon.trace.otel",
    "TraceContract": "dspy_pylon.trace.otel",
    "instrument": "dspy_pylon.trace.exporting",
    "ExportingRecorder": "dspy_pylon.trace.exporting",
    "TraceRecorder": "dspy_pylon.trace.recorder",
    "TraceGraph": "dspy_pylon.trace.graph",
    "TraceNode": "dspy_pylon.trace.graph",
}


def __getattr__(name: str) -> Any:
    # OpenTelemetry and DSPy load only when what needs them is touched.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspy_pylon.trace' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
