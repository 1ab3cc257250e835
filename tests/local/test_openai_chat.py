"""The sans-IO chat codec: request -> JSON body, JSON/SSE -> lm15 objects (no network)."""

from __future__ import annotations

import contextlib
import json

import pytest
from dspy import lm15
from hypothesis import given
from hypothesis import strategies as st

import dspy_pylon as pylon
from dspy_pylon.capabilities import local_capabilities
from dspy_pylon.local import openai_chat
from dspy_pylon.route import Route

ROUTE = Route("local", "llamacpp", "http://127.0.0.1:8080", "tiny.gguf")


def _request(**config: object) -> lm15.Request:
    return lm15.Request(
        model="pylon:local",
        system="Be brief.",
        messages=(lm15.Message.user("Hi"), lm15.Message.assistant("Hello"), lm15.Message.user("Capital of France?")),
        config=lm15.Config(**config),  # type: ignore[arg-type]
    )


def test_payload_carries_messages_and_settings() -> None:
    body = openai_chat.chat_payload(
        _request(max_tokens=7, temperature=0.3, top_p=0.9, stop=("\n\n",), seed=42, presence_penalty=0.5),
        "served-model",
    )
    assert body["model"] == "served-model"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["stop"] == ["\n\n"] and body["seed"] == 42 and body["presence_penalty"] == 0.5
    assert "stream" not in body
    json.dumps(body)  # plain JSON


def test_stream_payload_asks_for_usage() -> None:
    body = openai_chat.chat_payload(_request(), "m", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_unset_settings_are_not_sent() -> None:
    body = openai_chat.chat_payload(_request(), "m")
    assert set(body) == {"model", "messages"}


def test_extensions_cannot_override_owned_keys() -> None:
    body = openai_chat.chat_payload(_request(extensions={"repeat_penalty": 1.1, "model": "evil"}), "m")
    assert body["repeat_penalty"] == 1.1
    assert body["model"] == "m"


def test_image_part_becomes_image_url_block() -> None:
    image = lm15.ImagePart(url="https://example.org/cat.png")
    request = lm15.Request(model="m", messages=(lm15.Message.user([lm15.TextPart("What is this?"), image]),))
    content = openai_chat.chat_payload(request, "m")["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
    ]


TOOL_BODY = {
    "model": "m",
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "parallel_tool_calls": False,
}


def test_tools_and_tool_messages_round_trip_in_the_openai_wire_form() -> None:
    # DSPy's own ingest turns an OpenAI body into lm15's Request; pylon must write it back as it was.
    request = lm15.request_from_openai_chat(TOOL_BODY)
    body = openai_chat.chat_payload(request, "m")
    for key in ("messages", "tools", "tool_choice", "parallel_tool_calls"):
        assert body[key] == TOOL_BODY[key], key


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_modes(choice: str) -> None:
    parallel = {} if choice == "none" else {"parallel_tool_calls": True}
    body_in = {k: v for k, v in TOOL_BODY.items() if k != "parallel_tool_calls"}
    request = lm15.request_from_openai_chat({**body_in, "tool_choice": choice, **parallel})
    body = openai_chat.chat_payload(request, "m")
    assert body["tool_choice"] == choice
    assert body.get("parallel_tool_calls") == parallel.get("parallel_tool_calls")


def test_tools_are_refused_when_the_backend_cannot_render_them() -> None:
    request = lm15.request_from_openai_chat(TOOL_BODY)
    no_tools = local_capabilities("llamacpp", template_tools=False)
    with pytest.raises(pylon.UnsupportedRequest, match="tool"):
        openai_chat.chat_payload(request, "m", capabilities=no_tools)
    with pytest.raises(pylon.UnsupportedRequest, match="tool"):
        openai_chat.chat_payload(request, "m", capabilities=local_capabilities("apple-fm"))


def test_response_format_is_sent_in_the_openai_wire_form() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    wire = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    request = lm15.request_from_openai_chat(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": wire}
    )
    # lm15 holds its own shape; llama.cpp silently ignores that one.
    assert request.config.response_format == {"type": "json_schema", "schema": schema, "name": "answer", "strict": True}
    assert openai_chat.chat_payload(request, "m")["response_format"] == wire
    json_mode = lm15.request_from_openai_chat(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    )
    assert openai_chat.chat_payload(json_mode, "m")["response_format"] == {"type": "json_object"}
    with pytest.raises(pylon.UnsupportedRequest, match="response_format"):
        openai_chat.chat_payload(request, "m", capabilities=local_capabilities("apple-fm"))


def test_streamed_tool_calls_and_cached_tokens_are_read() -> None:
    state = openai_chat.StreamState()
    call = {"index": 0, "id": "c1", "function": {"name": "weather", "arguments": '{"city"'}}
    events = openai_chat.chunk_events(json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}), state, ROUTE)
    delta = events[-1].delta
    assert isinstance(delta, lm15.ToolCallDelta)
    assert (delta.id, delta.name, delta.input, delta.part_index) == ("c1", "weather", '{"city"', 0)
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 2,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 7},
    }
    openai_chat.chunk_events(
        json.dumps({"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "usage": usage}), state, ROUTE
    )
    end = openai_chat.end_event(state, ROUTE, 1.0)
    assert end.finish_reason == "tool_call"
    assert end.usage.cache_read_tokens == 7


def test_response_is_read_with_route_and_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "model": "tiny.gguf",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        "timings": {"predicted_ms": 1.0},
    }
    response = openai_chat.parse_chat_response(body, ROUTE, 4.25)
    assert response.text == "Paris."
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 3)
    assert response.provider_data == {"pylon": {**ROUTE.as_dict(), "cost_msats": 0, "latency_ms": 4.25}}


