"""What the HUD shows, as events (pure, no I/O): the call tree's nodes as they start and end, LM
calls' routes and money, the budget, optimizer candidates, and what was dropped.

An :class:`EventLog` numbers events from 1 and keeps the latest ``capacity`` of them, so a page
that reconnects with the last id it saw gets exactly what it missed (Server-Sent Events'
``Last-Event-ID``), or learns how many fell out of the window. Only display data goes in: names,
kinds, timings, statuses, tokens, costs, routes, digests (content only when the recorder kept
it) — never a key, a mnemonic or an NWC secret; :func:`node_event` builds them field by field
rather than copying a node whole.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Route fields a page may show (never a base URL with credentials in it, never a secret).
ROUTE_FIELDS = ("venue", "backend", "model", "provider", "job_id", "result_id", "relay", "encryption")


class EventKind(enum.StrEnum):
    """What an event reports."""

    NODE_START = "node_start"
    NODE_END = "node_end"
    BUDGET = "budget"
    CANDIDATE = "candidate"
    RUN_COMPLETE = "run_complete"
    DROPPED = "dropped"  # a sender could not keep up: how many events it left out


@dataclass(frozen=True)
class HudEvent:
    """One numbered event: ``id`` (from 1, in the log's order), ``kind`` and plain-JSON ``data``."""

    id: int
    kind: EventKind
    data: Mapping[str, Any]

    def to_json_dict(self) -> dict[str, Any]:
        """The event as plain JSON."""
        return {"id": self.id, "kind": self.kind.value, "data": dict(self.data)}

    @functools.cached_property
    def json(self) -> str:
        """:meth:`to_json_dict` as text, made once however many pages read it."""
        # Strict JSON (a page's JSON.parse refuses NaN): a non-finite number is written as null.
        try:
            return json.dumps(self.to_json_dict(), separators=(",", ":"), default=str, allow_nan=False)
        except ValueError:
            return json.dumps(_strict(self.to_json_dict()), separators=(",", ":"), default=str)


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def _content(value: Any) -> Any:
    # A digest stays a digest; kept content is shown cut short (a page is not an archive).
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k == "sha256"}
    if isinstance(value, str):
        return value[:2000]
    return None


def node_event(node: Any, *, ended: bool) -> dict[str, Any]:
    """The display data of a :class:`~dspy_pylon.trace.graph.TraceNode` as it starts or ends."""
    data: dict[str, Any] = {
        "node_id": str(node.id),
        "parent_id": None if node.parent_id is None else str(node.parent_id),
        "type": str(node.type),
        "name": str(node.name)[:200],
        "start_ns": int(node.start_ns),
        "status": str(node.status),
        "inputs": _content(node.inputs),
    }
    if data["parent_id"] is None and node.type == "candidate":
        # Reported after its compile ended (and was forgotten): still the compile's child on the page.
        compile_id = (node.attributes or {}).get("compile_call_id")
        data["parent_id"] = None if compile_id is None else str(compile_id)
    if ended:
        data["end_ns"] = None if node.end_ns is None else int(node.end_ns)
        data["outputs"] = _content(node.outputs)
        data["error_type"] = node.error_type
        if node.usage:
            data["usage"] = {k: int(v) for k, v in node.usage.items() if isinstance(v, int)}
        if node.route:
            data["route"] = {k: str(node.route[k]) for k in ROUTE_FIELDS if node.route.get(k) is not None}
        attributes = node.attributes or {}
        if "cache_hit" in attributes:
            data["cache_hit"] = bool(attributes["cache_hit"])
        if isinstance(attributes.get("sandbox_status"), str):
            data["sandbox_status"] = attributes["sandbox_status"][:32]
    return data


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def candidate_event(candidate_id: str, metrics: Mapping[str, Any], parent_id: str | None, at_ns: int) -> dict[str, Any]:
    """An optimizer candidate: its id, finite numeric scores (train and validation apart), its parent's id."""
    scores = {str(k): float(v) for k, v in metrics.items() if _finite(v)}
    return {"candidate_id": str(candidate_id), "parent_id": parent_id, "metrics": scores, "at_ns": int(at_ns)}


def budget_event(model: str, spent_msats: int, limit_msats: int | None, key: str | None = None) -> dict[str, Any]:
    """An LM's spend against its budget (``limit_msats`` None: unlimited); ``key`` tells LMs of one name apart."""
    return {"model": str(model), "key": key or str(model), "spent_msats": int(spent_msats), "limit_msats": limit_msats}


class EventLog:
    """Numbered events, the latest ``capacity`` kept. Thread-safe; appending never blocks on readers."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._events: deque[HudEvent] = deque(maxlen=capacity)
        self._next = 1
        self._lock = threading.Lock()

    @property
    def last_id(self) -> int:
        """The id of the latest event (0 before the first)."""
        with self._lock:
            return self._next - 1

    def append(self, kind: EventKind, data: Mapping[str, Any]) -> HudEvent:
        """Add an event; returns it with its id."""
        with self._lock:
            event = HudEvent(self._next, kind, data)
            self._next += 1
            self._events.append(event)
            return event

    def since(self, last_seen: int, limit: int = 5_000) -> tuple[list[HudEvent], int]:
        """Events after id ``last_seen`` (at most ``limit``), and how many after it were already
        forgotten (the page shows them as missed)."""
        last_seen = max(0, last_seen)
        with self._lock:
            if not self._events:
                return [], 0
            first = self._events[0].id
            missed = max(0, first - last_seen - 1)
            start = max(0, last_seen + 1 - first)
            events = [self._events[i] for i in range(start, min(len(self._events), start + limit))]
            return events, missed
