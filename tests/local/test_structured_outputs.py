"""Structured outputs and native tool calls on a real llama.cpp server (the tiny random-weight model).

llama.cpp enforces a ``response_format`` JSON schema by grammar, so even noise comes back
as JSON that validates: these are end-to-end checks that DSPy's JSONAdapter sends the
schema through pylon in the wire form llama.cpp reads, and that typed outputs parse.
"""

from __future__ import annotations

import json
import pathlib
from typing import Annotated, Literal

import dspy
import httpx
import pydantic
import pytest
from dspy import lm15

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama


class Person(pydantic.BaseModel):
    name: Annotated[str, pydantic.Field(max_length=6)]
    age: Annotated[int, pydantic.Field(ge=0, le=120)]


class Typed(dspy.Signature):
    """Answer with typed fields."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    ok: bool = dspy.OutputField()
    color: Literal["red", "blue"] = dspy.OutputField()
    ids: Annotated[list[Annotated[int, pydantic.Field(ge=0, le=9)]], pydantic.Field(max_length=3)] = dspy.OutputField()
    person: Person = dspy.OutputField()


def _lm(max_tokens: int = 600) -> pylon.PylonLM:
    return pylon.LM("pylon:local:llamacpp", temperature=0.0, max_tokens=max_tokens, seed=7, cache=False)


def test_local_llamacpp_declares_what_it_honours(llamacpp_url: str) -> None:
    lm = _lm()
    assert lm.supports_response_schema is True
    assert lm.supports_function_calling is True  # the tiny model's template renders tools
    assert {"response_format", "tools", "tool_choice", "top_k"} <= lm.supported_params


def test_json_adapter_typed_outputs_validate(llamacpp_url: str) -> None:
    lm = _lm()
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        result = dspy.Predict(Typed)(question="anything")
    assert isinstance(result.count, int)
    assert isinstance(result.ok, bool)
    assert result.color in ("red", "blue")
    assert isinstance(result.ids, list) and all(isinstance(i, int) for i in result.ids)
    assert isinstance(result.person, Person) and 0 <= result.person.age <= 120  # nested constraints held
    # DSPy sent a schema (not JSON mode), and noise came back valid: llama.cpp enforced it,
    # which it does only for the OpenAI wire form (lm15's own shape is silently ignored).
    sent = lm.history[-1]["kwargs"]["response_format"]
    assert isinstance(sent, type) and issubclass(sent, pydantic.BaseModel)


def test_explicit_response_format_is_enforced(llamacpp_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 50}, "c": {"enum": ["a", "b"]}},
        "required": ["n", "c"],
        "additionalProperties": False,
    }
    lm = _lm()
    text = lm("Give n and c.", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})[
        0
    ]
    data = json.loads(text)
    assert set(data) == {"n", "c"} and 0 <= data["n"] <= 50 and data["c"] in ("a", "b")
    data = json.loads(lm("Any JSON object.", response_format={"type": "json_object"})[0])
    assert isinstance(data, dict)


def test_tools_reach_llamacpp_and_tool_history_is_accepted(llamacpp_url: str) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather by city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                "required": ["city"],
            },
        },
    }
    lm = _lm(max_tokens=8)
    plain = lm("What is the weather in Paris?")
    assert plain
    lm("What is the weather in Paris?", tools=[weather], tool_choice="auto")
    with_tools, without = lm.history[-1]["usage"]["prompt_tokens"], lm.history[-2]["usage"]["prompt_tokens"]
    # The template rendered the tool into the prompt: llama.cpp did not drop it.
    assert with_tools > without + 50
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
    ]
    assert lm(messages=history, tools=[weather])


def test_tools_are_refused_when_the_template_cannot_render_them(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A llama.cpp whose template has no tools would drop them silently: pylon refuses instead."""
    from dspy_pylon.testing import tiny_gguf

    path = tiny_gguf.write_tiny_gguf(tmp_path / "bare.gguf", tiny_gguf.BARE_CHATML_TEMPLATE)
    with EmbeddedLlama(path, n_ctx=4096, parallel=1) as server:
        assert httpx.get(f"{server.url}/props").json()["chat_template_caps"]["supports_tools"] is False
        monkeypatch.setenv("LLAMACPP_URL", server.url)
        lm = pylon.LM("pylon:local:llamacpp", cache=False, max_tokens=4, num_retries=0)
        assert lm.supports_function_calling is False
        request = lm15.Request(
            model=lm.model,
            messages=(lm15.Message.user("x"),),
            tools=(lm15.FunctionTool(name="f", parameters={"type": "object"}),),
        )
        with pytest.raises(pylon.UnsupportedRequest, match="tool"):
            lm.runtime.complete(request)


def weather(city: Literal["Paris", "Rome"]) -> str:
    """Weather by city."""
    return f"sunny in {city}"


class AskWithTools(dspy.Signature):
    """Use the tools."""

    question: str = dspy.InputField()
    tools: list[dspy.Tool] = dspy.InputField()
    calls: dspy.ToolCalls = dspy.OutputField()


def test_native_tool_calls_parse_into_dspy_toolcalls(
    tools_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tool_choice="required" llama.cpp's grammar forces a well-formed call (enum
    arguments, so no free string runs on): DSPy gets real ToolCalls it can execute."""
    monkeypatch.setenv("LLAMACPP_URL", tools_server.url)
    lm = pylon.LM("pylon:local:llamacpp", temperature=0.0, max_tokens=400, seed=1, cache=False, tool_choice="required")
    assert lm.supports_function_calling is True
    tool = dspy.Tool(weather)
    [output] = lm("weather?", tools=[tool.format_as_litellm_function_call()], parallel_tool_calls=False)
    assert isinstance(output, dict)
    [call] = output["tool_calls"]
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"])["city"] in ("Paris", "Rome")
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_native_function_calling=True)):
        result = dspy.Predict(AskWithTools)(question="Weather in Paris?", tools=[tool])
    assert isinstance(result.calls, dspy.ToolCalls) and result.calls.tool_calls
    assert {c.name for c in result.calls.tool_calls} == {"weather"}
    assert result.calls.tool_calls[0].execute(functions=[tool]).startswith("sunny in ")
    # DSPy sent the tools natively, not as text in the prompt.
    assert lm.history[-1]["kwargs"]["tools"][0]["function"]["name"] == "weather"


def test_streamed_tool_calls_arrive_whole(tools_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMACPP_URL", tools_server.url)
    lm = pylon.LM("pylon:local:llamacpp", temperature=0.0, max_tokens=400, seed=1, cache=False)
    tool = dspy.Tool(weather).format_as_litellm_function_call()
    request = lm15.Request(
        model=lm.model,
        messages=(lm15.Message.user("weather?"),),
        tools=(lm15.FunctionTool(name="weather", parameters=tool["function"]["parameters"]),),
        config=lm15.Config(
            max_tokens=400, temperature=0.0, seed=1, tool_choice=lm15.ToolChoice(mode="required", parallel=False)
        ),
    )
    events = list(lm.runtime.stream(request))
    deltas = [
        e.delta for e in events if isinstance(e, lm15.StreamDeltaEvent) and isinstance(e.delta, lm15.ToolCallDelta)
    ]
    assert deltas and deltas[0].name == "weather"
    arguments = json.loads("".join(d.input for d in deltas))
    assert arguments["city"] in ("Paris", "Rome")