@pytest.mark.parametrize("body", [[], "text", None, 3])
def test_non_object_body_is_a_server_error(body: object) -> None:
    with pytest.raises(pylon.BackendServerError, match="non-object"):
        openai_chat.parse_chat_response(body, ROUTE, 1.0)


def test_error_envelope_raises_typed_error() -> None:
    with pytest.raises(lm15.LM15Error):
        openai_chat.parse_chat_response({"error": {"message": "boom", "type": "server_error"}}, ROUTE, 1.0)


SSE = [
    'data: {"id":"c1","model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}',
    "",
    'data: {"id":"c1","model":"tiny","choices":[{"index":0,"delta":{"content":"Par"}}]}',
    'data: {"id":"c1","model":"tiny","choices":[{"index":0,"delta":{"content":"is"}}]}',
    'data: {"id":"c1","model":"tiny","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}',
    'data: {"id":"c1","model":"tiny","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}',
    "data: [DONE]",
    'data: {"ignored": "after done"}',
]


def test_stream_chunks_become_lm15_events() -> None:
    state = openai_chat.StreamState()
    events = [e for data in openai_chat.sse_data(SSE) for e in openai_chat.chunk_events(data, state, ROUTE)]
    events.append(openai_chat.end_event(state, ROUTE, 2.0))
    assert isinstance(events[0], lm15.StreamStartEvent) and events[0].id == "c1"
    text = "".join(e.delta.text for e in events if isinstance(e, lm15.StreamDeltaEvent))
    assert text == "Paris"
    end = events[-1]
    assert isinstance(end, lm15.StreamEndEvent)
    assert end.finish_reason == "length"
    assert end.usage is not None and (end.usage.input_tokens, end.usage.output_tokens) == (9, 2)
    assert end.provider_data is not None and end.provider_data["pylon"]["backend"] == "llamacpp"


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", '{"error": {"message": "slot died"}}'])
def test_bad_stream_chunk_is_a_server_error(data: str) -> None:
    with pytest.raises(pylon.BackendServerError):
        openai_chat.chunk_events(data, openai_chat.StreamState(), ROUTE)


@given(st.text(max_size=200))
def test_stream_chunk_parser_is_total(data: str) -> None:
    with contextlib.suppress(pylon.BackendServerError):
        openai_chat.chunk_events(data, openai_chat.StreamState(), ROUTE)


def test_backend_options_and_reasoning_effort_are_sent_or_refused() -> None:
    request = lm15.request_from_openai_chat(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}
    )
    body = openai_chat.chat_payload(request, "m", options={"repeat_penalty": 1.1, "extra_body": {"n_probs": 2}})
    assert (body["repeat_penalty"], body["n_probs"], body["reasoning_effort"]) == (1.1, 2, "low")
    with pytest.raises(pylon.UnsupportedRequest, match="cache_prompt"):  # llama.cpp's, not Ollama's
        openai_chat.chat_payload(
            _request(), "m", capabilities=local_capabilities("ollama"), options={"cache_prompt": 1}
        )
    with pytest.raises(pylon.UnsupportedRequest, match="num_ctx"):  # Ollama's, not llama.cpp's
        openai_chat.chat_payload(_request(), "m", options={"num_ctx": 4096})
    with pytest.raises(pylon.UnsupportedRequest, match="extra_body cannot override messages"):
        openai_chat.chat_payload(_request(), "m", options={"extra_body": {"messages": []}})
    with pytest.raises(pylon.UnsupportedRequest, match="reasoning_effort"):
        openai_chat.chat_payload(request, "m", capabilities=local_capabilities("apple-fm"))
