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
    import gguf  # a copy of the tiny model whose template is bare ChatML (no tools)

    from dspy_pylon.testing import tiny_gguf

    class BareChatml(gguf.GGUFWriter):  # type: ignore[misc]
        def add_chat_template(self, value: object) -> None:
            super().add_chat_template(
                "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
            )

    path = tmp_path / "bare.gguf"
    original = gguf.GGUFWriter
    gguf.GGUFWriter = BareChatml
    try:
        tiny_gguf.write_tiny_gguf(path)
    finally:
        gguf.GGUFWriter = original
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
