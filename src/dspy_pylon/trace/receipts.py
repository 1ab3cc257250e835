"""Signed trace receipts on Nostr, as pure data: what each event of a published trace holds,
how a graph becomes those events, and how they become the same graph again (no I/O).

One event kind, **3590** ("pylon trace receipt"), a regular (stored, never replaced) kind in a
range no NIP uses, and deliberately neither 5050 (a DVM request: providers would run it) nor a
kind-1 note (it would flood timelines). Prior art: NIP-32 labels (1985) attach a label to an
event, NIP-85 trusted assertions (30382-30384) are replaceable summaries by a trusted key; a
receipt is neither — it is an immutable record of one computation, so it is a regular event of
its own kind. Every event carries ``["t", "pylon-trace"]`` and ``["receipt", ROLE]``:

* ``node`` — one receiptable node (an LM call, a tool, a sandbox run): its content is the node
  (:class:`~dspy_pylon.trace.graph.TraceNode` as JSON: timings, status, usage and cost, route,
  SHA-256 digests of inputs and outputs — text only when the recorder kept it). Tags: ``node``
  (its id), ``parent`` (its parent's node id), ``e … parent`` (the parent's receipt, when it has
  one), ``e … job-request`` / ``e … job-result`` (a swarm call's real NIP-90 events, with the
  relay), ``p`` (the provider), ``compiled_id``, ``cost_msats``.
* ``structure`` — the other nodes (modules, predictors, adapters...), in parts small enough for
  any relay, so the whole graph can be rebuilt.
* ``summary`` — published last: the node order, the totals (cost, tokens, LM calls) and an
  ``e`` tag for every receipt (``receipt``) and structure part (``structure``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.events import RawEvent
from dspy_pylon.trace.graph import NodeType, TraceGraph, TraceNode

KIND = 3590
FORMAT = "dspy-pylon/trace-receipt"
VERSION = 1
TOPIC = "pylon-trace"
#: Nodes that get a receipt of their own: where compute (and money) was spent.
RECEIPTABLE = frozenset({NodeType.LM, NodeType.TOOL, NodeType.SANDBOX})
#: A structure part's content stays under this (the embedded relay refuses events over 64 KiB).
MAX_PART_BYTES = 40_000


@dataclass(frozen=True)
class PlannedEvent:
    """An event to sign: its role, content and tags (``e`` tags to earlier events are filled by
    the publisher as their ids become known, from ``links``)."""

    role: str
    content: str
    tags: tuple[tuple[str, ...], ...]
    node_id: str | None = None
    #: ``(node id, marker)``: an ``e`` tag to the receipt of that node, once it has an id.
    links: tuple[tuple[str, str], ...] = ()


def _content(data: Mapping[str, Any]) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, **data}, ensure_ascii=False, separators=(",", ":"))


def _common(role: str, compiled_id: str | None) -> list[tuple[str, ...]]:
    tags: list[tuple[str, ...]] = [("t", TOPIC), ("receipt", role)]
    if compiled_id:
        tags.append(("compiled_id", compiled_id))
    return tags


def _cost(node: TraceNode) -> int:
    cost = (node.usage or {}).get("cost_msats")
    return cost if isinstance(cost, int) and not isinstance(cost, bool) else 0


def node_receipt(node: TraceNode, compiled_id: str | None, receipted: set[str]) -> PlannedEvent:
    """The receipt of one receiptable node (``receipted``: the node ids with receipts before it)."""
    tags = _common("node", compiled_id)
    tags.append(("node", node.id))
    if node.parent_id is not None:
        tags.append(("parent", node.parent_id))
    route = node.route or {}
    relay = str(route.get("relay") or "")
    if route.get("job_id"):
        tags.append(("e", str(route["job_id"]), relay, "job-request"))
    if route.get("result_id"):
        tags.append(("e", str(route["result_id"]), relay, "job-result"))
    if route.get("provider"):
        tags.append(("p", str(route["provider"])))
    tags.append(("cost_msats", str(_cost(node))))
    links = ((node.parent_id, "parent"),) if node.parent_id in receipted else ()
    return PlannedEvent("node", _content({"node": node.to_json_dict()}), tuple(tags), node.id, links)


def structure_parts(nodes: Sequence[TraceNode], compiled_id: str | None) -> list[PlannedEvent]:
    """The non-receipted nodes in parts of at most ``MAX_PART_BYTES`` of content each."""
    parts: list[PlannedEvent] = []
    batch: list[dict[str, Any]] = []
    size = 0
    tags = tuple(_common("structure", compiled_id))
    for node in nodes:
        data = node.to_json_dict()
        length = len(json.dumps(data, ensure_ascii=False, default=str).encode())
        if length > MAX_PART_BYTES:
            raise MalformedEvent(f"trace node {node.id!r} is too large for a receipt ({length} bytes)")
        if batch and size + length > MAX_PART_BYTES:
            parts.append(PlannedEvent("structure", _content({"nodes": batch}), tags))
            batch, size = [], 0
        batch.append(data)
        size += length
    if batch:
        parts.append(PlannedEvent("structure", _content({"nodes": batch}), tags))
    return parts


@dataclass(frozen=True)
class Totals:
    """What a trace's LM calls add up to."""

    lm_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_msats: int

    @classmethod
    def of(cls, nodes: Iterable[TraceNode]) -> Totals:
        """The totals of ``nodes``' LM calls."""
        calls = [n for n in nodes if n.type is NodeType.LM]
        return cls(
            lm_calls=len(calls),
            prompt_tokens=sum(int((n.usage or {}).get("prompt_tokens", 0)) for n in calls),
            completion_tokens=sum(int((n.usage or {}).get("completion_tokens", 0)) for n in calls),
            cost_msats=sum(_cost(n) for n in calls),
        )


