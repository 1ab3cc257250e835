"""The codec for Ollama's native /api/chat (pure): bodies built, answers read, bad answers typed."""

from __future__ import annotations

from typing import Any

import pytest
from dspy import lm15

import dspy_pylon as pylon
from dspy_pylon.capabilities import local_capabilities
from dspy_pylon.local import ollama_native, openai_chat
from dspy_pylon.local.openai_chat import StreamState
from dspy_pylon.route import Route

ROUTE = Route("local", "ollama", "http://127.0.0.1:11434", "llama3.2:latest")
CAPS = local_capabilities("ollama")


def _request(*messages: lm15.Message, **config: Any) -> lm15.Request:
    return lm15.Request(model="m", messages=messages or (lm15.Message.user("x"),), config=lm15.Config(**config))


def test_images_travel_base64_and_reasoning_effort_as_think() -> None:
    image = lm15.ImagePart(data="aGVsbG8=", media_type="image/png")
    request = _request(
        lm15.Message(role="user", parts=(lm15.TextPart("what is it?"), image)), reasoning=lm15.Reasoning(effort="low")
    )
    body = ollama_native.native_payload(request, "llava", capabilities=CAPS, options={"num_ctx": 2048})
    assert body["messages"] == [{"role": "user", "content": "what is it?", "images": ["aGVsbG8="]}]
    assert body["think"] == "low" and body["options"] == {"num_ctx": 2048}
    off = ollama_native.native_payload(_request(reasoning=lm15.Reasoning(effort="off")), "m", capabilities=CAPS)
    assert off["think"] is False


def test_image_urls_and_logprobs_are_refused() -> None:
    url = lm15.Message(role="user", parts=(lm15.ImagePart(url="https://example.com/cat.png"),))
    with pytest.raises(pylon.UnsupportedRequest, match="inline"):
        ollama_native.native_payload(_request(url), "m", capabilities=CAPS)
    with pytest.raises(pylon.UnsupportedRequest, match="logprobs"):
        ollama_native.native_payload(_request(logprobs=2), "m", capabilities=CAPS)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"message": "hi"},
        {"message": {"content": 3}},
        {"message": {"content": "", "tool_calls": [{"function": {"arguments": {}}}]}},
        {"message": {"content": "", "tool_calls": [{"function": {"name": "w", "arguments": "{"}}]}},
        {"message": {"content": "", "tool_calls": [{"function": {"name": "w", "arguments": [1]}}]}},
    ],
)
def test_unreadable_answers_are_backend_server_errors(body: Any) -> None:
    with pytest.raises(pylon.BackendServerError):
        ollama_native.parse_native_response(body, ROUTE, 1.0)


def test_answer_with_thinking_length_and_no_call_ids() -> None:
    body = {
        "message": {"content": "", "thinking": "hmm", "tool_calls": [{"function": {"name": "w", "arguments": {}}}]},
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 4,
    }
    response = ollama_native.parse_native_response(body, ROUTE, 1.0)
    assert response.finish_reason == "tool_call" and response.usage.total_tokens == 7
    assert [type(p) for p in response.message.parts] == [lm15.ThinkingPart, lm15.ToolCallPart]
    first_id = response.message.parts[1].id
    assert first_id.startswith("call_")
    again = ollama_native.parse_native_response(body, ROUTE, 1.0).message.parts[1].id
    assert again != first_id  # made-up ids never repeat across turns
    cut = ollama_native.parse_native_response({"message": {"content": "ab"}, "done_reason": "length"}, ROUTE, 1.0)
    assert cut.finish_reason == "length" and cut.text == "ab"


def test_stream_lines() -> None:
    state = StreamState()
    first = ollama_native.native_chunk_events(
        '{"model": "x", "message": {"content": "a"}, "done": false}', state, ROUTE
    )
    assert isinstance(first[0], lm15.StreamStartEvent) and first[1].delta.text == "a"  # type: ignore[attr-defined]
    calls = '{"message": {"content": "", "tool_calls": [{"function": {"name": "w", "arguments": {"k": 1}}}]}}'
    [event] = ollama_native.native_chunk_events(calls, state, ROUTE)
    assert event.delta.name == "w" and event.delta.part_index == 0  # type: ignore[attr-defined]
    ollama_native.native_chunk_events('{"done": true, "done_reason": "stop", "eval_count": 2}', state, ROUTE)
    assert state.finish_reason == "tool_call" and state.usage is not None and state.usage.output_tokens == 2
    for bad in ("not json", "[1]", '{"error": "model crashed"}'):
        with pytest.raises(pylon.BackendServerError):
            ollama_native.native_chunk_events(bad, StreamState(), ROUTE)
    assert list(ollama_native.ndjson(["", '{"a": 1}', "  "])) == ['{"a": 1}']


def test_keys_without_a_native_spelling_are_refused() -> None:
    request = _request(extensions={"user": "someone"})
    assert "user" in openai_chat.chat_payload(request, "m")
    with pytest.raises(pylon.UnsupportedRequest, match="user"):
        ollama_native.native_payload(request, "m", capabilities=CAPS)
