"""What tracing costs per LM call: pylon's recorder with span export, against no tracing and
against ``openinference-instrumentation-dspy`` (PyPI), in one run (one JSON line).

The program: a ``dspy.Module`` making ``--calls`` predictor calls (``dspy.Predict``, DSPy's
``ChatAdapter``) against DSPy's ``DummyLM``. Each round runs three contenders, interleaved in
rotating order:

* ``none``          - no callback, no instrumentation: the floor.
* ``pylon``         - ``pylon.trace.instrument(InMemorySpanExporter())``: the recorder builds
  the graph, each finished run becomes spans queued to the SDK's batching processor; the
  timing includes ``flush()``, so every span reached the exporter.
* ``openinference`` - ``DSPyInstrumentor().instrument(tracer_provider=...)`` with a
  ``BatchSpanProcessor`` into an ``InMemorySpanExporter``, flushed the same way; uninstrumented
  after its round so the others run on plain DSPy.

Reported: the overhead per LM call of each (traced minus floor, over ``--calls``), their
ratio (target <= 0.5: ours at most half of openinference's), and what each exported per run
(spans, attributes per span, and whether token counts and parents are there).

    .venv/bin/python benchmarks/trace_overhead.py [--rounds 15] [--calls 200]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import emit, machine, median, rnd, rotated

TARGET_RATIO = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (each runs all three once)")
    parser.add_argument("--calls", type=int, default=200, help="predictor calls per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", choices=("pylon", "openinference"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build(calls: int) -> tuple[Any, Any]:
    import dspy
    from dspy.utils.dummies import DummyLM

    class Many(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.step = dspy.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            answer = None
            for i in range(calls):
                answer = self.step(question=f"{question} {i}").answer
            return dspy.Prediction(answer=answer)

    lm = DummyLM([{"answer": "42"}] * (calls * 4096))  # never runs dry; the same answer every call
    return Many(), lm


class Worker:
    """One process's contenders: ``none`` and one tracer. openinference's ``uninstrument()``
    leaves DSPy's callbacks broken in the process it ran in (module, predictor and LM calls no
    longer reach any callback afterwards), so each tracer gets a process of its own, with its
    own floor measured beside it."""

    def __init__(self, tracer: str, calls: int) -> None:
        import dspy
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.dspy = dspy
        self.program, self.lm = build(calls)
        self.tracer = tracer
        self.spans: list[Any] = []
        if tracer == "pylon":
            import dspy_pylon as pylon

            self.exporter = InMemorySpanExporter()
            self.recorder = pylon.trace.instrument(self.exporter)
            dspy.configure(callbacks=[])  # registered only around its own runs
        else:
            from openinference.instrumentation.dspy import DSPyInstrumentor
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self.exporter = InMemorySpanExporter()
            provider = TracerProvider()
            self.processor = BatchSpanProcessor(self.exporter, max_queue_size=1 << 16, max_export_batch_size=512)
            provider.add_span_processor(self.processor)
            self.instrumentor = DSPyInstrumentor()
            self.instrumentor.instrument(tracer_provider=provider)
            self.instrumentor_on = True

    def run(self, contender: str) -> float:
        gc.collect()
        if contender == "none":
            return self._timed(traced=False)
        return self._timed(traced=True)

    def _timed(self, traced: bool) -> float:
        dspy = self.dspy
        if self.tracer == "pylon":
            self.exporter.clear()
            callbacks = [self.recorder] if traced else []
            began = time.perf_counter()
            with dspy.context(lm=self.lm, callbacks=callbacks):
                self.program(question="q")
            if traced:
                assert self.recorder.flush()
            elapsed = time.perf_counter() - began
        else:
            # Instrumented once for the whole process; the floor runs with the tracer suppressed
            # (OpenTelemetry's suppress key: openinference's wrappers return straight away).
            from opentelemetry import context as otel_context
            from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

            self.exporter.clear()
            token = None if traced else otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                began = time.perf_counter()
                with dspy.context(lm=self.lm, callbacks=[]):
                    self.program(question="q")
                if traced:
                    assert self.processor.force_flush()
                elapsed = time.perf_counter() - began
            finally:
                if token is not None:
                    otel_context.detach(token)
        if traced:
            self.spans = list(self.exporter.get_finished_spans())
        return elapsed


def serve_worker(tracer: str, calls: int) -> None:
    """A worker process: reads a contender name per line, answers its time (and, on ``report``,
    what its tracer exported) as one JSON line."""
    import json

    worker = Worker(tracer, calls)
    for line in sys.stdin:
        command = line.strip()
        if command == "report":
            print(json.dumps(describe(worker.spans)), flush=True)
        elif command:
            print(json.dumps(worker.run(command)), flush=True)


class WorkerProcess:
    def __init__(self, tracer: str, calls: int) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", tracer, "--calls", str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> Any:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def describe(spans: list[Any]) -> dict[str, Any]:
    """What one run exported: spans, attributes per span, tokens on LM spans, parents all present."""
    ids = {span.context.span_id for span in spans}
    attributes = [len(span.attributes or {}) for span in spans]

    def is_lm(span: Any) -> bool:
        kind = (span.attributes or {}).get("openinference.span.kind")
        return kind == "LLM"

    lm_spans = [span for span in spans if is_lm(span)]
    token_keys = ("gen_ai.usage.input_tokens", "llm.token_count.prompt")
    with_tokens = [s for s in lm_spans if any(k in (s.attributes or {}) for k in token_keys)]
    return {
        "spans": len(spans),
        "attributes_per_span": rnd(sum(attributes) / max(len(attributes), 1), 1),
        "lm_spans": len(lm_spans),
        "lm_spans_with_tokens": len(with_tokens),
        "parents_present": all(span.parent is None or span.parent.span_id in ids for span in spans),
        "traces": len({span.context.trace_id for span in spans}),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        serve_worker(args.worker, args.calls)
        return
    workers = {tracer: WorkerProcess(tracer, args.calls) for tracer in ("pylon", "openinference")}
    # Every round runs the four (tracer, contender) pairs in rotating order, one at a time.
    pairs = [(tracer, contender) for tracer in workers for contender in ("none", "traced")]
    times: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    try:
        for round_ in range(args.warmup + args.rounds):
            for tracer, contender in rotated(pairs, round_):
                elapsed = float(workers[tracer].ask(contender))
                if round_ >= args.warmup:
                    times[(tracer, contender)].append(elapsed)
        exported = {tracer: worker.ask("report") for tracer, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.close()
    per_call_us = {
        tracer: (median(times[(tracer, "traced")]) - median(times[(tracer, "none")])) / args.calls * 1e6
        for tracer in workers
    }
    floor = min(median(times[(tracer, "none")]) for tracer in workers)
    ratio = per_call_us["pylon"] / per_call_us["openinference"] if per_call_us["openinference"] > 0 else float("inf")
    emit(
        {
            "benchmark": "trace_overhead",
            "calls": args.calls,
            "rounds": args.rounds,
            "floor_ms_per_call": rnd(floor / args.calls * 1e3, 4),
            "pylon_overhead_us_per_call": rnd(per_call_us["pylon"], 1),
            "openinference_overhead_us_per_call": rnd(per_call_us["openinference"], 1),
            "ratio": rnd(ratio),
            "target_ratio<=": TARGET_RATIO,
            "met": ratio <= TARGET_RATIO,
            "exported": exported,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
