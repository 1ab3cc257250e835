"""Sans-IO codec for the OpenAI-compatible ``/v1/chat/completions`` dialect.

Ollama, llama.cpp's server and the Apple FM bridge all speak it. This module turns a
``dspy.lm15.Request`` into a JSON body and a JSON (or SSE) answer back into lm15
objects; it never touches a socket. Response bodies are read with lm15's own public
``response_from_openai_chat`` (DSPy's reader for this dialect) so finish reasons,
usage and reasoning text are interpreted exactly as DSPy does for other servers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dspy import lm15

from dspy_pylon.errors import BackendServerError, UnsupportedRequest
from dspy_pylon.route import Route

# Keys DSPy or lm15 never legitimately place in extensions for us; an extension must
# not override what this codec owns.
_OWNED_KEYS = frozenset({"model", "messages", "stream", "stream_options"})


def _part_to_chat(part: Any, where: str) -> dict[str, Any]:
    if isinstance(part, lm15.TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, lm15.ImagePart):
        if part.url:
            url = part.url
        elif part.data:
            url = f"data:{part.media_type};base64,{part.data}"
        else:
            raise UnsupportedRequest(f"{where}: an image part needs a url or inline data", feature=where)
        block: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
        return block
    raise UnsupportedRequest(
        f"{where}: {type(part).__name__} is not supported by the local OpenAI-compatible backends "
        "(text and images are)",
        feature=where,
    )


def _message_to_chat(message: lm15.Message, index: int) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    if role == "tool":
        where = f"messages[{index}]"
        raise UnsupportedRequest(f"{where}: tool messages are not supported yet", feature=where)
    text = message.text
    if text is not None:
        return {"role": role, "content": text}
    content = [_part_to_chat(p, f"messages[{index}].parts[{i}]") for i, p in enumerate(message.parts)]
    return {"role": role, "content": content}


def chat_payload(request: lm15.Request, model: str, *, stream: bool = False) -> dict[str, Any]:
    """The JSON body for ``POST /v1/chat/completions`` carrying ``request`` to ``model``."""
    if request.tools:
        raise UnsupportedRequest("native tool calling is not supported by pylon's local venue yet", feature="tools")
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend(_message_to_chat(m, i) for i, m in enumerate(request.messages))
    body: dict[str, Any] = {"model": model, "messages": messages}
    config = request.config
    for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty"):
        value = getattr(config, name)
        if value is not None:
            body[name] = value
    if config.stop:
        body["stop"] = list(config.stop)
    if config.response_format is not None:
        body["response_format"] = dict(config.response_format)
    if config.logprobs is not None:
        body["logprobs"] = True
        if config.logprobs:
            body["top_logprobs"] = config.logprobs
    for key, value in (config.extensions or {}).items():
        if key not in _OWNED_KEYS:
            body[key] = value
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def route_data(route: Route, latency_ms: float) -> dict[str, Any]:
    """The ``provider_data["pylon"]`` record: where the call went and what it cost."""
    return {**route.as_dict(), "cost_msats": 0, "latency_ms": round(latency_ms, 3)}


def parse_chat_response(body: Any, route: Route, latency_ms: float) -> lm15.Response:
    """Read a chat-completions JSON body into an ``lm15.Response`` carrying the route."""
    if not isinstance(body, Mapping):
        raise BackendServerError(f"{route.backend} at {route.base_url} answered with a non-object body")
    try:
        response = lm15.response_from_openai_chat(body, model=route.model)
    except lm15.LM15Error:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise BackendServerError(f"{route.backend} at {route.base_url} sent an unreadable answer: {exc}") from exc
    # lm15 keeps the whole raw body in provider_data; DSPy stores provider_data in
    # history and the cache, so keep only pylon's own record.
    return replace(response, provider_data={"pylon": route_data(route, latency_ms)})


# ─── Streaming ──────────────────────────────────────────────────────────────────────


@dataclass
class StreamState:
    """What a chat stream has said so far: enough to build the final end event."""

    id: str | None = None
    model: str | None = None
    finish_reason: str | None = None
    usage: lm15.Usage | None = None
    started: bool = False


_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_call", "content_filter": "content_filter"}


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-event stream, ending at ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data


def chunk_events(data: str, state: StreamState, route: Route) -> list[lm15.StreamEvent]:
    """lm15 stream events for one SSE ``data:`` payload of a chat-completions stream."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BackendServerError(f"{route.backend} at {route.base_url} sent a malformed stream chunk") from exc
    if not isinstance(chunk, dict):
        raise BackendServerError(f"{route.backend} at {route.base_url} sent a malformed stream chunk")
    if "error" in chunk:
        raise BackendServerError(f"{route.backend} at {route.base_url} failed mid-stream: {chunk['error']}")
    events: list[lm15.StreamEvent] = []
    if not state.started:
        state.started = True
        state.id = chunk.get("id") or None
        state.model = chunk.get("model") or route.model
        events.append(lm15.StreamStartEvent(id=state.id, model=state.model))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        state.usage = lm15.Usage(
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
        )
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            events.append(lm15.StreamDeltaEvent(lm15.TextDelta(text)))
        reasoning = delta.get("reasoning_content")
        if reasoning:
            events.append(lm15.StreamDeltaEvent(lm15.ThinkingDelta(reasoning)))
        if choice.get("finish_reason"):
            state.finish_reason = _FINISH.get(choice["finish_reason"], "stop")
    return events


def end_event(state: StreamState, route: Route, latency_ms: float) -> lm15.StreamEndEvent:
    """The final event of a stream, carrying usage and the route."""
    return lm15.StreamEndEvent(
        finish_reason=state.finish_reason or "stop",
        usage=state.usage or lm15.Usage(),
        provider_data={"pylon": route_data(route, latency_ms)},
    )
