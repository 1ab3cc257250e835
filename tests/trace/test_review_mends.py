"""What the trace review found: large runs, several recorders, a lone LM call, late candidates,
hand-made graphs, odd inputs, unknown cost, and instrument() twice."""

from __future__ import annotations

import json
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dspy_pylon as pylon
from dspy_pylon.trace.graph import NodeType, TraceGraph
from dspy_pylon.trace.otel import export, graph_to_spans
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter
from tests.trace.test_recorder import _dummy, compile_small


def _evaluate(n: int, lm: Any, callbacks: list[Any] | None = None, threads: int = 8) -> None:
    devset = [dspy.Example(question=f"q{i % 40}").with_inputs("question") for i in range(n)]
    with dspy.context(lm=lm, **({"callbacks": callbacks} if callbacks is not None else {})):
        dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: True, num_threads=threads)(
            dspy.Predict("question -> answer")
        )


def test_a_large_run_is_exported_whole() -> None:
    exporter = InMemorySpanExporter()
    recorder = pylon.trace.instrument(exporter)
    try:
        _evaluate(600, _dummy())
        assert recorder.flush()
    finally:
        recorder.close()
    spans = exporter.get_finished_spans()
    assert len(spans) == 1 + 600 * 4  # the default queue of 2,048 dropped a fifth of them
    ids = {s.context.span_id for s in spans}
    assert all(s.parent is None or s.parent.span_id in ids for s in spans)
    direct = InMemorySpanExporter()
    keeper = TraceRecorder()
    _evaluate(300, _dummy(), [keeper])
    assert len(export(keeper.graph, direct)) == len(direct.get_finished_spans()) == 1 + 300 * 4


def test_every_recorder_gets_the_usage_of_pylon_calls(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, cache=False)
    first, second = TraceRecorder(), TraceRecorder()
    with dspy.context(adapter=WholeAnswerAdapter()):
        _evaluate(12, lm, [first, second], threads=4)
    for recorder in (first, second):
        calls = [n for n in recorder.graph if n.type is NodeType.LM]
        assert len(calls) == 12 and all(n.usage and n.usage["prompt_tokens"] > 0 for n in calls)


def test_a_lone_lm_call_is_exported_with_its_tokens(llamacpp_url: str) -> None:
    exporter = InMemorySpanExporter()
    recorder = pylon.trace.instrument(exporter)
    try:
        pylon.LM("pylon:local:llamacpp", max_tokens=4, cache=False)("hello")
        assert recorder.flush()
    finally:
        recorder.close()
    [span] = exporter.get_finished_spans()
    assert span.parent is None and span.attributes["gen_ai.usage.input_tokens"] > 0
    assert span.attributes["pylon.cost_msats"] == 0


def test_candidates_reported_after_their_compile_was_exported_are_exported_too() -> None:
    exporter = InMemorySpanExporter()
    recorder = pylon.trace.instrument(exporter)
    try:
        with dspy.context(lm=_dummy()):
            _, manifest = compile_small()
        assert recorder.flush()
    finally:
        recorder.close()
    spans = exporter.get_finished_spans()
    [candidate] = [s for s in spans if s.attributes["dsrs.node_type"] == "candidate"]
    assert [s for s in spans if s.attributes["dsrs.node_type"] == "compile"]
    assert candidate.attributes["dsrs.compiled_id"] == manifest.compiled_id
    assert candidate.parent is None  # its compile's run had gone: a run of its own, linked by id
    assert candidate.attributes["dsrs.compile_call_id"]
    assert len(recorder.graph) == 0


def test_a_hand_made_graph_with_a_cycle_or_bad_types_is_refused() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="q1")
    document = json.loads(recorder.graph.to_json())
    first, second = document["nodes"][0], document["nodes"][1]
    first["parent_id"], second["parent_id"] = second["id"], first["id"]
    with pytest.raises(pylon.ManifestError):
        TraceGraph.from_json(json.dumps(document))
    document = json.loads(recorder.graph.to_json())
    document["nodes"][0]["start_ns"] = "x"
    with pytest.raises(pylon.ManifestError):
        TraceGraph.from_json(json.dumps(document))


def test_inputs_json_cannot_write_still_make_a_node() -> None:
    class Odd(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict("question -> answer")

        def forward(self, question: str, extra: Any = None) -> Any:
            return self.predict(question=question)

    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Odd()(question="q1", extra={1: "a", "b": 2})  # keys json.dumps cannot sort
    [root] = recorder.graph.roots()
    assert root.name == "Odd" and [c.type for c in recorder.graph.children(root.id)] == [NodeType.PREDICTOR]


def test_an_lm_without_exact_cost_reports_tokens_but_no_cost() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=DummyLM([{"answer": "a"}]), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="q")
    [span] = [s for s in graph_to_spans(recorder.graph) if s.attributes["dsrs.node_type"] == "lm"]
    assert "pylon.cost_msats" not in span.attributes and "gen_ai.usage.cost.amount" not in span.attributes


def test_instrument_twice_exports_each_run_once() -> None:
    old, new = InMemorySpanExporter(), InMemorySpanExporter()
    first = pylon.trace.instrument(old)
    second = pylon.trace.instrument(new)  # closes the first
    try:
        assert first not in dspy.settings.callbacks and second in dspy.settings.callbacks
        with dspy.context(lm=_dummy()):
            dspy.Predict("question -> answer")(question="q1")
        assert second.flush()
    finally:
        second.close()
    assert len(new.get_finished_spans()) == 4 and not old.get_finished_spans()
    assert second not in dspy.settings.callbacks
