"""The receipts codec (pure): what each event holds, the graph rebuilt from them, and what
verification finds wrong in events no honest publisher would make."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import dspy
import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.nostr.events import RawEvent, from_sdk, sign
from dspy_pylon.trace import receipts
from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceGraph, TraceNode
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter
from tests.trace.test_recorder import Two, _dummy, _examples

PROVIDER = nostr_sdk.Keys.generate()
CUSTOMER = nostr_sdk.Keys.generate()


def _recorded() -> TraceGraph:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        dspy.Evaluate(devset=_examples(3), metric=lambda e, p, t=None: True, num_threads=2)(Two())
    return recorder.graph


def _job_pair() -> tuple[RawEvent, RawEvent]:
    request = from_sdk(sign(5050, "", [["i", "hello", "text"]], CUSTOMER))
    result = from_sdk(sign(6050, "answer", [["e", request.id], ["p", CUSTOMER.public_key().to_hex()]], PROVIDER))
    return request, result


def _with_swarm_call(graph: TraceGraph, request: RawEvent, result: RawEvent, cost: int = 3000) -> TraceGraph:
    nodes = dict(graph.nodes)
    first_lm = next(n for n in nodes.values() if n.type is NodeType.LM)
    nodes[first_lm.id] = replace(
        first_lm,
        usage={"prompt_tokens": 5, "completion_tokens": 2, "cost_msats": cost},
        route={
            "venue": "swarm",
            "provider": PROVIDER.public_key().to_hex(),
            "job_id": request.id,
            "result_id": result.id,
            "relay": "ws://relay",
        },
    )
    return TraceGraph(nodes)


def _publish(
    graph: TraceGraph, keys: Any, compiled_id: str | None = None
) -> tuple[RawEvent, list[RawEvent], list[RawEvent]]:
    """Sign the planned events the way NostrBridge does (without relays)."""
    planned, parts = receipts.plan(graph, compiled_id)
    ids: dict[str, str] = {}
    signed_receipts = []
    for event in planned:
        tags = [list(t) for t in event.tags] + [["e", ids[n], "", m] for n, m in event.links]
        raw = from_sdk(sign(receipts.KIND, event.content, tags, keys))
        assert event.node_id is not None
        ids[event.node_id] = raw.id
        signed_receipts.append(raw)
    signed_parts = [from_sdk(sign(receipts.KIND, p.content, [list(t) for t in p.tags], keys)) for p in parts]
    summary = receipts.summary(graph, list(ids.items()), [p.id for p in signed_parts], compiled_id)
    raw_summary = from_sdk(sign(receipts.KIND, summary.content, [list(t) for t in summary.tags], keys))
    return raw_summary, signed_receipts, signed_parts


def test_a_graph_becomes_receipts_and_comes_back_identical() -> None:
    request, result = _job_pair()
    graph = _with_swarm_call(_recorded(), request, result)
    keys = nostr_sdk.Keys.generate()
    summary_event, receipt_events, parts = _publish(graph, keys, compiled_id="c" * 64)
    assert len(receipt_events) == sum(1 for n in graph if n.type is NodeType.LM)  # one per LM call
    assert all(e.kind == receipts.KIND == 3590 and e.value("t") == "pylon-trace" for e in (summary_event, *parts))
    summary = receipts.parse_summary(summary_event)
    assert summary.compiled_id == "c" * 64 and summary.cost_msats == 3000 and summary.totals["lm_calls"] == 6
    rebuilt = receipts.rebuild(summary, receipt_events, parts)
    assert rebuilt.to_json() == graph.to_json()
    swarm_receipt = next(e for e in receipt_events if e.value("cost_msats") == "3000")
    assert ("e", request.id, "ws://relay", "job-request") in swarm_receipt.tags
    assert ("e", result.id, "ws://relay", "job-result") in swarm_receipt.tags
    assert swarm_receipt.value("p") == PROVIDER.public_key().to_hex()
    assert receipts.verify(summary, receipt_events, parts, {request.id: request, result.id: result}) == []


def test_big_runs_split_their_structure_into_parts_small_enough_for_any_relay() -> None:
    nodes = {}
    for i in range(600):
        node_id = f"{i:032x}"
        nodes[node_id] = TraceNode(node_id, None, NodeType.MODULE, "M" * 40, i, i + 1, NodeStatus.OK)
    graph = TraceGraph(nodes)
    _, parts = receipts.plan(graph)
    assert len(parts) > 1 and all(len(p.content.encode()) < 48_000 for p in parts)


def test_unfinished_runs_and_bad_events_are_refused_clearly() -> None:
    running = TraceGraph({"a": TraceNode("a", None, NodeType.PROGRAM, "P", 1)})
    with pytest.raises(pylon.MalformedEvent, match="still running"):
        receipts.plan(running)
    keys = nostr_sdk.Keys.generate()
    note = from_sdk(sign(1, "hello", [], keys))
    with pytest.raises(pylon.MalformedEvent, match="not a pylon trace summary"):
        receipts.parse_summary(note)
    for content in ("not json", json.dumps({"format": "other"}), json.dumps({"format": receipts.FORMAT, "version": 1})):
        event = from_sdk(sign(receipts.KIND, content, [["receipt", "summary"]], keys))
        with pytest.raises(pylon.MalformedEvent):
            receipts.parse_summary(event)
    liar = from_sdk(
        sign(
            receipts.KIND,
            json.dumps({"format": receipts.FORMAT, "version": 1, "node": {"id": "x"}}),
            [["receipt", "node"], ["node", "x"]],
            keys,
        )
    )
    with pytest.raises(pylon.MalformedEvent, match="no valid trace node"):
        receipts.parse_receipt(liar)


def test_a_summary_whose_events_are_missing_or_extra_does_not_rebuild() -> None:
    graph = _recorded()
    summary_event, receipt_events, parts = _publish(graph, nostr_sdk.Keys.generate())
    summary = receipts.parse_summary(summary_event)
    with pytest.raises(pylon.MalformedEvent, match="missing"):
        receipts.rebuild(summary, receipt_events[1:], parts)
    with pytest.raises(pylon.MalformedEvent, match="twice"):
        receipts.rebuild(summary, [*receipt_events, receipt_events[0]], parts)


def test_verification_finds_a_wrong_provider_a_forged_cost_and_a_stranger_s_receipt() -> None:
    request, result = _job_pair()
    keys = nostr_sdk.Keys.generate()
    stranger = nostr_sdk.Keys.generate()
    graph = _with_swarm_call(_recorded(), request, result)
    # The receipt names another provider than the one who signed the result.
    lying = _with_swarm_call(_recorded(), request, result)
    lm = next(n for n in lying if n.type is NodeType.LM and n.route)
    assert lm.route is not None
    lm.route["provider"] = stranger.public_key().to_hex()
    summary_event, receipt_events, parts = _publish(lying, keys)
    problems = receipts.verify(
        receipts.parse_summary(summary_event), receipt_events, parts, {r.id: r for r in (request, result)}
    )
    assert any("names provider" in p for p in problems)
    # The job's events are not on the relays.
    summary_event, receipt_events, parts = _publish(graph, keys)
    summary = receipts.parse_summary(summary_event)
    problems = receipts.verify(summary, receipt_events, parts, {})
    assert any("job request" in p for p in problems) and any("job result" in p for p in problems)
    # A receipt signed by someone else, with a cost the summary never counted.
    forged = _with_swarm_call(_recorded(), request, result, cost=999_000)
    _, forged_receipts, _ = _publish(forged, stranger)
    forged_one = next(e for e in forged_receipts if e.value("cost_msats") == "999000")
    honest = [e for e in receipt_events if e.value("cost_msats") != "3000"]
    problems = receipts.verify(summary, [*honest, forged_one], parts, {r.id: r for r in (request, result)})
    assert any("signed by" in p and "the summary by" in p for p in problems)
    assert any("add up to" in p for p in problems)
    # A result that answers another request.
    other_request = from_sdk(sign(5050, "", [["i", "other", "text"]], CUSTOMER))
    stray = from_sdk(sign(6050, "answer", [["e", other_request.id]], PROVIDER))
    stray_graph = _with_swarm_call(_recorded(), request, stray)
    summary_event, receipt_events, parts = _publish(stray_graph, keys)
    problems = receipts.verify(
        receipts.parse_summary(summary_event), receipt_events, parts, {request.id: request, stray.id: stray}
    )
    assert any("does not answer" in p for p in problems)


def test_receipts_carry_digests_unless_content_was_kept() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="a private question")
    summary_event, receipt_events, parts = _publish(recorder.graph, nostr_sdk.Keys.generate())
    text = summary_event.content + "".join(e.content for e in (*receipt_events, *parts))
    assert "private" not in text and '"sha256"' in text
