"""The trace recorder: the right parent for every node under Evaluate threads, asyncio and nesting;
usage, exact cost and route on pylon LM calls; digests unless content is asked for."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceGraph
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter


class Two(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.think = dspy.ChainOfThought("question -> answer")
        self.check = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        self.think(question=question)
        return self.check(question=question)

    async def aforward(self, question: str) -> dspy.Prediction:
        await self.think.acall(question=question)
        return await self.check.acall(question=question)


def _dummy() -> DummyLM:
    return DummyLM({f"q{i}": {"reasoning": "because", "answer": str(i)} for i in range(40)})


def _examples(n: int) -> list[dspy.Example]:
    return [dspy.Example(question=f"q{i}", answer=str(i)).with_inputs("question") for i in range(n)]


def compile_small(k: int = 1, examples: int = 2) -> tuple[Any, Any]:
    """``pylon.compile`` at its smallest: LabeledFewShot, one unscored-before rollout, any LM configured."""
    return pylon.compile(
        dspy.Predict("question -> answer"),
        dspy.LabeledFewShot(k=k),
        _examples(examples),
        metric=lambda e, p, t=None: True,
        rollouts=1,
        baseline=False,
    )


def _assert_closed(graph: TraceGraph) -> None:
    for node in graph:
        assert node.parent_id is None or node.parent_id in graph.nodes, node
        assert node.status is not NodeStatus.RUNNING and node.duration_ns is not None and node.duration_ns >= 0
        if node.parent_id is not None:
            assert graph.nodes[node.parent_id].start_ns <= node.start_ns


def _check_two(graph: TraceGraph, node_id: str) -> None:
    children = graph.children(node_id)
    assert [(c.type, c.name) for c in children] == [
        (NodeType.MODULE, "ChainOfThought"),
        (NodeType.PREDICTOR, "question -> answer"),
    ]
    [inner] = graph.children(children[0].id)
    for predictor in (inner, children[1]):
        assert predictor.type is NodeType.PREDICTOR
        kinds = [c.type for c in graph.children(predictor.id)]
        assert kinds == [NodeType.ADAPTER_FORMAT, NodeType.LM, NodeType.ADAPTER_PARSE]


def test_every_node_has_its_parent_under_evaluate_threads() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        dspy.Evaluate(devset=_examples(24), metric=lambda e, p, t=None: True, num_threads=8)(Two())
    graph = recorder.graph
    _assert_closed(graph)
    [root] = graph.roots()
    assert root.type is NodeType.EVALUATE
    programs = graph.children(root.id)
    assert len(programs) == 24 and {p.name for p in programs} == {"Two"}
    for program in programs:
        _check_two(graph, program.id)
    assert Counter(n.type for n in graph)[NodeType.LM] == 48


def test_asyncio_gather_keeps_each_call_under_its_own_parent() -> None:
    recorder = TraceRecorder()

    async def main() -> None:
        program = Two()
        await asyncio.gather(*(program.acall(question=f"q{i}") for i in range(10)))

    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        asyncio.run(main())
    graph = recorder.graph
    _assert_closed(graph)
    roots = graph.roots()
    assert len(roots) == 10 and all(r.type is NodeType.PROGRAM for r in roots)
    for root in roots:
        _check_two(graph, root.id)


class Tree(dspy.Module):
    """A random tree of modules: each node calls its children in order, leaves are predictors."""

    def __init__(self, rng: random.Random, depth: int) -> None:
        super().__init__()
        self.parts = [
            Tree(rng, depth - 1) if depth > 0 and rng.random() < 0.5 else dspy.Predict("question -> answer")
            for _ in range(rng.randint(1, 3))
        ]

    def forward(self, question: str) -> Any:
        result = None
        for part in self.parts:
            result = part(question=question)
        return result


def _shape_of_module(module: Any) -> Any:
    if isinstance(module, dspy.Predict):
        return "predictor"
    return [_shape_of_module(part) for part in module.parts]


def _shape_of_node(graph: TraceGraph, node_id: str) -> Any:
    node = graph.nodes[node_id]
    if node.type is NodeType.PREDICTOR:
        return "predictor"
    return [_shape_of_node(graph, child.id) for child in graph.children(node_id)]


@pytest.mark.parametrize("seed", range(6))
def test_the_graph_mirrors_a_random_module_tree_run_on_threads(seed: int) -> None:
    rng = random.Random(seed)
    program = Tree(rng, depth=3)
    recorder = TraceRecorder()
    with dspy.context(lm=DummyLM([{"answer": "a"}] * 500), callbacks=[recorder]):
        dspy.Parallel(num_threads=4)([(program, {"question": f"q{i}"}) for i in range(6)])
    graph = recorder.graph
    _assert_closed(graph)
    tops = [n for n in graph if n.name == "Tree" and (n.parent_id is None or graph.nodes[n.parent_id].name != "Tree")]
    assert len(tops) == 6
    for top in tops:
        assert _shape_of_node(graph, top.id) == _shape_of_module(program)


def test_a_failing_call_is_an_error_node_and_its_parent_fails_too() -> None:
    class Broken(dspy.Module):
        def forward(self, question: str) -> Any:
            raise ValueError("no answer today")

    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]), pytest.raises(ValueError):
        Broken()(question="q1")
    [node] = list(recorder.graph)
    assert node.status is NodeStatus.ERROR and node.error_type == "ValueError"
    assert node.error is None  # a message can quote the prompt: kept only with keep_content
    loud = TraceRecorder(keep_content=True)
    with dspy.context(lm=_dummy(), callbacks=[loud]), pytest.raises(ValueError):
        Broken()(question="q1")
    assert "no answer" in (next(iter(loud.graph)).error or "")


def test_pylon_lm_calls_carry_tokens_cost_and_route(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4)
    recorder = TraceRecorder()
    with dspy.context(lm=lm, callbacks=[recorder], adapter=WholeAnswerAdapter()):
        program = dspy.Predict("question -> answer")
        program(question="Say hi")
        program(question="Say hi")  # DSPy's cache answers: no tokens, no cost
    first, second = [n for n in recorder.graph if n.type is NodeType.LM]
    assert first.usage is not None and first.usage["prompt_tokens"] > 0 and first.usage["cost_msats"] == 0
    assert first.route is not None and first.route["venue"] == "local" and first.route["backend"] == "llamacpp"
    assert first.attributes["cache_hit"] is False and second.attributes["cache_hit"] is True
    assert recorder.graph.nodes[first.parent_id or ""].type is NodeType.PREDICTOR


def test_inputs_and_outputs_are_digests_unless_content_is_asked_for() -> None:
    quiet, loud = TraceRecorder(), TraceRecorder(keep_content=True)
    with dspy.context(lm=_dummy(), callbacks=[quiet, loud]):
        dspy.Predict("question -> answer")(question="q7")
    assert "q7" not in quiet.graph.to_json()
    assert all(set(n.inputs) == {"sha256"} and len(n.inputs["sha256"]) == 64 for n in quiet.graph)
    assert "q7" in loud.graph.to_json()


def test_graphs_save_and_load_as_json() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Two()(question="q3")
    again = TraceGraph.from_json(recorder.graph.to_json())
    assert again == recorder.graph
    for bad in ("{", "[]", '{"format": "other"}', '{"format": "dspy-pylon/trace-graph", "schema_version": 1}'):
        with pytest.raises(pylon.ManifestError):
            TraceGraph.from_json(bad)


def test_a_finished_run_is_handed_to_on_trace_complete() -> None:
    done: list[TraceGraph] = []

    class Listening(TraceRecorder):
        def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
            done.append(graph)

    recorder = Listening()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Two()(question="q1")
        Two()(question="q2")
    assert len(done) == 2 and all(len(g) == len(recorder.graph) // 2 for g in done)
    assert [g.roots()[0].type for g in done] == [NodeType.PROGRAM, NodeType.PROGRAM]


def test_a_failing_callback_is_logged_once_and_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    class Failing(pylon.PylonCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            raise RuntimeError("sink down")

    recorder = TraceRecorder()
    composite = pylon.CompositeCallback([Failing(), recorder])
    with caplog.at_level(logging.ERROR), dspy.context(lm=_dummy(), callbacks=[composite]):
        for i in range(3):
            assert Two()(question=f"q{i}").answer == str(i)
    assert composite.failures == 3 * 4  # every module start, logged once
    assert sum("sink down" in r.getMessage() or "on_module_start" in r.getMessage() for r in caplog.records) == 1
    assert len(recorder.graph.roots()) == 3


def test_set_and_get_callback() -> None:
    recorder = TraceRecorder()
    pylon.set_callback(recorder)
    pylon.set_callback(recorder)
    assert dspy.settings.callbacks == [recorder] and pylon.get_callback() is recorder
    assert pylon.get_callback(TraceRecorder) is recorder


def test_a_compile_and_its_candidates_are_nodes() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        _, manifest = compile_small(k=2, examples=4)
    graph = recorder.graph
    [compile_node] = [n for n in graph if n.type is NodeType.COMPILE]
    assert compile_node.name == "LabeledFewShot" and compile_node.status is NodeStatus.OK
    [candidate] = graph.children(compile_node.id)
    assert candidate.type is NodeType.CANDIDATE and candidate.attributes["candidate_id"] == manifest.compiled_id
    assert [n.type for n in graph.roots()].count(NodeType.EVALUATE) == 1  # the scoring rollout
