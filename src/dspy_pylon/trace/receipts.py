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
* ``index`` — the node order and an ``e`` tag for every receipt (``receipt``), in parts of a
  few hundred (a relay refuses events over 64 KiB, and nostr-sdk drops ones with 2,000 tags).
* ``summary`` — published last: the totals (cost, tokens, LM calls), the roots, and an ``e`` tag
  for every index part (``index``) and structure part (``structure``).

Everything is checked before anything is published: an event too large for relays is refused
with the node that makes it so, rather than failing half-way with receipts already out.
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
#: What any event may take, as signed JSON (the embedded relay refuses events over 64 KiB).
MAX_EVENT_BYTES = 60_000
#: A structure part's content, before JSON escapes it into the event.
MAX_PART_BYTES = 24_000
#: Receipts (and node ids of the order) per index part: ~100 bytes a tag, and far under 2,000 tags.
INDEX_CHUNK = 300
#: Index and structure parts a summary may list.
MAX_SUMMARY_LINKS = 1_500


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


def _event_bytes(content: str, tags: Sequence[Sequence[str]]) -> int:
    # The signed event's JSON: content and tags escaped as they will be, plus id, key and signature.
    return len(json.dumps(content).encode()) + len(json.dumps([list(t) for t in tags]).encode()) + 400


def _cost(node: TraceNode) -> int:
    usage = node.usage if isinstance(node.usage, dict) else {}
    cost = usage.get("cost_msats")
    return cost if isinstance(cost, int) and not isinstance(cost, bool) else 0


def _route(node: TraceNode) -> dict[str, Any]:
    return node.route if isinstance(node.route, dict) else {}


def node_receipt(node: TraceNode, compiled_id: str | None, receipted: set[str]) -> PlannedEvent:
    """The receipt of one receiptable node (``receipted``: the node ids with receipts before it)."""
    tags = _common("node", compiled_id)
    tags.append(("node", node.id))
    if node.parent_id is not None:
        tags.append(("parent", node.parent_id))
    route = _route(node)
    relay = str(route.get("relay") or "")
    if route.get("job_id"):
        tags.append(("e", str(route["job_id"]), relay, "job-request"))
    if route.get("result_id"):
        tags.append(("e", str(route["result_id"]), relay, "job-result"))
    if route.get("provider"):
        tags.append(("p", str(route["provider"])))
    tags.append(("cost_msats", str(_cost(node))))
    links = ((node.parent_id, "parent"),) if node.parent_id in receipted else ()
    content = _content({"node": node.to_json_dict()})
    size = _event_bytes(content, tags) + 100 * len(links)
    if size > MAX_EVENT_BYTES:
        raise MalformedEvent(
            f"trace node {node.id!r} ({node.type.value} {node.name}) makes a {size}-byte receipt, over what "
            f"relays take ({MAX_EVENT_BYTES}): record it without keep_content=True (digests only)"
        )
    return PlannedEvent("node", content, tuple(tags), node.id, links)


def structure_parts(nodes: Sequence[TraceNode], compiled_id: str | None) -> list[PlannedEvent]:
    """The non-receipted nodes, in parts each small enough for any relay."""
    parts: list[PlannedEvent] = []
    batch: list[dict[str, Any]] = []
    size = 0
    tags = tuple(_common("structure", compiled_id))
    for node in nodes:
        data = node.to_json_dict()
        # As escaped inside the event's JSON: quotes and backslashes in kept text count twice.
        length = len(json.dumps(json.dumps(data, ensure_ascii=False, default=str)).encode())
        if length > MAX_PART_BYTES:
            raise MalformedEvent(
                f"trace node {node.id!r} ({node.type.value} {node.name}) is {length} bytes, over what a "
                f"receipt may hold ({MAX_PART_BYTES}): record it without keep_content=True (digests only)"
            )
        if batch and size + length > MAX_PART_BYTES:
            parts.append(PlannedEvent("structure", _content({"nodes": batch}), tags))
            batch, size = [], 0
        batch.append(data)
        size += length
    if batch:
        parts.append(PlannedEvent("structure", _content({"nodes": batch}), tags))
    return parts


