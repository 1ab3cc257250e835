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

from dspy_pylon import carrier
from dspy_pylon.capabilities import Capabilities, local_capabilities, unmet
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


def _arguments(call: lm15.ToolCallPart) -> str:
    # lm15 keeps the arguments parsed; the wire carries them as a JSON string.
    return json.dumps(call.input, ensure_ascii=False, separators=(",", ":"))


def _tool_result_text(part: lm15.ToolResultPart, where: str) -> str:
    texts = []
    for index, item in enumerate(part.content):
        if not isinstance(item, lm15.TextPart):
            raise UnsupportedRequest(
                f"{where}.content[{index}]: a tool result can carry text only here, not {type(item).__name__}",
                feature=where,
            )
        texts.append(item.text)
    return "".join(texts)


def messages_to_chat(message: lm15.Message, index: int) -> list[dict[str, Any]]:
    """The OpenAI chat messages for one lm15 message (a tool message may hold several results)."""
    where = f"messages[{index}]"
    role = "system" if message.role == "developer" else message.role
    if role == "tool":
        results = [p for p in message.parts if isinstance(p, lm15.ToolResultPart)]
        if len(results) != len(message.parts) or not results:
            raise UnsupportedRequest(f"{where}: a tool message must hold tool results only", feature=where)
        return [
            {"role": "tool", "tool_call_id": r.id, "content": _tool_result_text(r, f"{where}.parts[{i}]")}
            for i, r in enumerate(results)
        ]
    calls = [p for p in message.parts if isinstance(p, lm15.ToolCallPart)]
    if calls:
        if role != "assistant":
            raise UnsupportedRequest(f"{where}: only assistant messages can hold tool calls", feature=where)
        # Reasoning of earlier turns is not sent back: the OpenAI chat wire has no place for it.
        texts = [p.text for p in message.parts if isinstance(p, lm15.TextPart)]
        return [
            {
                "role": "assistant",
                "content": "".join(texts) or None,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c)}}
                    for c in calls
                ],
            }
        ]
    text = message.text
    if text is not None:
        return [{"role": role, "content": text}]
    parts = [p for p in message.parts if not (role == "assistant" and isinstance(p, lm15.ThinkingPart))]
    content = [_part_to_chat(p, f"{where}.parts[{i}]") for i, p in enumerate(parts)]
    return [{"role": role, "content": content}]


