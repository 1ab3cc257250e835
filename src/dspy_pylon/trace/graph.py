"""The trace DAG of a run: nodes with parents, timings, status, usage and routes (pure, no I/O).

A node's inputs and outputs are kept as SHA-256 digests of their canonical JSON unless the
recorder was told to keep content; graphs save and load as plain JSON.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from dspy_pylon.plain_errors import ManifestError

GRAPH_FORMAT = "dspy-pylon/trace-graph"
GRAPH_VERSION = 1


class NodeType(enum.StrEnum):
    """What a node stands for."""

    PROGRAM = "program"  # the outermost module of a run
    MODULE = "module"
    PREDICTOR = "predictor"
    ADAPTER_FORMAT = "adapter_format"
    ADAPTER_PARSE = "adapter_parse"
    LM = "lm"
    TOOL = "tool"
    EVALUATE = "evaluate"
    COMPILE = "compile"
    CANDIDATE = "candidate"
    REFINE = "refine"  # room for later operators
    SANDBOX = "sandbox"


class NodeStatus(enum.StrEnum):
    """Where a node is in its life."""

    RUNNING = "running"
    OK = "ok"
    ERROR = "error"


@dataclass
class TraceNode:
    """One call in the run. Times are ``time.time_ns()``; ``usage`` holds ``prompt_tokens``,
    ``completion_tokens`` and ``cost_msats`` (LM calls); ``route`` the venue, backend or
    provider, model and swarm job id."""

    id: str
    parent_id: str | None
    type: NodeType
    name: str
    start_ns: int
    end_ns: int | None = None
    status: NodeStatus = NodeStatus.RUNNING
    error_type: str | None = None
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    usage: dict[str, int] | None = None
    route: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int | None:
        """How long the call took, once it ended."""
        return None if self.end_ns is None else self.end_ns - self.start_ns

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> TraceNode:
        """The node :meth:`to_json_dict` wrote."""
        values = dict(data)
        values["type"] = NodeType(values["type"])
        values["status"] = NodeStatus(values["status"])
        return cls(**values)


@dataclass
class TraceGraph:
    """The nodes of one recording, in the order they started."""

    nodes: dict[str, TraceNode] = field(default_factory=dict)

    def add(self, node: TraceNode) -> None:
        """Record a started node (its parent, when given, was recorded before it)."""
        self.nodes[node.id] = node

    def roots(self) -> list[TraceNode]:
        """Nodes without a parent in this graph."""
        return [n for n in self.nodes.values() if n.parent_id is None or n.parent_id not in self.nodes]

    def children(self, node_id: str) -> list[TraceNode]:
        """The nodes whose parent is ``node_id``, in start order."""
        return [n for n in self.nodes.values() if n.parent_id == node_id]

    def __iter__(self) -> Iterator[TraceNode]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def to_json(self) -> str:
        """The graph as JSON text."""
        document = {
            "format": GRAPH_FORMAT,
            "schema_version": GRAPH_VERSION,
            "nodes": [n.to_json_dict() for n in self.nodes.values()],
        }
        return json.dumps(document, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> TraceGraph:
        """A graph :meth:`to_json` wrote; anything else is a :class:`ManifestError`."""
        try:
            document = json.loads(text)
            if document.get("format") != GRAPH_FORMAT or document.get("schema_version") != GRAPH_VERSION:
                raise ManifestError(f"not a dspy-pylon trace graph (version {GRAPH_VERSION})")
            graph = cls()
            for data in document["nodes"]:
                node = TraceNode.from_json_dict(data)
                if not isinstance(node.id, str) or not isinstance(node.start_ns, int):
                    raise ManifestError(f"trace node {node.id!r} has no string id or integer start")
                if node.end_ns is not None and not isinstance(node.end_ns, int):
                    raise ManifestError(f"trace node {node.id!r} has a non-integer end")
                graph.add(node)
            for node in graph:  # no cycles: every chain of parents ends
                seen = {node.id}
                parent = node.parent_id
                while parent is not None and parent in graph.nodes:
                    if parent in seen:
                        raise ManifestError(f"trace node {node.id!r} is its own ancestor")
                    seen.add(parent)
                    parent = graph.nodes[parent].parent_id
            return graph
        except ManifestError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise ManifestError(f"not a valid trace graph: {exc!r}") from None


def tree_lines(graph: TraceGraph) -> list[str]:
    """The graph as indented lines, one per node: type, name, duration, tokens, cost, provider."""
    lines: list[str] = []

    def walk(node: TraceNode, depth: int) -> None:
        line = f"{'  ' * depth}{node.type.value} {node.name}"
        if node.duration_ns is not None:
            line += f"  {node.duration_ns / 1e6:.1f} ms"
        if node.usage:
            tokens = node.usage.get("prompt_tokens", 0) + node.usage.get("completion_tokens", 0)
            line += f"  {tokens} tokens"
            if "cost_msats" in node.usage:
                line += f"  {node.usage['cost_msats']} msats"
        if node.route and node.route.get("provider"):
            line += f"  provider {str(node.route['provider'])[:12]}…"
        if node.status is NodeStatus.ERROR:
            line += f"  ✗ {node.error_type}"
        lines.append(line)
        if depth < 200:  # a hand-made graph this deep is not drawn further
            for child in children.get(node.id, ()):
                walk(child, depth + 1)

    children: dict[str, list[TraceNode]] = {}
    for node in graph:
        if node.parent_id is not None and node.parent_id in graph.nodes:
            children.setdefault(node.parent_id, []).append(node)
    for root in graph.roots():
        walk(root, 0)
    return lines