def summary(
    graph: TraceGraph,
    receipt_ids: Sequence[tuple[str, str]],
    structure_ids: Sequence[str],
    compiled_id: str | None,
    relay_hint: str = "",
) -> PlannedEvent:
    """The summary: node order, totals, and an ``e`` tag for each receipt and structure part
    (``receipt_ids``: ``(node id, event id)`` in publishing order)."""
    totals = Totals.of(graph)
    tags = _common("summary", compiled_id)
    tags.extend(("e", event_id, relay_hint, "receipt") for _, event_id in receipt_ids)
    tags.extend(("e", event_id, relay_hint, "structure") for event_id in structure_ids)
    tags.append(("cost_msats", str(totals.cost_msats)))
    content = _content(
        {
            "order": list(graph.nodes),
            "roots": [n.id for n in graph.roots()],
            "totals": {
                "lm_calls": totals.lm_calls,
                "prompt_tokens": totals.prompt_tokens,
                "completion_tokens": totals.completion_tokens,
                "cost_msats": totals.cost_msats,
            },
        }
    )
    return PlannedEvent("summary", content, tuple(tags))


def plan(graph: TraceGraph, compiled_id: str | None = None) -> tuple[list[PlannedEvent], list[PlannedEvent]]:
    """The receipts (in start order, parents first) and structure parts for ``graph``; the
    summary follows once their ids are known (:func:`summary`). Only finished nodes are published."""
    unfinished = [n.id for n in graph if n.end_ns is None]
    if unfinished:
        raise MalformedEvent(f"{len(unfinished)} trace nodes are still running; publish a finished run")
    receipts: list[PlannedEvent] = []
    receipted: set[str] = set()
    others: list[TraceNode] = []
    for node in graph:
        if node.type in RECEIPTABLE:
            receipts.append(node_receipt(node, compiled_id, receipted))
            receipted.add(node.id)
        else:
            others.append(node)
    return receipts, structure_parts(others, compiled_id)


# ─── reading ───


