"""Sans-IO codec for Ollama's native ``/api/chat`` (used for calls that carry Ollama options).

Ollama's OpenAI-compatible ``/v1`` API ignores its own option names (``num_ctx``,
``repeat_penalty``, ``mirostat``...), so a call carrying any is sent to ``/api/chat``
instead, as DSPy's own client does through LiteLLM's ``ollama_chat/`` provider: sampling
settings and options in ``options``, a JSON schema in ``format`` (``"json"`` for JSON mode),
tool-call arguments as objects, ``think`` for ``reasoning_effort``. The body starts from the
OpenAI-chat body (so both paths refuse the same things) and is reshaped; answers are read
back into lm15 objects. No socket here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dspy import lm15

from dspy_pylon.capabilities import Capabilities
from dspy_pylon.errors import BackendServerError, UnsupportedRequest
from dspy_pylon.local import openai_chat
from dspy_pylon.route import Route

NATIVE_PATH = "/api/chat"

# OpenAI-chat body keys that are Ollama sampling options on the native API.
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "num_predict",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_TOP_LEVEL_OPTIONS = frozenset({"keep_alive"})
# What the OpenAI-chat body may hold that is read below; anything else has no native spelling.
_READ = frozenset(
    {"model", "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort"}
) | frozenset(_SAMPLING)


def _native_message(message: Mapping[str, Any], index: int, names: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message["role"]}
    if message["role"] == "tool" and message.get("tool_call_id") in names:
        # The native API matches a result to its call by the tool's name.
        out["tool_name"] = names[message["tool_call_id"]]
    content = message.get("content")
    if isinstance(content, list):  # text and images: the native API takes base64 images apart
        texts, images = [], []
        for part in content:
            if part["type"] == "text":
                texts.append(part["text"])
                continue
            url = part["image_url"]["url"]
            if not url.startswith("data:") or ";base64," not in url:
                raise UnsupportedRequest(
                    f"messages[{index}]: Ollama's native API takes inline (base64) images only, not URLs",
                    feature="images",
                )
            images.append(url.split(";base64,", 1)[1])
        out["content"] = "".join(texts)
        out["images"] = images
    else:
        out["content"] = content or ""
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"function": {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}}
            for c in message["tool_calls"]
        ]
    return out


def native_payload(
    request: lm15.Request,
    model: str,
    *,
    stream: bool = False,
    capabilities: Capabilities | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body for ``POST /api/chat`` carrying ``request`` to ``model`` with ``options``."""
    chat = openai_chat.chat_payload(request, model, capabilities=capabilities)
    for key in sorted(set(chat) - _READ):
        raise UnsupportedRequest(f"{key} is not read by Ollama's native API (used for Ollama options)", feature=key)
    choice = chat.pop("tool_choice", None)
    if choice not in (None, "auto") or "parallel_tool_calls" in chat:
        raise UnsupportedRequest(
            "Ollama's native API (used for calls with Ollama options) has no tool_choice or parallel_tool_calls",
            feature="tool_choice",
        )
    names = {c["id"]: c["function"]["name"] for m in chat["messages"] for c in m.get("tool_calls") or ()}
    body: dict[str, Any] = {
        "model": model,
        "messages": [_native_message(m, i, names) for i, m in enumerate(chat["messages"])],
        "stream": stream,
    }
    sampling = {name: chat[key] for key, name in _SAMPLING.items() if key in chat}
    for key, value in (options or {}).items():
        if capabilities is not None and key not in capabilities.options:
            raise UnsupportedRequest(f"{key}={value!r} is not an option Ollama reads; it would be ignored", feature=key)
        if key in _TOP_LEVEL_OPTIONS:
            body[key] = value
        else:
            sampling[key] = value
    if sampling:
        body["options"] = sampling
    if "tools" in chat:
        body["tools"] = chat["tools"]
    response_format = chat.get("response_format")
    if response_format is not None:
        body["format"] = (
            "json" if response_format["type"] == "json_object" else response_format["json_schema"]["schema"]
        )
    if "reasoning_effort" in chat:
        effort = chat["reasoning_effort"]
        body["think"] = False if effort == "none" else effort
    return body


