"""The trace recorder: a callback that builds the run's DAG from DSPy's start/end events.

A node's parent is DSPy's ``ACTIVE_CALL_ID`` at its start (DSPy sets it to the *caller's* id
while start hooks run, and its ``Evaluate``/``Parallel`` threads and asyncio tasks carry it), so
the graph is right under threads without OpenTelemetry's context. Inputs and outputs are kept as
SHA-256 digests unless ``keep_content=True``; anything named like a credential (``api_key``, a
token, a password) is left out either way. Times come from one monotonic clock anchored to the
wall clock once, so a node never ends before it starts when the system clock steps. Thread-safe.

The recorder registered first with DSPy tells every other registered
:class:`~dspy_pylon.callbacks.PylonCallback` what it records: ``on_trace_node_start`` and
``on_trace_node_end`` for each node (a live view), ``on_trace_complete`` for each finished run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import dspy
from dspy.utils import callback as dspy_callback

from dspy_pylon.callbacks import PylonCallback, records_traces
from dspy_pylon.trace import lm_calls, notes
from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceGraph, TraceNode

log = logging.getLogger(__name__)

_WALL_NS = time.time_ns()
_MONOTONIC_NS = time.perf_counter_ns()


def now_ns() -> int:
    """Nanoseconds since the epoch, from a monotonic clock (anchored to the wall clock at import)."""
    return _WALL_NS + (time.perf_counter_ns() - _MONOTONIC_NS)


# Keys that hold a credential: ``api_key``, ``x-api-key``, ``access_token``, ``password``, ``nsec``...
# (not ``max_tokens``). Dashes count as underscores.
_CREDENTIAL = re.compile(
    r"api_?key|secret|passw|passphrase|credential|authori[sz]ation|cookie|bearer|mnemonic|nwc|nsec|seed"
    r"|(^|_)(key|token|auth)$",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def _is_credential(key: Any) -> bool:
    return isinstance(key, str) and _credential_name(key)


@functools.lru_cache(maxsize=4096)  # the same few argument names, on every call
def _credential_name(key: str) -> bool:
    return _CREDENTIAL.search(key.replace("-", "_")) is not None


def _mapping_without_credentials(value: dict[Any, Any], depth: int) -> dict[Any, Any]:
    kept = {}
    for key, item in value.items():
        if _is_credential(key):
            continue
        if isinstance(item, dict) and depth < 4:
            item = _mapping_without_credentials(item, depth + 1)
        elif isinstance(item, str) and "@" in item and "://" in item:
            item = _USERINFO.sub(r"\1", item)  # https://user:pw@host -> https://host
        kept[key] = item
    return kept


def without_credentials(value: Any) -> Any:
    """``value`` without the entries whose key names a credential, and without the user:password
    of URLs: in the call's arguments and the mappings among them (an LM call's ``kwargs``, its
    ``extra_headers``), where DSPy calls carry credentials. Lists (messages, demos) are content,
    left as they are: walking them would cost every call."""
    if not isinstance(value, dict):
        return value
    return _mapping_without_credentials(value, 0)


@functools.lru_cache(maxsize=4096)
def _class_text(value: type) -> str:
    # A signature class is written as its fields and instructions: str() of one renders every
    # pydantic field, and even ``signature`` is rendered anew on each read (the costliest part
    # of a node, before this cache).
    signature = getattr(value, "signature", None)
    if isinstance(signature, str):
        return f"{signature}\n{getattr(value, 'instructions', '')}"
    return f"{value.__module__}.{value.__qualname__}"


def _plain(value: Any) -> Any:
    # json's fallback for what it cannot write.
    if isinstance(value, type):
        return _class_text(value)
    return str(value)


# Made once: json.dumps with any option makes a new encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=_plain)


def _text(value: Any) -> str:
    return _ENCODER.encode(without_credentials(value))


def _copy(node: TraceNode) -> TraceNode:
    return dataclasses.replace(node, attributes=dict(node.attributes))


@functools.lru_cache(maxsize=4096)  # DSPy renders ``signature`` anew on every read (7 µs a call)
def signature_label(signature: Any) -> str:
    """How a predictor is named: its signature class, or ``question -> answer`` for a string one
    (never DSPy's ``StringSignature``)."""
    name = getattr(signature, "__name__", "")
    if name and name != "StringSignature":
        return str(name)
    text = getattr(signature, "signature", None)
    return str(text) if text else "Signature"


class TraceRecorder(PylonCallback):
    """Records every module, predictor, adapter, LM, tool, evaluation and compile call as a node."""

    records_traces = True

    def __init__(self, keep_content: bool = False) -> None:
        self.keep_content = keep_content
        self.graph = TraceGraph()
        self._lock = threading.Lock()
        self._lm_started: dict[str, tuple[Any, int]] = {}
        self._last_compile: dict[int, str] = {}  # per thread: candidates are reported after compile
        self._audiences: dict[str, tuple[tuple[Any, ...], list[Callable[..., Any]]]] = {}

    # ─── the core ───

    def _value(self, value: Any) -> Any:
        try:
            text = _text(value)
        except (TypeError, ValueError, RecursionError):  # mixed-type keys, a cycle: a node still
            text = repr(value)
        return text if self.keep_content else {"sha256": hashlib.sha256(text.encode()).hexdigest()}

    def _start(self, call_id: str, kind: NodeType, name: str, inputs: Any, **attributes: Any) -> None:
        parent = dspy_callback.ACTIVE_CALL_ID.get()
        node = TraceNode(
            id=call_id,
            parent_id=parent,
            type=kind,
            name=name,
            start_ns=now_ns(),
            inputs=self._value(inputs),
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        with self._lock:
            if call_id in self.graph.nodes:  # the same call heard twice (registered globally and on it)
                return
            if node.parent_id is None and kind is NodeType.MODULE:
                node.type = NodeType.PROGRAM
            self.graph.add(node)
        self._tell("on_trace_node_start", node)

    def _end(
        self, call_id: str, outputs: Any, exception: BaseException | None, info: lm_calls.LmCallInfo | None = None
    ) -> TraceNode | None:
        with self._lock:
            node = self.graph.nodes.get(call_id)
            if node is None or node.end_ns is not None:  # unknown, or ended already (registered twice)
                return None
            node.end_ns = max(now_ns(), node.start_ns)
            if exception is not None:
                node.status = NodeStatus.ERROR
                node.error_type = type(exception).__name__
                # A message can quote the prompt or the answer (a parse error does): content only when kept.
                node.error = str(exception)[:2000] if self.keep_content else None
            else:
                node.status = NodeStatus.OK
                node.outputs = self._value(outputs)
            if info is not None:
                node.usage = {"prompt_tokens": info.prompt_tokens, "completion_tokens": info.completion_tokens}
                if info.cost_msats is not None:
                    node.usage["cost_msats"] = info.cost_msats
                node.route = info.route or None
                node.attributes["cache_hit"] = info.cache_hit
            told = notes.get(call_id)
            if told:
                route, cost = told.pop(notes.ROUTE, None), told.pop(notes.COST, None)
                if isinstance(route, dict) and node.route is None:
                    node.route = route
                    node.usage = {**(node.usage or {}), **({"cost_msats": cost} if cost is not None else {})}
                node.attributes.update(told)
            finished_root = node.parent_id is None or node.parent_id not in self.graph.nodes
        self._tell("on_trace_node_end", node)
        if finished_root:
            self._complete(self.subgraph(call_id))
        return node

    # ─── telling other callbacks ───

    def _listeners(self, hook: str) -> list[Callable[..., Any]]:
        registered = tuple(dspy.settings.get("callbacks", None) or ())
        cached = self._audiences.get(hook)
        if cached is not None and cached[0] == registered:  # the same callbacks as last time
            return cached[1]
        listeners = self._find_listeners(hook, registered)
        self._audiences[hook] = (registered, listeners)
        return listeners

    def _find_listeners(self, hook: str, registered: tuple[Any, ...]) -> list[Callable[..., Any]]:
        listeners = []
        if getattr(type(self), hook) is not getattr(PylonCallback, hook):  # a subclass listens itself
            listeners.append(getattr(self, hook))
        lead = next((c for c in registered if records_traces(c)), self)
        if lead is not self:  # the first registered recorder speaks for all (no run told twice)
            return listeners
        for callback in registered:
            if records_traces(callback) or not isinstance(callback, PylonCallback):
                continue
            if getattr(type(callback), hook, None) is getattr(PylonCallback, hook):
                continue  # it does not listen
            listeners.append(getattr(callback, hook))
        return listeners

    def _tell(self, hook: str, node: TraceNode) -> None:
        listeners = self._listeners(hook)
        if not listeners:
            return
        own = getattr(self, hook)
        copy: TraceNode | None = None
        for listener in listeners:
            if listener == own:  # a subclass hearing its own recording reads the node as it is
                self._call(listener, node)
                continue
            if copy is None:  # others get a copy, as it was now
                with self._lock:
                    copy = _copy(node)
            self._call(listener, copy)

    def _complete(self, graph: TraceGraph) -> None:
        for listener in self._listeners("on_trace_complete"):
            self._call(listener, graph)

    def _call(self, listener: Callable[..., Any], *args: Any) -> None:
        try:
            listener(*args)
        except Exception:  # a listener never breaks the run
            log.exception("trace listener %s failed", listener)

    def snapshot(self) -> TraceGraph:
        """A copy of everything recorded so far, safe to read while calls go on."""
        with self._lock:
            return TraceGraph(dict(self.graph.nodes))

    def forget(self, graph: TraceGraph) -> None:
        """Drop ``graph``'s nodes from what this recorder holds (after they were exported)."""
        with self._lock:
            for node_id in graph.nodes:
                self.graph.nodes.pop(node_id, None)

    def subgraph(self, root_id: str) -> TraceGraph:
        """The nodes under ``root_id`` (itself included)."""
        with self._lock:
            keep: set[str] = {root_id}
            sub = TraceGraph()
            for node in self.graph.nodes.values():  # start order: a parent comes before its children
                if node.id == root_id or node.parent_id in keep:
                    keep.add(node.id)
                    sub.add(node)
            return sub

    # ─── DSPy's hooks ───

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A module or predictor call began."""
        import dspy

        if isinstance(instance, dspy.Predict):
            self._start(call_id, NodeType.PREDICTOR, signature_label(instance.signature), inputs)
            return
        # An operator (pylon.Refine, the sandbox) says what node it is, and a module may name its call.
        kind = getattr(instance, "trace_node_type", None)
        node_type = NodeType(kind) if isinstance(kind, str) and kind in NodeType._value2member_map_ else NodeType.MODULE
        name = getattr(instance, "trace_name", None)
        self._start(call_id, node_type, name if isinstance(name, str) else type(instance).__name__, inputs)

    def on_module_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """A module or predictor call ended."""
        self._end(call_id, outputs, exception)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An LM call began."""
        self._start(call_id, NodeType.LM, str(getattr(instance, "model", type(instance).__name__)), inputs)
        with self._lock:
            self._lm_started[call_id] = (instance, len(getattr(instance, "history", None) or []))

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """An LM call ended: its usage, exact cost and route join its node."""
        with self._lock:
            instance, seen = self._lm_started.pop(call_id, (None, 0))
        info = lm_calls.get(call_id)
        if info is None and instance is not None and exception is None:
            # A pylon LM's engine reports each response it returns: a call it did not see was a cache hit.
            reports = getattr(instance, "reports_calls", False)
            info = lm_calls.LmCallInfo.cache_hit_info() if reports else self._from_history(instance, seen)
        self._end(call_id, outputs, exception, info)  # usage joins before a finished run is handed on

    def _from_history(self, instance: Any, seen: int) -> lm_calls.LmCallInfo | None:
        # Another LM (not pylon's): its history entry is this call's only when exactly one was added
        # and no other call on the same LM was in flight meanwhile.
        history = getattr(instance, "history", None) or []
        with self._lock:
            busy = any(other is instance for other, _ in self._lm_started.values())
        if busy or len(history) != seen + 1:
            return None
        return lm_calls.LmCallInfo.from_entry(history[-1])

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """The adapter began writing the prompt."""
        self._start(call_id, NodeType.ADAPTER_FORMAT, type(instance).__name__, inputs)

    def on_adapter_format_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """The adapter wrote the prompt."""
        self._end(call_id, outputs, exception)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """The adapter began reading the completion."""
        self._start(call_id, NodeType.ADAPTER_PARSE, type(instance).__name__, inputs)

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """The adapter read the completion."""
        self._end(call_id, outputs, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """A tool call began."""
        self._start(call_id, NodeType.TOOL, str(getattr(instance, "name", type(instance).__name__)), inputs)

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """A tool call ended."""
        self._end(call_id, outputs, exception)

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An evaluation began."""
        self._start(
            call_id, NodeType.EVALUATE, type(instance).__name__, {k: v for k, v in inputs.items() if k != "devset"}
        )

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """An evaluation ended."""
        self._end(call_id, getattr(outputs, "score", outputs), exception)

    def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        """An optimizer's compile began."""
        with self._lock:
            self._last_compile.pop(threading.get_ident(), None)
        settings = {k: v for k, v in inputs.items() if k not in ("trainset", "valset", "student", "teacher")}
        self._start(call_id, NodeType.COMPILE, type(instance).__name__, settings)

    def on_compile_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        """An optimizer's compile ended."""
        self._end(call_id, type(outputs).__name__, exception)
        with self._lock:
            self._last_compile[threading.get_ident()] = call_id

    def on_optimizer_candidate(
        self, candidate_id: str, metrics: Any, parent_id: str | None, program_state: Any
    ) -> None:
        """A candidate program: a finished node under the compile that produced it."""
        now = now_ns()
        numbers = {k: float(v) for k, v in dict(metrics).items() if isinstance(v, (int, float))}
        with self._lock:
            parent = self._last_compile.get(threading.get_ident())
            compile_node = self.graph.nodes.get(parent) if parent is not None else None
            # Inside the compile's span while it is held; once its run was exported and forgotten, a run of its own.
            at = compile_node.end_ns if compile_node is not None and compile_node.end_ns is not None else now
            node_id = f"{parent or 'candidate'}:{candidate_id}:{len(self.graph)}"
            node = TraceNode(
                id=node_id,
                parent_id=parent if compile_node is not None else None,
                type=NodeType.CANDIDATE,
                name=candidate_id[:16],
                start_ns=at,
                end_ns=at,
                status=NodeStatus.OK,
                outputs=self._value(program_state),
                attributes={
                    "candidate_id": candidate_id,
                    "metrics": numbers,
                    "parent_candidate": parent_id,
                    "compile_call_id": parent,
                },
            )
            self.graph.add(node)
        self._tell("on_trace_node_start", node)
        self._tell("on_trace_node_end", node)
        if node.parent_id is None:
            self._complete(self.subgraph(node.id))
