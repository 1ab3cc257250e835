"""Traces in a real viewer: Arize Phoenix receives an ``Evaluate(num_threads=8)`` over a program
whose predictors run on the local llama.cpp server and on a paid swarm provider, and what it
stored is one trace with every parent present, LM spans with tokens and exact cost, the swarm
jobs' event ids, and real durations."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dspy
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.trace.otel import export
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter
from tests.phoenix import PhoenixProcess, phoenix

__all__ = ["phoenix"]  # the fixture

PRICE_MSATS = 3_000
EXAMPLES = 8


class LocalThenSwarm(dspy.Module):
    def __init__(self, local: dspy.BaseLM, swarm: dspy.BaseLM) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.draft.lm = local
        self.review = dspy.Predict("question, draft -> answer")
        self.review.lm = swarm

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.draft(question=question).answer
        return self.review(question=question, draft=draft)


def _examples() -> list[dspy.Example]:
    return [dspy.Example(question=f"question {i}").with_inputs("question") for i in range(EXAMPLES)]


def _duration_ok(span: dict[str, Any]) -> bool:
    from datetime import datetime

    return datetime.fromisoformat(span["end_time"]) > datetime.fromisoformat(span["start_time"])


def test_an_evaluate_over_local_and_swarm_is_one_trace_in_phoenix(
    phoenix: PhoenixProcess, tiny_server: EmbeddedLlama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_URL", tiny_server.url)
    recorder = TraceRecorder()
    with LocalSwarm(tmp_path, providers=2, price_msats=PRICE_MSATS, backend_url=tiny_server.url) as swarm:
        local = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False)
        remote = swarm.lm(bid_msats=5_000, max_tokens=4, cache=False)
        with dspy.context(adapter=WholeAnswerAdapter(), callbacks=[recorder]):
            dspy.Evaluate(devset=_examples(), metric=lambda e, p, t=None: bool(p.answer), num_threads=8)(
                LocalThenSwarm(local, remote)
            )
        spent = remote.total_spent_msats()
    sent = export(recorder.graph, OTLPSpanExporter(endpoint=phoenix.traces_url))
    trace_ids = {f"{span.context.trace_id:032x}" for span in sent}
    assert len(trace_ids) == 1  # the Evaluate is the run: one trace, not one per thread
    [trace_id] = trace_ids

    stored = phoenix.trace_spans(trace_id, expected=len(sent))
    assert len(stored) == len(sent)
    by_id = {s["context"]["span_id"]: s for s in stored}
    roots = [s for s in stored if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["evaluate Evaluate"]
    assert all(s["parent_id"] is None or s["parent_id"] in by_id for s in stored)  # every parent present
    assert all(_duration_ok(s) for s in stored)

    lm_spans = [s for s in stored if s["attributes"].get("dsrs.node_type") == "lm"]
    assert len(lm_spans) == 2 * EXAMPLES and all(s["span_kind"] == "LLM" for s in lm_spans)
    for span in lm_spans:
        attributes = span["attributes"]
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["llm.token_count.prompt"] == attributes["gen_ai.usage.input_tokens"]  # Phoenix read ours
        # Each LM call sits under its predictor, under the example's program, under the Evaluate.
        predictor = by_id[span["parent_id"]]
        assert predictor["attributes"]["dsrs.node_type"] == "predictor"
        program = by_id[predictor["parent_id"]]
        assert program["name"] == "LocalThenSwarm" and program["parent_id"] == roots[0]["context"]["span_id"]
    swarm_spans = [s for s in lm_spans if s["attributes"].get("pylon.venue") == "swarm"]
    local_spans = [s for s in lm_spans if s["attributes"].get("pylon.venue") == "local"]
    assert len(swarm_spans) == len(local_spans) == EXAMPLES
    assert all(s["attributes"]["pylon.cost_msats"] == PRICE_MSATS for s in swarm_spans)
    assert all(s["attributes"]["pylon.cost_msats"] == 0 for s in local_spans)
    assert sum(s["attributes"]["pylon.cost_msats"] for s in lm_spans) == spent == EXAMPLES * PRICE_MSATS
    # Cost is on LM spans only: no parent sums it again.
    assert not [s for s in stored if "pylon.cost_msats" in s["attributes"] and s not in lm_spans]

    jobs = [s for s in stored if s["attributes"].get("dsrs.node_type") == "swarm_job"]
    assert len(jobs) == EXAMPLES
    for job in jobs:
        parent = by_id[job["parent_id"]]
        assert parent in swarm_spans
        assert job["attributes"]["messaging.message.id"] == parent["attributes"]["pylon.job_id"]
        assert len(job["attributes"]["pylon.result_id"]) == 64
        assert job["attributes"]["pylon.provider"] == parent["attributes"]["pylon.provider"]


def test_instrument_sends_each_run_to_the_endpoint_the_environment_names(
    phoenix: PhoenixProcess, llamacpp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix.url)
    recorder = pylon.trace.instrument()
    try:
        lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0, cache=False)
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
            dspy.Predict("topic -> summary")(topic="sent by instrument")
        assert recorder.flush()
    finally:
        recorder.close()
    deadline = time.monotonic() + 30  # Phoenix inserts what it received in batches
    while "predict topic -> summary" not in (names := [s["name"] for s in phoenix.spans()]):
        assert time.monotonic() < deadline, names  # a signature no other test here runs
        time.sleep(0.25)
    assert "chat pylon:local:llamacpp" in names
