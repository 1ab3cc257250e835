"""What other callbacks hear from the recorder (start and end of every node, finished runs), the
queue in front of slow sinks, and usage that is right when DSPy keeps no history, samples n > 1,
streams, or answers from its cache; credentials never recorded; a clock that never runs back."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import dspy
import pytest
from dspy.utils.callback import ACTIVE_CALL_ID

import dspy_pylon as pylon
from dspy_pylon.trace import lm_calls
from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceNode
from dspy_pylon.trace.otel import graph_to_spans, provider_name
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter
from tests.trace.test_recorder import Two, _dummy, _examples


class Listener(pylon.PylonCallback):
    def __init__(self) -> None:
        self.events: list[tuple[str, TraceNode]] = []
        self.runs: list[Any] = []
        self.lock = threading.Lock()

    def on_trace_node_start(self, node: TraceNode) -> None:
        with self.lock:
            self.events.append(("start", node))

    def on_trace_node_end(self, node: TraceNode) -> None:
        with self.lock:
            self.events.append(("end", node))

    def on_trace_complete(self, graph: Any, manifest: Any = None) -> None:
        with self.lock:
            self.runs.append(graph)


def test_a_registered_callback_hears_every_node_start_before_it_ends() -> None:
    recorder, listener = TraceRecorder(), Listener()
    with dspy.context(lm=_dummy(), callbacks=[recorder, listener]):
        dspy.Evaluate(devset=_examples(6), metric=lambda e, p, t=None: True, num_threads=4)(Two())
    graph = recorder.graph
    started = [n.id for kind, n in listener.events if kind == "start"]
    ended = {n.id: n for kind, n in listener.events if kind == "end"}
    assert sorted(started) == sorted(graph.nodes) == sorted(ended)  # every node, once each way
    position = {(kind, n.id): i for i, (kind, n) in enumerate(listener.events)}
    for node in graph:
        assert position[("start", node.id)] < position[("end", node.id)]
        if node.parent_id is not None:  # a live view always knows a node's parent before the node
            assert position[("start", node.parent_id)] < position[("start", node.id)]
    start_copy = next(n for kind, n in listener.events if kind == "start")
    assert start_copy.status is NodeStatus.RUNNING and start_copy.end_ns is None  # a copy, as it was then
    assert all(ended[i].status is NodeStatus.OK for i in ended)
    [run] = listener.runs  # the Evaluate is the one outermost call
    assert len(run) == len(graph)


def test_with_two_recorders_each_run_is_told_once() -> None:
    first, second, listener = TraceRecorder(), TraceRecorder(), Listener()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[first, listener, second]):
        dspy.Predict("question -> answer")(question="q1")
    assert len(first.graph) == len(second.graph) >= 4  # both record
    assert len(listener.runs) == 1 and len([e for e in listener.events if e[0] == "start"]) == len(first.graph)


def test_a_listener_that_raises_breaks_neither_the_run_nor_the_recording() -> None:
    class Broken(pylon.PylonCallback):
        def on_trace_node_start(self, node: TraceNode) -> None:
            raise RuntimeError("listener bug")

    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[recorder, Broken()]):
        assert dspy.Predict("question -> answer")(question="q3").answer.endswith("3")
    assert len(recorder.graph) >= 4 and all(n.status is NodeStatus.OK for n in recorder.graph)


class SlowSink(pylon.PylonCallback):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.heard: list[tuple[str, str | None]] = []

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        time.sleep(self.delay)
        self.heard.append((call_id, ACTIVE_CALL_ID.get()))


def test_a_slow_sink_behind_a_queue_never_slows_the_run() -> None:
    sink, direct = SlowSink(0.05), SlowSink(0.0)
    queued = pylon.QueuedCallback(sink)
    program = dspy.Predict("question -> answer")
    began = time.perf_counter()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[queued, direct]):
        for i in range(20):
            program(question=f"q{i}")
    elapsed = time.perf_counter() - began
    assert elapsed < 20 * 0.05 / 2  # direct, the sink alone would take a second
    assert queued.flush(timeout=10)
    assert len(sink.heard) == 20 and queued.dropped == 0
    # The sink saw DSPy's ACTIVE_CALL_ID as the caller had it (the predictor's id, in on_lm_start).
    assert sink.heard == direct.heard and all(active is not None for _, active in sink.heard)
    queued.close()


def test_a_full_queue_drops_and_counts_and_a_closed_one_drops_everything() -> None:
    gate = threading.Event()

    class Blocked(pylon.PylonCallback):
        def __init__(self) -> None:
            self.heard = 0

        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            gate.wait(10)
            self.heard += 1

    sink = Blocked()
    queued = pylon.QueuedCallback(sink, max_queue=3)
    for i in range(10):
        queued.on_module_start(call_id=str(i), instance=None, inputs={})
    gate.set()
    assert queued.flush(timeout=10)
    # One is with the sink, three wait: the other six were dropped, counted.
    assert sink.heard + queued.dropped == 10 and 3 <= sink.heard <= 4
    queued.close()
    queued.on_module_start(call_id="late", instance=None, inputs={})
    assert queued.dropped == 10 - sink.heard + 1


def test_a_recorder_cannot_sit_behind_a_queue() -> None:
    with pytest.raises(pylon.ConfigError, match="recorder"):
        pylon.QueuedCallback(TraceRecorder())


def _lm_node(recorder: TraceRecorder) -> TraceNode:
    [node] = [n for n in recorder.graph if n.type is NodeType.LM]
    return node


def test_usage_is_recorded_when_dspy_keeps_no_history(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False)
    recorder = TraceRecorder()
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=[recorder], disable_history=True):
        dspy.Predict("question -> answer")(question="no history")
    assert lm.history == []
    node = _lm_node(recorder)
    assert node.usage is not None and node.usage["completion_tokens"] == 4 and node.usage["prompt_tokens"] > 0
    assert node.usage["cost_msats"] == 0 and (node.route or {})["backend"] == "llamacpp"
    assert node.attributes["cache_hit"] is False


def test_n_samples_add_up_in_the_trace_and_the_history(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.7, cache=False)
    recorder = TraceRecorder()
    with dspy.context(callbacks=[recorder]):
        outputs = lm("two please", n=2)
    assert len(outputs) == 2
    entry = lm.history[-1]
    node = _lm_node(recorder)
    assert node.usage is not None
    assert node.usage["completion_tokens"] == entry["usage"]["completion_tokens"] == 6
    assert node.usage["prompt_tokens"] == entry["usage"]["prompt_tokens"]
    assert entry["cost"] == 0 and node.usage["cost_msats"] == 0


def test_a_streamed_call_has_its_usage(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=6, temperature=0.0, cache=False)
    recorder = TraceRecorder()

    async def run() -> None:
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=[recorder]):
            # streamify takes the callbacks configured when it is made.
            async for _ in dspy.streamify(dspy.Predict("question -> answer"))(question="stream"):
                pass

    asyncio.run(run())
    node = _lm_node(recorder)
    assert node.usage is not None and node.usage["completion_tokens"] == 6


def test_a_cache_hit_costs_nothing_in_the_trace(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0, cache=True)
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        program(question="cached once")
    recorder = TraceRecorder()
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=[recorder], disable_history=True):
        program(question="cached once")
    node = _lm_node(recorder)
    assert node.usage == {"prompt_tokens": 0, "completion_tokens": 0, "cost_msats": 0}
    assert node.attributes["cache_hit"] is True


def test_n_responses_costs_add_up_exactly() -> None:
    from dspy import lm15

    def response(cost: int, tokens: int) -> Any:
        return lm15.Response(
            id="r",
            model="m",
            message=lm15.Message.assistant("x"),
            finish_reason="stop",
            usage=lm15.Usage(input_tokens=10, output_tokens=tokens),
            provider_data={"pylon": {"venue": "swarm", "backend": "nip90", "cost_msats": cost, "job_id": "a" * 64}},
        )

    token = ACTIVE_CALL_ID.set("call-n")
    try:
        lm_calls.add("call-n", lm_calls.LmCallInfo.from_response(response(3000, 2)))
        lm_calls.add("call-n", lm_calls.LmCallInfo.from_response(response(4000, 5)))
    finally:
        ACTIVE_CALL_ID.reset(token)
    info = lm_calls.get("call-n")
    assert info is not None and (info.cost_msats, info.prompt_tokens, info.completion_tokens) == (7000, 20, 7)
    assert info.responses == 2 and info.route["job_id"] == "a" * 64
    assert lm_calls.total_cost([response(3000, 1), response(4000, 1)]) == 7000


def test_credentials_never_reach_the_trace_even_with_content_kept() -> None:
    recorder = TraceRecorder(keep_content=True)
    lm = _dummy()
    with dspy.context(callbacks=[recorder]):
        lm("q1", access_token="tok-SECRET", client_secret="cs-SECRET", mnemonic="SECRET words", max_tokens=7)
    text = recorder.graph.to_json()
    assert "SECRET" not in text
    assert '\\"max_tokens\\": 7' in text  # a setting named like a token count stays


def test_a_wall_clock_step_back_never_makes_a_negative_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = iter(range(10**18, 0, -(10**12)))  # the system clock running back a second per read
    monkeypatch.setattr(time, "time_ns", lambda: next(steps))
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="q2")
    for node in recorder.graph:
        assert node.duration_ns is not None and node.duration_ns >= 0
        assert node.start_ns > 1_700_000_000 * 10**9  # still wall-clock time (ns since the epoch)


def test_the_provider_name_comes_from_the_route_or_the_model_prefix() -> None:
    assert provider_name("pylon:local", {"backend": "llamacpp", "venue": "local"}) == "llamacpp"
    assert provider_name("openai/gpt-4o-mini", {}) == "openai"
    assert provider_name("dummy", {}) == "dspy"
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="q1")
    assert pylon.TraceContract.graph_to_spans is graph_to_spans
    [lm_span] = [s for s in graph_to_spans(recorder.graph) if s.attributes["dsrs.node_type"] == "lm"]
    assert lm_span.attributes["gen_ai.provider.name"] == "dspy"


def test_nested_headers_dashed_names_and_url_passwords_never_reach_the_trace() -> None:
    from dspy_pylon.trace.recorder import without_credentials

    cleaned = without_credentials(
        {
            "kwargs": {
                "extra_headers": {"Authorization": "Bearer SECRET", "x-api-key": "SECRET", "Accept": "json"},
                "api_base": "https://user:SECRET@host/v1",
                "nsec": "SECRET",
                "seed_phrase": "SECRET",
                "max_tokens": 5,
            },
            "passphrase": "SECRET",
        }
    )
    assert "SECRET" not in str(cleaned)
    assert cleaned == {"kwargs": {"extra_headers": {"Accept": "json"}, "api_base": "https://host/v1", "max_tokens": 5}}


def test_a_closed_queue_drops_late_hooks_and_never_blocks_a_flush() -> None:
    sink = SlowSink(0.0)
    queued = pylon.QueuedCallback(sink)
    queued.on_lm_start(call_id="a", instance=None, inputs={})
    queued.close(timeout=5)
    queued.on_lm_start(call_id="late", instance=None, inputs={})
    began = time.perf_counter()
    assert queued.flush(timeout=5) and time.perf_counter() - began < 1
    assert [c for c, _ in sink.heard] == ["a"] and queued.dropped == 1


def test_a_cache_hit_links_to_no_job_and_makes_no_job_span() -> None:
    from dspy_pylon.trace.graph import TraceGraph

    info = lm_calls.LmCallInfo.from_entry(
        {
            "usage": {},
            "cost": 0,
            "cost_details": {"currency": "msat"},
            "response": type("R", (), {"provider_data": {"pylon": {"venue": "swarm", "job_id": "a" * 64}}})(),
        }
    )
    assert info.cache_hit and "job_id" not in info.route and info.route["venue"] == "swarm"
    node = TraceNode("c" * 32, None, NodeType.LM, "pylon:swarm", 1, 2, NodeStatus.OK, route={"job_id": "a" * 64})
    node.attributes["cache_hit"] = True
    assert [s.name for s in graph_to_spans(TraceGraph({node.id: node}))] == ["chat pylon:swarm"]
