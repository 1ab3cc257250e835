"""The receipts codec (pure): what each event holds, the graph rebuilt from them, and what
verification finds in events no honest publisher would make."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
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


def _job_pair(text: str = "hello", amount: int | None = None) -> tuple[RawEvent, RawEvent]:
    request_event = sign(5050, "", [["i", text, "text"]], CUSTOMER)
    request = from_sdk(request_event)
    tags = [["e", request.id], ["p", CUSTOMER.public_key().to_hex()], ["request", request_event.as_json()]]
    if amount is not None:
        tags.append(["amount", str(amount)])
    return request, from_sdk(sign(6050, "answer", tags, PROVIDER))


def _swarm(graph: TraceGraph, request: RawEvent, result: RawEvent, cost: int = 3000, nth: int = 0) -> TraceGraph:
    nodes = {k: replace(v, attributes=dict(v.attributes)) for k, v in graph.nodes.items()}
    lm = [n for n in nodes.values() if n.type is NodeType.LM][nth]
    nodes[lm.id] = replace(
        lm,
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


@dataclass
class Published:
    summary: receipts.Summary
    receipts: list[RawEvent]
    structures: list[RawEvent]
    indexes: list[RawEvent]

    def order(self) -> list[str]:
        return [node_id for index in self.indexes for node_id in receipts.parse_index(index)[0]]

    def graph(self) -> TraceGraph:
        return receipts.rebuild(self.order(), self.receipts, self.structures)

    def verify(self, jobs: dict[str, RawEvent]) -> list[str]:
        jobs = dict(jobs)
        receipts.recover_requests(jobs)
        problems, _ = receipts.verify(
            self.summary, self.graph(), self.receipts, [*self.structures, *self.indexes], jobs
        )
        return problems


def _sign(event: receipts.PlannedEvent, keys: Any, extra: list[list[str]] | None = None) -> RawEvent:
    return from_sdk(sign(receipts.KIND, event.content, [list(t) for t in event.tags] + (extra or []), keys))


def _publish(graph: TraceGraph, keys: Any, compiled_id: str | None = None) -> Published:
    """Sign the planned events the way NostrBridge does (without relays)."""
    planned, parts = receipts.plan(graph, compiled_id)
    ids: dict[str, str] = {}
    signed = []
    for event in planned:
        raw = _sign(event, keys, [["e", ids[n], "", m] for n, m in event.links])
        assert event.node_id is not None
        ids[event.node_id] = raw.id
        signed.append(raw)
    structures = [_sign(p, keys) for p in parts]
    ordered = [ids[n] for n in graph.nodes if n in ids]
    indexes = [_sign(p, keys) for p in receipts.index_parts(list(graph.nodes), ordered, compiled_id)]
    summary = receipts.summary(graph, [i.id for i in indexes], [s.id for s in structures], compiled_id)
    return Published(receipts.parse_summary(_sign(summary, keys)), signed, structures, indexes)


def test_a_graph_becomes_receipts_and_comes_back_identical() -> None:
    request, result = _job_pair()
    graph = _swarm(_recorded(), request, result)
    published = _publish(graph, nostr_sdk.Keys.generate(), compiled_id="c" * 64)
    assert len(published.receipts) == sum(1 for n in graph if n.type is NodeType.LM)  # one per LM call
    events = (published.summary.event, *published.structures, *published.indexes, *published.receipts)
    assert all(e.kind == receipts.KIND == 3590 and e.value("t") == "pylon-trace" for e in events)
    assert published.summary.compiled_id == "c" * 64 and published.summary.cost_msats == 3000
    assert published.summary.totals["lm_calls"] == 6 and published.summary.nodes == len(graph)
    assert published.graph().to_json() == graph.to_json()
    swarm_receipt = next(e for e in published.receipts if e.value("cost_msats") == "3000")
    assert ("e", request.id, "ws://relay", "job-request") in swarm_receipt.tags
    assert ("e", result.id, "ws://relay", "job-result") in swarm_receipt.tags
    assert swarm_receipt.value("p") == PROVIDER.public_key().to_hex()
    assert published.verify({request.id: request, result.id: result}) == []


def test_the_request_a_customer_deleted_is_taken_from_the_result_when_its_signature_holds() -> None:
    request, result = _job_pair()
    published = _publish(_swarm(_recorded(), request, result), nostr_sdk.Keys.generate())
    assert published.verify({result.id: result}) == []  # the request came out of the result's tag
    # A result carrying another request than the one the receipt links does not stand in for it.
    _, other_result = _job_pair("another question")
    forged = from_sdk(
        sign(6050, "answer", [["e", request.id], ["request", other_result.value("request") or ""]], PROVIDER)
    )
    published = _publish(_swarm(_recorded(), request, forged), nostr_sdk.Keys.generate())
    assert any("job request" in p and "not on the relays" in p for p in published.verify({forged.id: forged}))


def test_big_runs_split_into_events_any_relay_takes_even_with_quote_heavy_content() -> None:
    nodes = {}
    for i in range(1500):
        node_id = f"{i:032x}"
        text = '"\\' * 400  # doubles when escaped into the event
        nodes[node_id] = TraceNode(node_id, None, NodeType.MODULE, "M", i, i + 1, NodeStatus.OK, inputs=text)
    graph = TraceGraph(nodes)
    _, parts = receipts.plan(graph)
    indexes = receipts.index_parts(list(graph.nodes), [], None)
    assert len(parts) > 10 and len(indexes) == 5
    for event in (*parts, *indexes):
        signed = sign(receipts.KIND, event.content, [list(t) for t in event.tags], CUSTOMER)
        assert len(signed.as_json().encode()) < 65_536 and len(event.tags) < 2_000


def test_a_receipt_too_large_for_relays_is_refused_before_anything_is_sent_naming_its_node() -> None:
    graph = _recorded()
    lm = next(n for n in graph if n.type is NodeType.LM)
    lm.inputs = "x" * 70_000  # a prompt kept with keep_content=True
    with pytest.raises(pylon.MalformedEvent, match=rf"{lm.id}.*keep_content"):
        receipts.plan(graph)


def test_unfinished_runs_and_bad_events_are_refused_clearly() -> None:
    running = TraceGraph({"a": TraceNode("a", None, NodeType.PROGRAM, "P", 1)})
    with pytest.raises(pylon.MalformedEvent, match="still running"):
        receipts.plan(running)
    keys = nostr_sdk.Keys.generate()
    with pytest.raises(pylon.MalformedEvent, match="not a pylon trace summary"):
        receipts.parse_summary(from_sdk(sign(1, "hello", [], keys)))
    for content in ("not json", json.dumps({"format": "other"}), json.dumps({"format": receipts.FORMAT, "version": 1})):
        with pytest.raises(pylon.MalformedEvent):
            receipts.parse_summary(from_sdk(sign(receipts.KIND, content, [["receipt", "summary"]], keys)))

    def receipt(node: dict[str, Any]) -> RawEvent:
        content = json.dumps({"format": receipts.FORMAT, "version": 1, "node": node})
        return from_sdk(sign(receipts.KIND, content, [["receipt", "node"], ["node", str(node.get("id"))]], keys))

    good = next(n for n in _recorded() if n.type is NodeType.LM).to_json_dict()
    for bad in ({"id": "x"}, {**good, "usage": {"prompt_tokens": "5"}}, {**good, "usage": [1]}, {**good, "route": 3}):
        with pytest.raises(pylon.MalformedEvent, match="receipt"):
            receipts.parse_receipt(receipt(bad))
    with pytest.raises(pylon.MalformedEvent, match="gets no receipt"):
        receipts.parse_receipt(receipt({**good, "type": "module"}))


def test_events_missing_extra_or_twice_do_not_rebuild() -> None:
    published = _publish(_recorded(), nostr_sdk.Keys.generate())
    order = published.order()
    with pytest.raises(pylon.MalformedEvent, match="missing"):
        receipts.rebuild(order, published.receipts[1:], published.structures)
    with pytest.raises(pylon.MalformedEvent, match="twice"):
        receipts.rebuild(order, [*published.receipts, published.receipts[0]], published.structures)


def _lies(graph: TraceGraph, keys: Any, change: Any) -> Published:
    """Publish ``graph`` with one receipt rewritten by ``change(node_dict, tags) -> tags``."""
    published = _publish(graph, keys)
    target = next(e for e in published.receipts if e.value("cost_msats") == "3000")
    document = json.loads(target.content)
    tags = change(document["node"], [list(t) for t in target.tags])
    forged = from_sdk(sign(receipts.KIND, json.dumps(document), tags, keys))
    published.receipts = [forged if e.id == target.id else e for e in published.receipts]
    return published


def test_verification_catches_what_a_lying_publisher_would_try() -> None:
    request, result = _job_pair(amount=3000)
    jobs = {request.id: request, result.id: result}
    keys = nostr_sdk.Keys.generate()
    graph = _swarm(_recorded(), request, result)
    assert _publish(graph, keys).verify(jobs) == []

    def contains(problems: list[str], text: str) -> bool:
        return any(text in p for p in problems)

    # Another provider named than the one who signed the result.
    lying = _swarm(_recorded(), request, result)
    lm = next(n for n in lying if n.route)
    assert lm.route is not None
    lm.route["provider"] = nostr_sdk.Keys.generate().public_key().to_hex()
    assert contains(_publish(lying, keys).verify(jobs), "names provider")

    # Tags that link the real job while the node names another (what `fetch` would show).
    def other_job(node: dict[str, Any], tags: list[list[str]]) -> list[list[str]]:
        node["route"]["job_id"] = "b" * 64
        return tags

    assert contains(_lies(graph, keys, other_job).verify(jobs), "link another job")

    # A paid node with its job links taken out.
    def unlinked(node: dict[str, Any], tags: list[list[str]]) -> list[list[str]]:
        node["route"] = {"venue": "swarm"}
        return [t for t in tags if t[0] not in ("e", "p")]

    assert contains(_lies(graph, keys, unlinked).verify(jobs), "without its job request")
    # One real job claimed by two receipts (its cost counted twice).
    twice = _swarm(_swarm(_recorded(), request, result), request, result, nth=1)
    assert contains(_publish(twice, keys).verify(jobs), "claimed by another receipt")
    # More claimed than the provider's result asked.
    assert contains(_publish(_swarm(_recorded(), request, result, cost=9000), keys).verify(jobs), "asked 3000")
    # The job's events are not there.
    problems = _publish(graph, keys).verify({})
    assert contains(problems, "job result") and contains(problems, "not on the relays")
    # A receipt signed by someone else.
    stranger = _publish(graph, nostr_sdk.Keys.generate())
    mixed = _publish(graph, keys)
    mixed.receipts = [stranger.receipts[0], *mixed.receipts[1:]]  # the same node, another signer
    assert contains(mixed.verify(jobs), "the summary by")
    # A result answering another request.
    other_request, _ = _job_pair("other")
    stray = from_sdk(sign(6050, "answer", [["e", other_request.id]], PROVIDER))
    problems = _publish(_swarm(_recorded(), request, stray), keys).verify({request.id: request, stray.id: stray})
    assert contains(problems, "does not answer")


def test_an_lm_node_hidden_in_a_structure_part_is_refused() -> None:
    graph = _recorded()
    lm = next(n for n in graph if n.type is NodeType.LM)
    content = json.dumps({"format": receipts.FORMAT, "version": 1, "nodes": [lm.to_json_dict()]})
    part = from_sdk(sign(receipts.KIND, content, [["receipt", "structure"]], CUSTOMER))
    with pytest.raises(pylon.MalformedEvent, match="without a receipt"):
        receipts.parse_structure(part)


def test_receipts_carry_digests_unless_content_was_kept() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="a private question")
    published = _publish(recorder.graph, nostr_sdk.Keys.generate())
    events = (published.summary.event, *published.receipts, *published.structures, *published.indexes)
    text = "".join(e.content for e in events)
    assert "private" not in text and '"sha256"' in text
