"""``pylon.trace.instrument()``: record every run and export its spans as each run ends, without
blocking the program (spans queue in the SDK's batching processor, sent from its own thread)."""

from __future__ import annotations

import atexit
import contextlib
from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from dspy_pylon.trace.otel import graph_to_spans, otlp_endpoint_set
from dspy_pylon.trace.recorder import TraceRecorder


class ExportingRecorder(TraceRecorder):
    """A :class:`TraceRecorder` that hands each finished run's spans to a batching processor.

    The processor's queue is bounded: when a sink falls behind, spans are dropped (the SDK logs
    it), never the program slowed. An exported run is forgotten (``graph`` holds the runs still
    going), so a long-lived process does not grow. :meth:`close` flushes and stops it (also at exit).
    """

    def __init__(self, exporter: SpanExporter, keep_content: bool = False, manifest: Any = None) -> None:
        super().__init__(keep_content=keep_content)
        self.manifest = manifest
        # A queue big enough for a large Evaluate's run at once (the default 2,048 dropped spans of a
        # 600-example run); beyond it the SDK drops and logs, never blocking the program.
        self.processor = BatchSpanProcessor(exporter, max_queue_size=1 << 16, max_export_batch_size=512)
        atexit.register(self.close)

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        """Queue the finished run's spans for export."""
        try:
            for span in graph_to_spans(graph, manifest or self.manifest, include_content=self.keep_content):
                self.processor.on_end(span)
        finally:
            self.forget(graph)

    def flush(self, timeout_ms: int = 30_000) -> bool:
        """Send what is queued now; whether it all went."""
        return bool(self.processor.force_flush(timeout_ms))

    def close(self) -> None:
        """Flush, stop exporting, and leave DSPy's callbacks."""
        import dspy

        self.processor.shutdown()  # type: ignore[no-untyped-call]
        callbacks = list(dspy.settings.get("callbacks", None) or [])
        if self in callbacks:
            # DSPy lets only the thread that configured it configure it: elsewhere, it stays listed, closed.
            with contextlib.suppress(RuntimeError):
                dspy.configure(callbacks=[c for c in callbacks if c is not self])


def instrument(
    exporter: SpanExporter | None = None, keep_content: bool = False, manifest: Any = None
) -> ExportingRecorder:
    """Record every DSPy run from now on and export it: to ``exporter``, or over OTLP/HTTP to
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (:class:`~dspy_pylon.errors.ConfigError` when neither is given).

    Registers the recorder with DSPy (:func:`dspy_pylon.set_callback`) and returns it (its
    ``graph`` holds the runs still going: finished ones are exported and forgotten). A recorder
    an earlier ``instrument()`` registered is closed first: runs are exported once.
    """
    from dspy_pylon.callbacks import set_callback
    from dspy_pylon.plain_errors import ConfigError

    if exporter is None:
        if not otlp_endpoint_set():
            raise ConfigError("instrument() needs an exporter, or OTEL_EXPORTER_OTLP_ENDPOINT set")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    import dspy

    for earlier in list(dspy.settings.get("callbacks", None) or []):
        if isinstance(earlier, ExportingRecorder):
            earlier.close()
    recorder = ExportingRecorder(exporter, keep_content=keep_content, manifest=manifest)
    try:
        set_callback(recorder)
    except RuntimeError as exc:  # DSPy refuses configure() from another thread than its owner
        recorder.processor.shutdown()  # type: ignore[no-untyped-call]
        raise ConfigError(f"instrument() must run where DSPy was configured: {exc}") from None
    return recorder