def _tool_calls(message: Mapping[str, Any], route: Route) -> list[lm15.ToolCallPart]:
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BackendServerError(f"ollama at {route.base_url} sent an unreadable tool call")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                raise BackendServerError(f"ollama at {route.base_url} sent tool arguments that are not JSON") from None
        if not isinstance(arguments, dict):
            raise BackendServerError(f"ollama at {route.base_url} sent tool arguments that are not an object")
        # Older Ollama versions give calls no id: one is made, unique across turns (DSPy pairs
        # each result with its call by id), while results go back to Ollama by tool name.
        call_id = str(call.get("id") or f"call_{secrets.token_hex(6)}")
        calls.append(lm15.ToolCallPart(id=call_id, name=function["name"], input=arguments))
    return calls


def _usage(body: Mapping[str, Any]) -> lm15.Usage:
    prompt, completion = body.get("prompt_eval_count"), body.get("eval_count")
    total = prompt + completion if isinstance(prompt, int) and isinstance(completion, int) else None
    return lm15.Usage(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def _finish(body: Mapping[str, Any], has_calls: bool) -> str:
    if has_calls:
        return "tool_call"
    return "length" if body.get("done_reason") == "length" else "stop"


def parse_native_response(body: Any, route: Route, latency_ms: float) -> lm15.Response:
    """Read an ``/api/chat`` answer into an ``lm15.Response`` carrying the route."""
    message = body.get("message") if isinstance(body, Mapping) else None
    if not isinstance(message, Mapping) or not isinstance(message.get("content", ""), str):
        raise BackendServerError(f"ollama at {route.base_url} sent an unreadable answer")
    parts: list[Any] = []
    if message.get("thinking"):
        parts.append(lm15.ThinkingPart(str(message["thinking"])))
    calls = _tool_calls(message, route)
    if message.get("content") or not calls:
        parts.append(lm15.TextPart(message.get("content") or ""))
    parts += calls
    return lm15.Response(
        id=None,
        model=str(body.get("model") or route.model),
        message=lm15.Message(role="assistant", parts=tuple(parts)),
        finish_reason=_finish(body, bool(calls)),
        usage=_usage(body),
        provider_data={"pylon": openai_chat.route_data(route, latency_ms)},
    )


def ndjson(lines: Iterable[str]) -> Iterator[str]:
    """The non-empty lines of a newline-delimited JSON stream."""
    for line in lines:
        if line.strip():
            yield line


def native_chunk_events(line: str, state: openai_chat.StreamState, route: Route) -> list[lm15.StreamEvent]:
    """lm15 stream events for one line of an ``/api/chat`` stream."""
    try:
        chunk = json.loads(line)
    except (ValueError, RecursionError):
        raise BackendServerError(f"ollama at {route.base_url} sent a malformed stream line") from None
    if not isinstance(chunk, dict):
        raise BackendServerError(f"ollama at {route.base_url} sent a malformed stream line")
    if "error" in chunk:
        raise BackendServerError(f"ollama at {route.base_url} failed mid-stream: {chunk['error']}")
    events: list[lm15.StreamEvent] = []
    if not state.started:
        state.started = True
        state.model = str(chunk.get("model") or route.model)
        events.append(lm15.StreamStartEvent(id=None, model=state.model))
    raw_message = chunk.get("message")
    message: Mapping[str, Any] = raw_message if isinstance(raw_message, dict) else {}
    if message.get("thinking"):
        events.append(lm15.StreamDeltaEvent(lm15.ThinkingDelta(str(message["thinking"]))))
    if message.get("content"):
        events.append(lm15.StreamDeltaEvent(lm15.TextDelta(str(message["content"]))))
    calls = _tool_calls(message, route)
    for call in calls:
        index = state.tool_calls
        state.tool_calls += 1
        events.append(
            lm15.StreamDeltaEvent(
                lm15.ToolCallDelta(input=json.dumps(call.input), part_index=index, id=call.id, name=call.name)
            )
        )
    if chunk.get("done"):
        state.finish_reason = _finish(chunk, state.tool_calls > 0)
        state.usage = _usage(chunk)
    return events
