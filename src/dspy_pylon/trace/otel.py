"""A trace graph as OpenTelemetry spans: explicit parents and timestamps, GenAI attributes, cost.

DSPy's threads do not carry OpenTelemetry's context, so spans are not made while the program
runs: the finished :class:`~dspy_pylon.trace.graph.TraceGraph` (whose parents are right) is
turned into SDK ``ReadableSpan``s afterwards (:func:`graph_to_spans`, pure) and handed to any
exporter (:func:`export`). Ids derive from DSPy's call ids, so exporting a saved graph twice
gives the same spans. Attribute names follow the GenAI semantic conventions as they stand
(``gen_ai.*``, still "development"); cost has no adopted attribute, so LM spans carry ours
(``pylon.cost_msats``) and the proposed ``gen_ai.usage.cost.*`` shape, never summed into parents.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from dspy_pylon.trace.graph import NodeStatus, NodeType, TraceGraph, TraceNode

_SCOPE = InstrumentationScope("dspy_pylon.trace")
_KINDS = {NodeType.LM: SpanKind.CLIENT}
_OPERATIONS = {NodeType.PROGRAM: "invoke_agent", NodeType.TOOL: "execute_tool", NodeType.LM: "chat"}


_HEX = frozenset("0123456789abcdef")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.OK)


def _id(text: str, bits: int) -> int:
    # A DSPy call id (uuid4: 32 hex digits) gives its own bits; any other id (a candidate's, which
    # starts with its compile's call id) is hashed whole. Never zero: OTel reads zero as invalid.
    if len(text) == 32 and set(text) <= _HEX:
        value = int(text[: bits // 4], 16)
    else:
        value = int.from_bytes(hashlib.sha256(text.encode()).digest()[: bits // 8], "big")
    return value or 1


def provider_name(model: str, route: dict[str, Any]) -> str:
    """``gen_ai.provider.name``: the backend a pylon call took (``llamacpp``, ``ollama``, ``nip90``),
    else the provider prefix of a LiteLLM-style model string (``openai/gpt-4o`` -> ``openai``)."""
    backend = route.get("backend") or route.get("venue")
    if backend:
        return str(backend)
    prefix, slash, _ = model.partition("/")
    return prefix if slash and prefix else "dspy"


def _job_span(node: TraceNode, trace_id: int, parent: SpanContext, resource: Resource) -> ReadableSpan:
    # A swarm call is a message sent: its NIP-90 job request (a PRODUCER span, messaging
    # conventions) under the LM call's CLIENT span, linking both Nostr events of the job.
    route = node.route or {}
    attributes: dict[str, Any] = {
        "dsrs.node_type": "swarm_job",
        "messaging.system": "nostr",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": str(route.get("relay") or ""),
        "messaging.message.id": str(route["job_id"]),
        "pylon.job_id": str(route["job_id"]),
    }
    if route.get("result_id"):
        attributes["pylon.result_id"] = str(route["result_id"])
    if route.get("provider"):
        attributes["pylon.provider"] = str(route["provider"])
    context = SpanContext(
        trace_id, _id(f"{node.id}:job", 64), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    return ReadableSpan(
        name="publish nip90 job",
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        kind=SpanKind.PRODUCER,
        status=Status(StatusCode.OK if node.status is NodeStatus.OK else StatusCode.ERROR),
        start_time=node.start_ns,
        end_time=max(node.end_ns or node.start_ns, node.start_ns + 1),
        instrumentation_scope=_SCOPE,
    )


def _name(node: TraceNode) -> str:
    operation = _OPERATIONS.get(node.type)
    if operation is not None:
        return f"{operation} {node.name}"
    if node.type is NodeType.PREDICTOR:
        return f"predict {node.name}"
    return node.name if node.type is NodeType.MODULE else f"{node.type.value} {node.name}"


# OpenInference's span kinds, which Phoenix and Arize show spans by (GenAI CLIENT spans it reads as LLM).
_OPENINFERENCE_KINDS = {
    NodeType.PROGRAM: "AGENT",
    NodeType.MODULE: "CHAIN",
    NodeType.PREDICTOR: "CHAIN",
    NodeType.LM: "LLM",
    NodeType.TOOL: "TOOL",
    NodeType.EVALUATE: "EVALUATOR",
}


def _attributes(node: TraceNode, include_content: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {"dsrs.node_type": node.type.value}
    kind = _OPENINFERENCE_KINDS.get(node.type)
    if kind is not None:
        attributes["openinference.span.kind"] = kind
    if node.type is NodeType.PREDICTOR:
        attributes["dsrs.signature_name"] = node.name
    if node.type is NodeType.TOOL:
        attributes["gen_ai.tool.name"] = node.name
    if node.type is NodeType.PROGRAM:
        attributes["gen_ai.operation.name"] = "invoke_agent"
        attributes["gen_ai.agent.name"] = node.name
    if node.type is NodeType.LM:
        route = node.route or {}
        attributes.update(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider_name(node.name, route),
                "gen_ai.request.model": node.name,
                "lm.model": node.name,
            }
        )
        if route.get("model"):
            attributes["gen_ai.response.model"] = str(route["model"])
        for key in ("venue", "backend", "provider", "job_id", "result_id", "relay", "encryption"):
            if route.get(key):
                attributes[f"pylon.{key}"] = str(route[key])
        if node.usage is not None:
            attributes.update(
                {
                    "gen_ai.usage.input_tokens": node.usage.get("prompt_tokens", 0),
                    "gen_ai.usage.output_tokens": node.usage.get("completion_tokens", 0),
                    "lm.tokens": node.usage.get("prompt_tokens", 0) + node.usage.get("completion_tokens", 0),
                }
            )
            cost = node.usage.get("cost_msats")
            if cost is not None:  # only an exact cost: an LM that is not pylon's reports none
                attributes.update(
                    {
                        "pylon.cost_msats": cost,
                        "lm.cost_msats": cost,
                        # The proposed shape (semconv PR #443): an amount, a currency, where it came from.
                        "gen_ai.usage.cost.amount": cost / 100_000_000_000,
                        "gen_ai.usage.cost.currency": "BTC",
                        "gen_ai.usage.cost.source": "provider" if route.get("venue") == "swarm" else "local",
                    }
                )
        if "cache_hit" in node.attributes:
            attributes["pylon.cache_hit"] = bool(node.attributes["cache_hit"])
    if node.type is NodeType.CANDIDATE:
        attributes["dsrs.compiled_id"] = str(node.attributes.get("candidate_id", ""))
        for metric, value in (node.attributes.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[f"dsrs.metric.{metric}"] = float(value)
        if node.attributes.get("compile_call_id") and node.parent_id is None:
            attributes["dsrs.compile_call_id"] = str(node.attributes["compile_call_id"])
    for key, value in (("pylon.inputs", node.inputs), ("pylon.outputs", node.outputs)):
        if isinstance(value, dict) and isinstance(value.get("sha256"), str):
            attributes[f"{key}.sha256"] = value["sha256"]  # what was hashed can be checked, never read
        elif include_content and isinstance(value, str):
            attributes[key] = value
    return attributes


def graph_to_spans(
    graph: TraceGraph, manifest: Any = None, include_content: bool = False, service_name: str = "dspy-pylon"
) -> list[ReadableSpan]:
    """The spans of ``graph``: one per finished node, parent links and timestamps as recorded.

    Each root starts its own trace. With ``manifest`` (a
    :class:`~dspy_pylon.contract.manifest.CompiledModuleManifest`) roots carry its
    ``dsrs.compiled_id`` and optimizer. Content (inputs, outputs) only with ``include_content``
    and when the recorder kept it.
    """
    resource = Resource.create({"service.name": service_name})
    roots: dict[str, str] = {}

    def root_of(node: TraceNode) -> str:
        seen = [node.id]
        current = node
        while current.parent_id is not None and current.parent_id in graph.nodes:
            if current.parent_id in seen:  # a cycle (a hand-made graph): the loop ends here
                break
            if current.parent_id in roots:
                root = roots[current.parent_id]
                break
            current = graph.nodes[current.parent_id]
            seen.append(current.id)
        else:
            root = current.id
        for node_id in seen:
            roots[node_id] = root
        return root

    trace_ids: dict[str, int] = {}
    span_ids: dict[str, int] = {}

    def span_id(node_id: str) -> int:
        value = span_ids.get(node_id)
        if value is None:
            value = span_ids[node_id] = _id(node_id, 64)
        return value

    spans = []
    for node in graph:
        if node.end_ns is None:
            continue  # still running: spans are what ended
        root = root_of(node)
        trace_id = trace_ids.get(root)
        if trace_id is None:
            trace_id = trace_ids[root] = _id(root, 128)
        context = SpanContext(trace_id, span_id(node.id), is_remote=False, trace_flags=_SAMPLED)
        parent = None
        if node.parent_id is not None and node.parent_id in graph.nodes:
            parent = SpanContext(trace_id, span_id(node.parent_id), is_remote=False)
        attributes = _attributes(node, include_content)
        if parent is None and manifest is not None:
            attributes["dsrs.compiled_id"] = manifest.compiled_id
            if manifest.optimizer:
                attributes["dsrs.optimizer"] = manifest.optimizer
        events: list[Event] = []
        status = _OK
        if node.status is NodeStatus.ERROR:
            attributes["error.type"] = node.error_type or "error"
            described = node.error_type if node.error is None else f"{node.error_type}: {node.error}"
            status = Status(StatusCode.ERROR, described)
            exception = {"exception.type": node.error_type or ""}
            if node.error is not None:  # the message only where the recorder kept content
                exception["exception.message"] = node.error
            events.append(Event("exception", exception, timestamp=node.end_ns))
        spans.append(
            ReadableSpan(
                name=_name(node),
                context=context,
                parent=parent,
                resource=resource,
                attributes=attributes,
                events=events,
                kind=_KINDS.get(node.type, SpanKind.INTERNAL),
                status=status,
                start_time=node.start_ns,
                end_time=max(node.end_ns, node.start_ns + 1),  # a zero-length span shows as none
                instrumentation_scope=_SCOPE,
            )
        )
        if node.type is NodeType.LM and (node.route or {}).get("job_id") and not node.attributes.get("cache_hit"):
            spans.append(_job_span(node, trace_id, context, resource))
    return spans


def export(
    graph: TraceGraph,
    exporter: SpanExporter | None = None,
    manifest: Any = None,
    include_content: bool = False,
) -> Sequence[ReadableSpan]:
    """Export ``graph`` as spans to ``exporter`` (any OpenTelemetry SDK exporter), or, by default, over
    OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``, in checked batches; returns the spans. Blocks until
    sent (for a live program, :func:`~dspy_pylon.trace.exporting.instrument` queues instead).

    Raises :class:`~dspy_pylon.errors.ConfigError` when no exporter is given and no endpoint is set,
    :class:`~dspy_pylon.errors.PylonError` when the exporter refuses a batch.
    """
    from dspy_pylon.plain_errors import ConfigError, PylonError

    spans = graph_to_spans(graph, manifest, include_content)
    owned = exporter is None
    if exporter is None:
        if not otlp_endpoint_set():
            raise ConfigError("no exporter given and OTEL_EXPORTER_OTLP_ENDPOINT is not set")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    try:
        # In batches, each checked: a queue in front would drop a large run's spans, silently.
        for first in range(0, len(spans), EXPORT_BATCH):
            batch = spans[first : first + EXPORT_BATCH]
            if exporter.export(batch) is not SpanExportResult.SUCCESS:
                raise PylonError(f"the exporter {type(exporter).__name__} refused {len(batch)} spans")
    finally:
        if owned:
            exporter.shutdown()
    return spans


#: Spans per exporter call.
EXPORT_BATCH = 512


def otlp_endpoint_set() -> bool:
    """Whether the environment names an OTLP endpoint for traces."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class TraceContract:
    """The trace half of the compiler contract: a run's graph as OpenTelemetry spans, and
    their export (:func:`graph_to_spans` and :func:`export` under one name)."""

    graph_to_spans = staticmethod(graph_to_spans)
    export = staticmethod(export)