def tools_to_chat(tools: tuple[Any, ...]) -> list[dict[str, Any]]:
    """lm15 function tools in the OpenAI chat ``tools`` form (hosted tools are refused)."""
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, lm15.FunctionTool):
            raise UnsupportedRequest(
                f"tools[{index}]: {type(tool).__name__} is a provider-hosted tool; local backends run functions only",
                feature="tools",
            )
        function: dict[str, Any] = {"name": tool.name, "parameters": dict(tool.parameters or {"type": "object"})}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def tool_choice_to_chat(choice: lm15.ToolChoice, body: dict[str, Any]) -> None:
    """Set ``tool_choice`` (and ``parallel_tool_calls``) in ``body`` the OpenAI chat way."""
    if choice.parallel is not None:
        body["parallel_tool_calls"] = choice.parallel
    allowed = tuple(choice.allowed or ())
    if choice.mode == "required" and len(allowed) == 1:
        body["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
        return
    if allowed:
        raise UnsupportedRequest(
            "tool_choice: a subset of allowed tools has no OpenAI chat spelling; send only those tools instead",
            feature="tool_choice",
        )
    body["tool_choice"] = choice.mode


def response_format_to_chat(response_format: dict[str, Any]) -> dict[str, Any]:
    """lm15's canonical ``response_format`` in the OpenAI chat wire form.

    lm15 holds ``{"type": "json_schema", "schema": ..., "name"?, "strict"?}``; servers
    read ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` and
    silently ignore the canonical shape.
    """
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema" or not isinstance(response_format.get("schema"), dict):
        raise UnsupportedRequest(
            f"response_format of type {kind!r} is not supported (json_schema with a schema, or json_object)",
            feature="response_format",
        )
    inner: dict[str, Any] = {"name": response_format.get("name") or "response", "schema": response_format["schema"]}
    if "strict" in response_format:
        inner["strict"] = bool(response_format["strict"])
    return {"type": "json_schema", "json_schema": inner}


def _options_to_chat(options: Mapping[str, Any], caps: Capabilities, body: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in caps.options:
            raise UnsupportedRequest(
                f"{key}={value!r} is not an option this backend reads; it would be ignored",
                feature=key,
            )
        if key != "extra_body":
            body[key] = value
            continue
        if not isinstance(value, Mapping):
            raise UnsupportedRequest("extra_body must be a JSON object", feature="extra_body")
        owned = sorted(_OWNED_KEYS & set(value))
        if owned:
            raise UnsupportedRequest(f"extra_body cannot override {', '.join(owned)}", feature="extra_body")
        body.update(value)


def chat_payload(
    request: lm15.Request,
    model: str,
    *,
    stream: bool = False,
    capabilities: Capabilities | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body for ``POST /v1/chat/completions`` carrying ``request`` to ``model``.

    ``capabilities`` are the backend's (default: a llama.cpp server with a tool-capable
    template); ``options`` are backend options (``repeat_penalty``...) that lm15's Request
    has no field for. Anything the backend cannot honour raises :class:`UnsupportedRequest`
    rather than being sent to be ignored.
    """
    caps = capabilities or local_capabilities("llamacpp")
    config = request.config
    refusal = unmet(request, caps)
    if refusal is not None:
        raise refusal
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.messages):
        messages.extend(messages_to_chat(message, index))
    body: dict[str, Any] = {"model": model, "messages": messages}
    for name in ("max_tokens", "temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty"):
        value = getattr(config, name)
        if value is not None:
            body[name] = value
    if config.stop:
        body["stop"] = list(config.stop)
    if config.response_format is not None:
        body["response_format"] = response_format_to_chat(dict(config.response_format))
    if request.tools:
        body["tools"] = tools_to_chat(request.tools)
    if config.tool_choice is not None:
        tool_choice_to_chat(config.tool_choice, body)
    if config.reasoning is not None:
        effort = config.reasoning.effort
        body["reasoning_effort"] = "none" if effort == "off" else effort
    if config.logprobs is not None:
        body["logprobs"] = True
        if config.logprobs:
            body["top_logprobs"] = config.logprobs
    own_carrier = carrier.carried(config.extensions)
    for key, value in (config.extensions or {}).items():
        if key not in _OWNED_KEYS and not (own_carrier and key == carrier.CARRIER_KEY):
            body[key] = value
    if options:
        _options_to_chat(options, caps, body)
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
    # Tool calls seen so far (Ollama's native stream sends each whole, numbered here).
    tool_calls: int = 0


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
        state.usage = usage_from_chat(usage)
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            events.append(lm15.StreamDeltaEvent(lm15.TextDelta(text)))
        reasoning = delta.get("reasoning_content")
        if reasoning:
            events.append(lm15.StreamDeltaEvent(lm15.ThinkingDelta(reasoning)))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
            index = call.get("index", 0)
            events.append(
                lm15.StreamDeltaEvent(
                    lm15.ToolCallDelta(
                        input=str(function.get("arguments") or ""),
                        # One part per call, numbered as the server numbers them (lm15's own reader does the same).
                        part_index=index if isinstance(index, int) and index >= 0 else 0,
                        id=str(call.get("id") or "") or None,
                        name=str(function.get("name") or "") or None,
                    )
                )
            )
        if choice.get("finish_reason"):
            state.finish_reason = _FINISH.get(choice["finish_reason"], "stop")
    return events


def usage_from_chat(usage: Mapping[str, Any]) -> lm15.Usage:
    """Token counts of an OpenAI-style ``usage`` object, cached and reasoning tokens included."""
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    return lm15.Usage(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        total_tokens=usage.get("total_tokens"),
        cache_read_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def end_event(state: StreamState, route: Route, latency_ms: float) -> lm15.StreamEndEvent:
    """The final event of a stream, carrying usage and the route."""
    return lm15.StreamEndEvent(
        finish_reason=state.finish_reason or "stop",
        usage=state.usage or lm15.Usage(),
        provider_data={"pylon": route_data(route, latency_ms)},
    )