def index_parts(order: Sequence[str], receipt_ids: Sequence[str], compiled_id: str | None) -> list[PlannedEvent]:
    """The node order and the receipts' ids, a few hundred of each per part."""
    count = max(1, -(-len(order) // INDEX_CHUNK), -(-len(receipt_ids) // INDEX_CHUNK))
    parts = []
    for i in range(count):
        chunk = slice(i * INDEX_CHUNK, (i + 1) * INDEX_CHUNK)
        tags = _common("index", compiled_id)
        tags.extend(("e", event_id, "", "receipt") for event_id in receipt_ids[chunk])
        parts.append(PlannedEvent("index", _content({"order": list(order[chunk])}), tuple(tags)))
    return parts


@dataclass(frozen=True)
class Totals:
    """What a trace adds up to: LM calls and their tokens, and the cost of every receiptable node."""

    lm_calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_msats: int

    @classmethod
    def of(cls, nodes: Iterable[TraceNode]) -> Totals:
        """The totals of ``nodes``."""
        nodes = list(nodes)
        calls = [n for n in nodes if n.type is NodeType.LM]

        def tokens(node: TraceNode, key: str) -> int:
            value = (node.usage if isinstance(node.usage, dict) else {}).get(key, 0)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(
            lm_calls=len(calls),
            prompt_tokens=sum(tokens(n, "prompt_tokens") for n in calls),
            completion_tokens=sum(tokens(n, "completion_tokens") for n in calls),
            cost_msats=sum(_cost(n) for n in nodes if n.type in RECEIPTABLE),
        )

    def to_json_dict(self) -> dict[str, int]:
        """Plain JSON."""
        return {
            "lm_calls": self.lm_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_msats": self.cost_msats,
        }


def summary(
    graph: TraceGraph, index_ids: Sequence[str], structure_ids: Sequence[str], compiled_id: str | None
) -> PlannedEvent:
    """The summary: totals, roots, and an ``e`` tag for each index and structure part."""
    if len(index_ids) + len(structure_ids) > MAX_SUMMARY_LINKS:
        raise MalformedEvent(f"a trace of {len(graph)} nodes is too large to publish as receipts")
    totals = Totals.of(graph)
    tags = _common("summary", compiled_id)
    tags.extend(("e", event_id, "", "index") for event_id in index_ids)
    tags.extend(("e", event_id, "", "structure") for event_id in structure_ids)
    tags.append(("cost_msats", str(totals.cost_msats)))
    roots = [n.id for n in graph.roots()][:500]
    content = _content({"nodes": len(graph), "roots": roots, "totals": totals.to_json_dict()})
    return PlannedEvent("summary", content, tuple(tags))


def plan(graph: TraceGraph, compiled_id: str | None = None) -> tuple[list[PlannedEvent], list[PlannedEvent]]:
    """The receipts (in start order, parents first) and structure parts for ``graph``, every one
    checked to fit; the index parts and the summary follow once their ids are known. Only a
    finished run is published."""
    unfinished = [n.id for n in graph if n.end_ns is None]
    if unfinished:
        raise MalformedEvent(f"{len(unfinished)} trace nodes are still running; publish a finished run")
    if len(graph) > INDEX_CHUNK * MAX_SUMMARY_LINKS // 2:
        raise MalformedEvent(f"a trace of {len(graph)} nodes is too large to publish as receipts")
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


def _int_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items()
    )


def _node(data: Any, where: str) -> TraceNode:
    try:
        node = TraceNode.from_json_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MalformedEvent(f"{where} holds no valid trace node: {exc!r}") from None
    if not isinstance(node.id, str) or not isinstance(node.start_ns, int) or not isinstance(node.name, str):
        raise MalformedEvent(f"{where} holds a node without a string id and name or an integer start")
    if node.parent_id is not None and not isinstance(node.parent_id, str):
        raise MalformedEvent(f"{where} holds a node whose parent is no id")
    if node.end_ns is not None and not isinstance(node.end_ns, int):
        raise MalformedEvent(f"{where} holds a node with a non-integer end")
    if node.usage is not None and not _int_map(node.usage):
        raise MalformedEvent(f"{where} holds a node whose usage is not whole numbers")
    if (node.route is not None and not isinstance(node.route, dict)) or not isinstance(node.attributes, dict):
        raise MalformedEvent(f"{where} holds a node whose route or attributes are no mapping")
    return node


@dataclass(frozen=True)
class Summary:
    """A parsed summary event."""

    event: RawEvent
    index_ids: tuple[str, ...]
    structure_ids: tuple[str, ...]
    totals: Mapping[str, int]
    compiled_id: str | None
    cost_msats: int
    nodes: int


def parse_summary(event: RawEvent) -> Summary:
    """A summary event's content and links; :class:`MalformedEvent` when it is none."""
    document = _document(event, "summary")
    totals = document.get("totals")
    nodes = document.get("nodes")
    if not isinstance(totals, dict) or not _int_map(totals) or not isinstance(nodes, int):
        raise MalformedEvent(f"trace summary {event.id[:12]} has no node count or totals")
    links = [tag for tag in event.tags_named("e") if len(tag) >= 4]
    try:
        cost = int(event.value("cost_msats") or "")
    except ValueError:
        raise MalformedEvent(f"trace summary {event.id[:12]} has no integer cost") from None
    return Summary(
        event=event,
        index_ids=tuple(tag[1] for tag in links if tag[3] == "index"),
        structure_ids=tuple(tag[1] for tag in links if tag[3] == "structure"),
        totals=dict(totals),
        compiled_id=event.value("compiled_id"),
        cost_msats=cost,
        nodes=nodes,
    )


def parse_index(event: RawEvent) -> tuple[list[str], list[str]]:
    """An index part's slice of the node order and its receipts' event ids."""
    order = _document(event, "index").get("order")
    if not isinstance(order, list) or not all(isinstance(i, str) for i in order):
        raise MalformedEvent(f"index part {event.id[:12]} has no node order")
    receipt_ids = [tag[1] for tag in event.tags_named("e") if len(tag) >= 4 and tag[3] == "receipt"]
    return order, receipt_ids


def parse_receipt(event: RawEvent) -> TraceNode:
    """The node a receipt records; its ``node`` tag must name it, and it must be receiptable."""
    node = _node(_document(event, "node").get("node"), f"receipt {event.id[:12]}")
    if event.value("node") != node.id:
        raise MalformedEvent(f"receipt {event.id[:12]} tags another node than it holds")
    if node.type not in RECEIPTABLE:
        raise MalformedEvent(f"receipt {event.id[:12]} holds a {node.type.value} node, which gets no receipt")
    return node


def parse_structure(event: RawEvent) -> list[TraceNode]:
    """The nodes a structure part holds (never a receiptable one: those have receipts)."""
    nodes = _document(event, "structure").get("nodes")
    if not isinstance(nodes, list):
        raise MalformedEvent(f"structure part {event.id[:12]} holds no node list")
    parsed = [_node(data, f"structure part {event.id[:12]}") for data in nodes]
    hidden = [n for n in parsed if n.type in RECEIPTABLE]
    if hidden:
        raise MalformedEvent(f"structure part {event.id[:12]} holds a {hidden[0].type.value} node without a receipt")
    return parsed


def rebuild(order: Sequence[str], receipts: Sequence[RawEvent], structures: Sequence[RawEvent]) -> TraceGraph:
    """The graph the events record, in ``order`` (the index parts'); every node named there must
    be there exactly once (:class:`MalformedEvent` otherwise)."""
    found: dict[str, TraceNode] = {}
    for node in [parse_receipt(e) for e in receipts] + [n for e in structures for n in parse_structure(e)]:
        if node.id in found:
            raise MalformedEvent(f"trace node {node.id!r} is recorded twice")
        found[node.id] = node
    missing = [node_id for node_id in order if node_id not in found]
    extra = set(found) - set(order)
    if missing or extra or len(order) != len(set(order)):
        raise MalformedEvent(f"the trace's events do not match its index: {len(missing)} missing, {len(extra)} extra")
    # Through the graph's own reader: the same checks (types, no cycles) as a saved graph.
    document = {
        "format": "dspy-pylon/trace-graph",
        "schema_version": 1,
        "nodes": [found[node_id].to_json_dict() for node_id in order],
    }
    from dspy_pylon.plain_errors import ManifestError

    try:
        return TraceGraph.from_json(json.dumps(document))
    except ManifestError as exc:
        raise MalformedEvent(f"the trace's events make no valid graph: {exc}") from None


def recover_requests(jobs: dict[str, RawEvent]) -> None:
    """Add to ``jobs`` the request each result carries (NIP-90's ``request`` tag) when its own
    signature checks out: a customer deletes its request once answered (NIP-09, so other
    providers stop), and the result still holds it. A forged one is left out."""
    import nostr_sdk

    from dspy_pylon.nostr.events import from_sdk

    for result in list(jobs.values()):
        text = result.value("request")
        if text is None or not 6000 <= result.kind < 7000:
            continue
        try:
            request = from_sdk(nostr_sdk.Event.from_json(text))
        except Exception:  # not an event, or its signature fails (nostr-sdk raises its own errors)
            continue
        jobs.setdefault(request.id, request)


def _links(event: RawEvent) -> dict[str, str]:
    return {tag[3]: tag[1] for tag in event.tags_named("e") if len(tag) >= 4}


def verify(
    summary: Summary,
    graph: TraceGraph,
    receipt_events: Sequence[RawEvent],
    other_events: Sequence[RawEvent],
    jobs: Mapping[str, RawEvent],
) -> tuple[list[str], int]:
    """What does not hold in a fetched trace (empty: it verifies), and how many swarm jobs were
    checked. Signatures were checked as the events arrived; here: one author for all; each
    receipt's tags the same as its node (job ids, provider, cost); every paid or routed node
    linked to a job, no job claimed twice; each job result signed by the provider its receipt
    names, answering its request (kinds 5000-5999 and +1000), for no less than the cost claimed
    when its amount is public; and the graph's totals the summary's."""
    problems: list[str] = []
    author = summary.event.pubkey
    for event in (*receipt_events, *other_events):
        if event.pubkey != author:
            problems.append(f"event {event.id[:12]} is signed by {event.pubkey[:12]}, the summary by {author[:12]}")
    claimed: set[str] = set()
    checked = 0
    for event in receipt_events:
        node = parse_receipt(event)
        cost, route = _cost(node), _route(node)
        where = f"receipt {event.id[:12]} ({node.type.value} {node.name})"
        if event.value("cost_msats") != str(cost):
            problems.append(f"{where} tags a cost of {event.value('cost_msats')}, its node {cost}")
        links = _links(event)
        request_id, result_id, provider = links.get("job-request"), links.get("job-result"), event.value("p")
        wanted = (route.get("job_id"), route.get("result_id"), route.get("provider"))
        if (request_id, result_id, provider) != tuple(None if v is None else str(v) for v in wanted):
            problems.append(f"{where}: its tags link another job or provider than its node names")
        if not (cost > 0 or any(wanted)):
            continue  # nothing paid, nothing sent: a local call
        if not (request_id and result_id and provider):
            problems.append(f"{where}: a paid or swarm call without its job request, result and provider")
            continue
        for job in (request_id, result_id):
            if job in claimed:
                problems.append(f"{where}: job event {job[:12]} is claimed by another receipt too")
            claimed.add(job)
        request, result = jobs.get(request_id), jobs.get(result_id)
        if request is None:
            problems.append(f"{where}: job request {request_id[:12]} is not on the relays")
        if result is None:
            problems.append(f"{where}: job result {result_id[:12]} is not on the relays")
        if request is None or result is None:
            continue
        checked += 1
        if result.pubkey != provider:
            problems.append(
                f"{where}: the job result is signed by {result.pubkey[:12]}, the receipt names provider {provider[:12]}"
            )
        if not 5000 <= request.kind < 6000 or result.kind != request.kind + 1000:
            problems.append(f"{where}: kinds {request.kind}/{result.kind} are no NIP-90 job and result")
        if not any(len(tag) > 1 and tag[1] == request.id for tag in result.tags_named("e")):
            problems.append(f"{where}: the job result does not answer the job request")
        amount = result.value("amount")
        if amount is not None and amount.isdigit() and cost > int(amount):
            problems.append(f"{where}: claims {cost} msats, the provider's result asked {amount}")
    totals = Totals.of(graph).to_json_dict()
    if dict(summary.totals) != totals or summary.cost_msats != totals["cost_msats"]:
        problems.append(
            f"the graph adds up to {totals}, the summary says {dict(summary.totals)} (cost tag {summary.cost_msats})"
        )
    if summary.nodes != len(graph):
        problems.append(f"the graph has {len(graph)} nodes, the summary says {summary.nodes}")
    return problems, checked