def _document(event: RawEvent, role: str) -> dict[str, Any]:
    if event.kind != KIND or event.value("receipt") != role:
        raise MalformedEvent(f"event {event.id[:12]} is not a pylon trace {role} (kind {event.kind})")
    try:
        document = json.loads(event.content)
    except ValueError:
        raise MalformedEvent(f"trace {role} {event.id[:12]} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise MalformedEvent(f"trace {role} {event.id[:12]} is not in format {FORMAT} v{VERSION}")
    return document


def _node(data: Any, where: str) -> TraceNode:
    try:
        node = TraceNode.from_json_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedEvent(f"{where} holds no valid trace node: {exc!r}") from None
    if not isinstance(node.id, str) or not isinstance(node.start_ns, int):
        raise MalformedEvent(f"{where} holds a node without a string id or an integer start")
    return node


@dataclass(frozen=True)
class Summary:
    """A parsed summary event."""

    event: RawEvent
    order: tuple[str, ...]
    receipt_ids: tuple[str, ...]
    structure_ids: tuple[str, ...]
    totals: Mapping[str, int]
    compiled_id: str | None
    cost_msats: int = 0


def parse_summary(event: RawEvent) -> Summary:
    """A summary event's content and links; :class:`MalformedEvent` when it is none."""
    document = _document(event, "summary")
    order = document.get("order")
    totals = document.get("totals")
    if not isinstance(order, list) or not all(isinstance(i, str) for i in order) or not isinstance(totals, dict):
        raise MalformedEvent(f"trace summary {event.id[:12]} has no node order or totals")
    links = [tag for tag in event.tags_named("e") if len(tag) >= 4]
    try:
        cost = int(event.value("cost_msats") or 0)
    except ValueError:
        raise MalformedEvent(f"trace summary {event.id[:12]} has a non-integer cost") from None
    return Summary(
        event=event,
        order=tuple(order),
        receipt_ids=tuple(tag[1] for tag in links if tag[3] == "receipt"),
        structure_ids=tuple(tag[1] for tag in links if tag[3] == "structure"),
        totals={k: int(v) for k, v in totals.items() if isinstance(v, int)},
        compiled_id=event.value("compiled_id"),
        cost_msats=cost,
    )


def parse_receipt(event: RawEvent) -> TraceNode:
    """The node a receipt records; its ``node`` tag must name it."""
    node = _node(_document(event, "node").get("node"), f"receipt {event.id[:12]}")
    if event.value("node") != node.id:
        raise MalformedEvent(f"receipt {event.id[:12]} tags another node than it holds")
    return node


def parse_structure(event: RawEvent) -> list[TraceNode]:
    """The nodes a structure part holds."""
    nodes = _document(event, "structure").get("nodes")
    if not isinstance(nodes, list):
        raise MalformedEvent(f"structure part {event.id[:12]} holds no node list")
    return [_node(data, f"structure part {event.id[:12]}") for data in nodes]


def rebuild(summary: Summary, receipts: Sequence[RawEvent], structures: Sequence[RawEvent]) -> TraceGraph:
    """The graph the events record, in the order the summary gives; every node the summary
    names must be there exactly once (:class:`MalformedEvent` otherwise)."""
    found: dict[str, TraceNode] = {}
    for event in receipts:
        node = parse_receipt(event)
        if node.id in found:
            raise MalformedEvent(f"trace node {node.id!r} is recorded twice")
        found[node.id] = node
    for event in structures:
        for node in parse_structure(event):
            if node.id in found:
                raise MalformedEvent(f"trace node {node.id!r} is recorded twice")
            found[node.id] = node
    missing = [node_id for node_id in summary.order if node_id not in found]
    extra = set(found) - set(summary.order)
    if missing or extra:
        raise MalformedEvent(f"the trace's events do not match its summary: {len(missing)} missing, {len(extra)} extra")
    # Through the graph's own reader: the same checks (types, no cycles) as a saved graph.
    document = {
        "format": "dspy-pylon/trace-graph",
        "schema_version": 1,
        "nodes": [found[node_id].to_json_dict() for node_id in summary.order],
    }
    from dspy_pylon.plain_errors import ManifestError

    try:
        return TraceGraph.from_json(json.dumps(document))
    except ManifestError as exc:
        raise MalformedEvent(f"the trace's events make no valid graph: {exc}") from None


def _links(event: RawEvent) -> dict[str, str]:
    return {tag[3]: tag[1] for tag in event.tags_named("e") if len(tag) >= 4}


def verify(
    summary: Summary,
    receipt_events: Sequence[RawEvent],
    structure_events: Sequence[RawEvent],
    jobs: Mapping[str, RawEvent],
) -> list[str]:
    """What does not hold in a fetched trace (empty: it verifies). Signatures were checked as the
    events arrived; here: one author for all, each swarm call's job result signed by the provider
    its receipt names and answering its request (kinds 5000-5999 and +1000), each receipt's cost
    tag matching its node, and the receipts' costs adding up to the summary's."""
    problems: list[str] = []
    author = summary.event.pubkey
    for event in (*receipt_events, *structure_events):
        if event.pubkey != author:
            problems.append(f"event {event.id[:12]} is signed by {event.pubkey[:12]}, the summary by {author[:12]}")
    total = 0
    lm_calls = 0
    for event in receipt_events:
        node = parse_receipt(event)
        cost = _cost(node)
        total += cost
        lm_calls += node.type is NodeType.LM
        if event.value("cost_msats") != str(cost):
            problems.append(f"receipt {event.id[:12]} tags a cost of {event.value('cost_msats')}, its node {cost}")
        links = _links(event)
        request_id, result_id = links.get("job-request"), links.get("job-result")
        if request_id is None and result_id is None:
            continue
        request = jobs.get(request_id or "")
        result = jobs.get(result_id or "")
        if request is None:
            problems.append(f"receipt {event.id[:12]}: job request {str(request_id)[:12]} is not on the relays")
        if result is None:
            problems.append(f"receipt {event.id[:12]}: job result {str(result_id)[:12]} is not on the relays")
        if request is None or result is None:
            continue
        provider = event.value("p")
        if provider is None or result.pubkey != provider:
            problems.append(
                f"receipt {event.id[:12]}: the job result is signed by {result.pubkey[:12]}, "
                f"the receipt names provider {str(provider)[:12]}"
            )
        if not 5000 <= request.kind < 6000 or result.kind != request.kind + 1000:
            problems.append(f"receipt {event.id[:12]}: kinds {request.kind}/{result.kind} are no NIP-90 job and result")
        if not any(len(tag) > 1 and tag[1] == request.id for tag in result.tags_named("e")):
            problems.append(f"receipt {event.id[:12]}: the job result does not answer the job request")
    if total != summary.cost_msats or summary.totals.get("cost_msats") != summary.cost_msats:
        problems.append(
            f"the receipts' costs add up to {total} msats, the summary says {summary.cost_msats} "
            f"(tag) and {summary.totals.get('cost_msats')} (content)"
        )
    if summary.totals.get("lm_calls") != lm_calls:
        problems.append(f"{lm_calls} LM call receipts, the summary counts {summary.totals.get('lm_calls')}")
    return problems
