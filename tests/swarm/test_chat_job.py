"""How a chat call travels as a NIP-90 job and back (pure, no network; real keys for signing)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import nostr_sdk
import pytest
from dspy import lm15
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent, UnsupportedRequest
from dspy_pylon.nostr.events import RawEvent, from_sdk
from dspy_pylon.nostr.nip90 import JobInput, JobRequest
from dspy_pylon.swarm.chat_job import (
    CHAT_PARAM,
    TRANSCRIPT_FORMAT,
    TRANSCRIPT_V2,
    chat_job,
    parse_job,
    readable,
    request_from_job,
    result_content,
    result_message,
    transcript,
    transcript_format,
)

MESSAGES = (lm15.Message.user("hi"), lm15.Message.assistant("yo"), lm15.Message.user("again"))
CONFIG = lm15.Config(max_tokens=5, temperature=0.5, top_p=0.9, seed=3, stop=("\n",))


def make_request(**changes: Any) -> lm15.Request:
    fields: dict[str, Any] = {"model": "m", "system": "sys", "messages": MESSAGES, "config": CONFIG}
    fields.update(changes)
    return lm15.Request(**fields)


def job_of(request: lm15.Request, **kwargs: Any) -> JobRequest:
    kwargs.setdefault("model", "m")
    kwargs.setdefault("bid_msats", 1000)
    kwargs.setdefault("relays", ("wss://relay.example",))
    return chat_job(request, **kwargs)


def chat_input(data: Any) -> JobRequest:
    text = data if isinstance(data, str) else json.dumps(data)
    return JobRequest(inputs=(JobInput(text, "text", "", "chat"),))


def transcript_job(messages: list[Any], **extra: Any) -> JobRequest:
    return chat_input({"format": TRANSCRIPT_FORMAT, "messages": messages, **extra})


def prompt_job(params: dict[str, str]) -> JobRequest:
    """A plain-prompt job with ``params``, parsed from an event as a provider would see it."""
    tags = (("i", "Hello", "text"), *(("param", name, value) for name, value in params.items()))
    return JobRequest.from_event(RawEvent("b" * 64, "a" * 64, 5050, 1, tags, ""))


@pytest.fixture(scope="module")
def keys() -> Any:
    return nostr_sdk.Keys.generate()


# --------------------------------------------------------------------------- round trip


def assert_same_chat(back: lm15.Request, model: str = "m") -> None:
    assert back.model == model
    assert back.system == "sys"
    assert back.messages == MESSAGES
    assert back.config.max_tokens == 5
    assert back.config.temperature == 0.5
    assert back.config.top_p == 0.9
    assert back.config.seed == 3
    assert back.config.stop == ("\n",)


def test_chat_job_round_trip() -> None:
    assert_same_chat(request_from_job(job_of(make_request())))


def test_chat_job_round_trip_through_a_signed_event(keys: Any) -> None:
    job = job_of(make_request())
    parsed = JobRequest.from_event(from_sdk(job.to_event(keys)))
    assert_same_chat(request_from_job(parsed))


def test_chat_job_round_trip_encrypted(keys: Any) -> None:
    provider = nostr_sdk.Keys.generate()
    job = job_of(make_request(), providers=(provider.public_key().to_hex(),), encrypted=True)
    raw_event = from_sdk(job.to_event(keys))
    assert "again" not in raw_event.json
    assert_same_chat(request_from_job(JobRequest.from_event(raw_event, provider)))


def test_chat_job_shape() -> None:
    """Exactly one text input, the readable rendering (what a foreign DVM feeds its model,
    whether it reads the first text input or the last); the transcript in a param."""
    job = job_of(make_request(), bid_msats=2500, relays=("wss://a", "wss://b"))
    [prompt] = job.inputs
    assert (prompt.type, prompt.marker) == ("text", "")
    assert json.loads(job.param(CHAT_PARAM) or "null") == {
        "format": TRANSCRIPT_FORMAT,
        "system": "sys",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "again"},
        ],
    }
    readable = prompt.data
    for piece in ("sys", "hi", "yo", "again"):
        assert piece in readable
    assert readable.index("hi") < readable.index("yo") < readable.index("again")
    assert job.output == "text/plain"
    assert job.bid_msats == 2500
    assert job.relays == ("wss://a", "wss://b")
    assert job.param("model") == "m"
    assert job.param("max_tokens") == "5"
    assert json.loads(job.param("stop") or "null") == ["\n"]
    assert job.nonce


def test_chat_job_without_model_or_settings() -> None:
    job = chat_job(lm15.Request(model="x", messages=(lm15.Message.user("q"),)), model=None, bid_msats=None, relays=())
    assert [name for name, _ in job.params] == [CHAT_PARAM]  # no model, no settings
    back = request_from_job(job)
    assert back.model == "default"
    assert back.system is None
    assert back.messages == (lm15.Message.user("q"),)
    assert (back.config.max_tokens, back.config.temperature, back.config.top_p, back.config.seed) == (None,) * 4
    assert back.config.stop == ()


def test_developer_messages_travel_as_system() -> None:
    request = make_request(messages=(lm15.Message.developer("be brief"), lm15.Message.user("hi")))
    data = transcript(request)
    assert data["messages"][0] == {"role": "system", "content": "be brief"}
    back = request_from_job(job_of(request))
    assert back.system == "sys\n\nbe brief"
    assert back.messages == (lm15.Message.user("hi"),)


def test_unicode_survives() -> None:
    text = "héllo — 日本語 🚀"
    back = request_from_job(job_of(make_request(messages=(lm15.Message.user(text),))))
    assert back.messages == (lm15.Message.user(text),)


def test_each_chat_job_gets_a_fresh_nonce(keys: Any) -> None:
    request = make_request()
    first, second = job_of(request), job_of(request)
    assert first.nonce != second.nonce
    for _ in range(20):  # retry until both are signed within the same second
        event_1, event_2 = first.to_event(keys), second.to_event(keys)
        if event_1.created_at().as_secs() == event_2.created_at().as_secs():
            break
    else:
        pytest.fail("could not sign two events within the same second")
    assert event_1.id().to_hex() != event_2.id().to_hex()
    # Control: the nonce is what tells them apart.
    for _ in range(20):
        event_1, event_3 = first.to_event(keys), dataclasses.replace(second, nonce=first.nonce).to_event(keys)
        if event_1.created_at().as_secs() == event_3.created_at().as_secs():
            assert event_1.id().to_hex() == event_3.id().to_hex()
            break


# --------------------------------------------------------------------------- plain prompts from other clients


def test_plain_prompt_job() -> None:
    back = request_from_job(JobRequest(inputs=(JobInput("Hello"),)))
    assert back.messages == (lm15.Message.user("Hello"),)
    assert back.system is None
    assert back.model == "default"


def test_plain_prompt_job_with_model_param() -> None:
    back = request_from_job(JobRequest(inputs=(JobInput("Hello"),), params=(("model", "llama3"),)))
    assert back.model == "llama3"


def test_several_text_inputs_are_joined_by_blank_lines() -> None:
    job = JobRequest(
        inputs=(
            JobInput("first"),
            JobInput("https://example.com", "url"),
            JobInput("second", "prompt"),
            JobInput("   "),
            JobInput("third"),
        )
    )
    back = request_from_job(job)
    assert back.messages == (lm15.Message.user("first\n\nsecond\n\nthird"),)


@pytest.mark.parametrize(
    "inputs",
    [(), (JobInput("https://example.com", "url"),), (JobInput(""), JobInput("  \n ")), (JobInput("a" * 64, "event"),)],
    ids=["none", "url-only", "blank", "event-only"],
)
def test_no_text_input_is_malformed(inputs: tuple[JobInput, ...]) -> None:
    with pytest.raises(MalformedEvent):
        request_from_job(JobRequest(inputs=inputs))


def test_the_transcript_param_wins_over_the_text_input_and_an_old_chat_input() -> None:
    def transcript_of(text: str) -> str:
        return json.dumps({"format": TRANSCRIPT_FORMAT, "messages": [{"role": "user", "content": text}]})

    job = JobRequest(
        inputs=(JobInput("the readable rendering"), JobInput(transcript_of("old"), "text", "", "chat")),
        params=((CHAT_PARAM, transcript_of("q")),),
    )
    assert request_from_job(job).messages == (lm15.Message.user("q"),)


def test_chat_input_wins_over_plain_text() -> None:
    """The job shape of earlier pylon versions (the transcript as a ``chat`` input) is still read."""
    job = JobRequest(
        inputs=(
            JobInput("ignored readable rendering", "text", "", "prompt"),
            JobInput(
                json.dumps({"format": TRANSCRIPT_FORMAT, "messages": [{"role": "user", "content": "q"}]}),
                "text",
                "",
                "chat",
            ),
        )
    )
    assert request_from_job(job).messages == (lm15.Message.user("q"),)


# --------------------------------------------------------------------------- bad params


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_tokens", "abc"),
        ("max_tokens", "0"),
        ("max_tokens", "-5"),
        ("max_tokens", "1.5"),
        ("max_tokens", "32769"),
        ("max-tokens", "abc"),
        ("temperature", "3"),
        ("temperature", "-0.1"),
        ("temperature", "nan"),
        ("temperature", "inf"),
        ("temperature", "-inf"),
        ("temperature", "hot"),
        ("top_p", "2"),
        ("top_p", "nan"),
        ("seed", "x"),
        ("seed", str(2**63)),
    ],
)
def test_bad_numeric_params_are_malformed_and_named(name: str, value: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        request_from_job(prompt_job({name: value}))
    assert name.replace("-", "_") in str(info.value)


def test_max_tokens_cap_is_configurable() -> None:
    assert request_from_job(prompt_job({"max_tokens": "100"}), max_tokens_cap=100).config.max_tokens == 100
    with pytest.raises(MalformedEvent, match="max_tokens"):
        request_from_job(prompt_job({"max_tokens": "101"}), max_tokens_cap=100)


def test_good_params_at_the_bounds() -> None:
    back = request_from_job(prompt_job({"max-tokens": "32768", "temperature": "0", "top_p": "1", "seed": "-1"}))
    assert (back.config.max_tokens, back.config.temperature, back.config.top_p, back.config.seed) == (32768, 0, 1, -1)


@pytest.mark.parametrize(
    "value",
    ["[1,2]", '[""]', '["ok", 3]', "{}", json.dumps([f"s{i}" for i in range(17)]), "", "null", "1"],
    ids=["ints", "empty-string-item", "mixed", "object", "17-strings", "empty", "null", "number"],
)
def test_bad_stop_is_malformed_and_named(value: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        request_from_job(prompt_job({"stop": value}))
    assert "stop" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["a", "b"]', ("a", "b")),
        ("[]", ()),
        ("END", ("END",)),
        ('"END"', ("END",)),
        (json.dumps(["s"] * 16), ("s",) * 16),
    ],
)
def test_good_stop(value: str, expected: tuple[str, ...]) -> None:
    assert request_from_job(prompt_job({"stop": value})).config.stop == expected


@pytest.mark.parametrize(
    "job",
    [
        chat_input("not json {"),
        chat_input(""),
        chat_input([1, 2]),
        chat_input({"format": "other.v1", "messages": [{"role": "user", "content": "x"}]}),
        chat_input({"messages": [{"role": "user", "content": "x"}]}),
        transcript_job([]),
        chat_input({"format": TRANSCRIPT_FORMAT}),
        chat_input({"format": TRANSCRIPT_FORMAT, "messages": {"role": "user", "content": "x"}}),
        transcript_job([{"role": "tool", "content": "x"}]),
        transcript_job([{"role": "user", "content": "x"}, {"role": "tool", "content": "result"}]),
        transcript_job([{"role": "user"}]),
        transcript_job([{"role": "user", "content": ["x"]}]),
        transcript_job([{"content": "x"}]),
        transcript_job(["x"]),
        transcript_job([{"role": "system", "content": "only system"}]),
        transcript_job([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}], system="c"),
    ],
    ids=[
        "not-json",
        "empty",
        "list",
        "wrong-format",
        "no-format",
        "empty-messages",
        "no-messages",
        "messages-not-list",
        "role-tool",
        "role-tool-later",
        "no-content",
        "content-not-text",
        "no-role",
        "message-not-object",
        "only-system",
        "only-system-twice",
    ],
)
def test_bad_chat_input_is_malformed(job: JobRequest) -> None:
    with pytest.raises(MalformedEvent):
        request_from_job(job)


def test_system_messages_in_the_transcript_merge_into_system() -> None:
    job = transcript_job(
        [{"role": "system", "content": "a"}, {"role": "user", "content": "q"}, {"role": "system", "content": "b"}],
        system="top",
    )
    back = request_from_job(job)
    assert back.system == "top\n\na\n\nb"
    assert back.messages == (lm15.Message.user("q"),)


# --------------------------------------------------------------------------- unsupported requests


def test_reasoning_effort_is_refused_not_ignored() -> None:
    with pytest.raises(UnsupportedRequest, match="reasoning_effort"):
        job_of(make_request(config=lm15.Config(reasoning=lm15.Reasoning(effort="low"))))


# --------------------------------------------------------------------------- pylon.chat.v2: schemas and tools

WEATHER = lm15.FunctionTool(
    name="weather",
    description="Weather by city",
    parameters={"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]},
)
CALL = lm15.ToolCallPart(id="c1", name="weather", input={"city": "Paris"})
TOOL_TURNS = (
    lm15.Message.user("weather?"),
    lm15.Message(role="assistant", parts=(lm15.TextPart("checking"), CALL)),
    lm15.Message(role="tool", parts=(lm15.ToolResultPart(id="c1", content=(lm15.TextPart("sunny"),)),)),
    lm15.Message(role="assistant", parts=(lm15.ToolCallPart(id="c2", name="weather", input={}),)),
    lm15.Message(role="tool", parts=(lm15.ToolResultPart(id="c2", content=(lm15.TextPart(""),)),)),
)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_plain_chat_still_travels_as_v1() -> None:
    """v1 stays the format of plain chat, so providers of earlier versions keep serving it."""
    assert transcript(make_request())["format"] == TRANSCRIPT_FORMAT
    assert transcript_format(job_of(make_request())) == TRANSCRIPT_FORMAT


@pytest.mark.parametrize(
    "changes",
    [
        {"tools": (WEATHER,)},
        {"tools": (WEATHER,), "config": lm15.Config(tool_choice=lm15.ToolChoice(mode="required", parallel=False))},
        {
            "tools": (WEATHER,),
            "config": lm15.Config(tool_choice=lm15.ToolChoice(mode="required", allowed=("weather",))),
        },
        {"tools": (WEATHER,), "config": lm15.Config(tool_choice=lm15.ToolChoice(mode="none"))},
        {"config": lm15.Config(max_tokens=9, response_format={"type": "json_object"})},
        {"config": lm15.Config(response_format={"type": "json_schema", "schema": SCHEMA, "name": "n", "strict": True})},
        {"messages": TOOL_TURNS, "tools": (WEATHER,)},
    ],
    ids=["tools", "required-serial", "named-tool", "none", "json-object", "json-schema", "tool-history"],
)
def test_v2_round_trip(changes: dict[str, Any], keys: Any) -> None:
    request = make_request(**changes)
    job = job_of(request, providers=(keys.public_key().to_hex(),), encrypted=True)
    back, form = parse_job(JobRequest.from_event(from_sdk(job.to_event(keys)), keys))
    assert form == TRANSCRIPT_V2
    assert back.messages == request.messages and back.system == request.system and back.tools == request.tools
    assert back.config.tool_choice == request.config.tool_choice
    assert back.config.response_format == request.config.response_format
    assert back.config.max_tokens == request.config.max_tokens


def test_v2_transcript_uses_the_openai_chat_shape() -> None:
    request = make_request(
        messages=TOOL_TURNS,
        tools=(WEATHER,),
        config=lm15.Config(
            tool_choice=lm15.ToolChoice(mode="required", parallel=False),
            response_format={"type": "json_schema", "schema": SCHEMA},
        ),
    )
    data = transcript(request)
    assert data["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "Weather by city", "parameters": WEATHER.parameters},
        }
    ]
    assert data["tool_choice"] == "required" and data["parallel_tool_calls"] is False
    assert data["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}
    assert data["messages"][1] == {
        "role": "assistant",
        "content": "checking",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}
        ],
    }
    assert data["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    # Foreign providers read the prompt input: the calls and results are in it too.
    text = readable(data)
    assert 'assistant: checking [calls weather({"city":"Paris"})]' in text and "tool result: sunny" in text


def v2_job(**fields: Any) -> JobRequest:
    data: dict[str, Any] = {"format": TRANSCRIPT_V2, "messages": [{"role": "user", "content": "q"}]}
    data.update(fields)
    return chat_input(data)


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "pylon.chat.v3"},
        {"messages": [{"role": "robot", "content": "q"}]},
        {"messages": [{"role": "assistant", "content": 5}]},
        {"messages": [{"role": "assistant", "content": None, "tool_calls": "weather"}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "{"}}]}]},
        {
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[1]"}}]}
            ]
        },
        {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "w", "arguments": "{}"}}]}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "", "arguments": "{}"}}]}]},
        {"messages": [{"role": "tool", "content": "sunny"}]},
        {"messages": [{"role": "tool", "tool_call_id": "c1", "content": ["sunny"]}]},
        {"tools": {"name": "w"}},
        {"tools": [{"type": "builtin", "function": {"name": "w"}}]},
        {"tools": [{"type": "function", "function": {"name": "w", "parameters": "object"}}]},
        {"tools": [{"type": "function", "function": {"name": "w", "description": 3}}]},
        {"tools": [{"type": "function", "function": {"name": f"t{i}"}} for i in range(200)]},
        {"tool_choice": "always"},
        {"tool_choice": {"type": "function"}},
        {"parallel_tool_calls": "yes"},
        {"response_format": {"type": "json_schema"}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/x"}}]}]},
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[" * 100_000}}],
                }
            ]
        },
    ],
)
def test_bad_v2_transcripts_are_malformed(fields: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent):
        parse_job(v2_job(**fields))


def test_v2_tool_call_arguments_may_come_as_an_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "w", "arguments": {"a": 1}}}
    back = request_from_job(
        v2_job(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]}])
    )
    assert back.messages[1].parts == (lm15.ToolCallPart(id="c", name="w", input={"a": 1}),)


def _response(*parts: Any) -> lm15.Response:
    return lm15.Response(
        id="r", model="m", message=lm15.Message(role="assistant", parts=parts), finish_reason="stop", usage=lm15.Usage()
    )


@pytest.mark.parametrize(
    "parts",
    [
        (lm15.TextPart("hi"),),
        (lm15.TextPart(""),),
        (CALL,),
        (lm15.TextPart("hm"), CALL),
        (CALL, dataclasses.replace(CALL, id="c9")),
    ],
    ids=["text", "empty", "call", "text-and-call", "two-calls"],
)
def test_v2_result_round_trip(parts: tuple[Any, ...]) -> None:
    content = result_content(_response(*parts), TRANSCRIPT_V2)
    assert json.loads(content)["format"] == TRANSCRIPT_V2
    message = result_message(content, TRANSCRIPT_V2)
    assert message.role == "assistant"
    assert [p for p in message.parts if not (isinstance(p, lm15.TextPart) and not p.text)] == [
        p for p in parts if not (isinstance(p, lm15.TextPart) and not p.text)
    ]


def test_v1_results_stay_plain_text() -> None:
    assert result_content(_response(lm15.TextPart("plain")), TRANSCRIPT_FORMAT) == "plain"
    assert result_message("plain", TRANSCRIPT_FORMAT) == lm15.Message.assistant("plain")
    assert result_message('{"format": "pylon.chat.v2"}', None).text == '{"format": "pylon.chat.v2"}'


@pytest.mark.parametrize(
    "content",
    [
        "free text from a provider that ignored the transcript",
        '{"n": 3}',
        '{"format": "pylon.chat.v1", "content": "x"}',
        '{"format": "pylon.chat.v2", "content": 3}',
        '{"format": "pylon.chat.v2", "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "nope"}}]}',
        json.dumps(
            {
                "format": "pylon.chat.v2",
                "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "[" * 100_000}}],
            }
        ),
        "[" * 100_000,
    ],
)
def test_a_v2_job_refuses_results_that_do_not_answer_it(content: str) -> None:
    with pytest.raises(MalformedEvent):
        result_message(content, TRANSCRIPT_V2)


@pytest.mark.parametrize(
    "message",
    [
        lm15.Message.user(lm15.ImagePart(url="https://example.com/cat.png")),
        lm15.Message(role="user", parts=(lm15.TextPart("look"), lm15.ImagePart(url="https://example.com/cat.png"))),
    ],
    ids=["image-only", "text-and-image"],
)
def test_image_parts_are_unsupported(message: lm15.Message) -> None:
    with pytest.raises(UnsupportedRequest):
        job_of(make_request(messages=(lm15.Message.user("hi"), message)))


# --------------------------------------------------------------------------- hostile JSON (src bugs)


@pytest.mark.parametrize(
    ("job", "why"),
    [
        (chat_input("1" * 5000), "chat input of a 5000-digit integer (json.loads raises ValueError)"),
        (chat_input("[" * 100_000), "chat input of deeply nested JSON (json.loads raises RecursionError)"),
        (prompt_job({"stop": "1" * 5000}), "stop param of a 5000-digit integer (json.loads raises ValueError)"),
        (prompt_job({"stop": "[" * 100_000}), "stop param of deeply nested JSON (json.loads raises RecursionError)"),
    ],
    ids=["chat-bigint", "chat-deep", "stop-bigint", "stop-deep"],
)
def test_hostile_json_is_malformed(job: JobRequest, why: str) -> None:
    """SRC BUG: request_from_job catches only JSONDecodeError around json.loads."""
    try:
        request_from_job(job)
    except MalformedEvent:
        return
    except Exception as exc:
        pytest.fail(
            f"SRC BUG (swarm.chat_job.request_from_job): {why}: raised {type(exc).__name__} instead of MalformedEvent"
        )


# --------------------------------------------------------------------------- property test

PARAM_NAMES = ["model", "max_tokens", "max-tokens", "temperature", "top_p", "top-p", "seed", "stop"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
messages_json = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.one_of(
                    st.sampled_from(["system", "user", "assistant", "tool", "developer"]), st.text(max_size=5)
                ),
                "content": st.one_of(st.text(max_size=30), json_values),
            }
        ),
        json_values,
    ),
    max_size=4,
)
tool_calls_json = st.lists(
    st.fixed_dictionaries(
        {"id": json_values, "function": st.fixed_dictionaries({"name": json_values, "arguments": json_values})}
    ),
    max_size=3,
)
messages_json = (
    st.lists(
        st.one_of(
            messages_json.flatmap(
                lambda _: st.fixed_dictionaries(
                    {"role": st.just("assistant")},
                    optional={"content": json_values, "tool_calls": st.one_of(tool_calls_json, json_values)},
                )
            ),
            st.fixed_dictionaries(
                {"role": st.just("tool"), "content": json_values}, optional={"tool_call_id": json_values}
            ),
            json_values,
        ),
        max_size=3,
    )
    | messages_json
)
transcripts = st.fixed_dictionaries(
    {
        "format": st.one_of(st.sampled_from([TRANSCRIPT_FORMAT, TRANSCRIPT_V2]), st.text(max_size=10)),
        "messages": messages_json,
    },
    optional={
        "system": json_values,
        "tools": st.one_of(
            json_values,
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.just("function"),
                        "function": st.dictionaries(
                            st.sampled_from(["name", "description", "parameters"]), json_values
                        ),
                    }
                ),
                max_size=3,
            ),
        ),
        "tool_choice": st.one_of(st.sampled_from(["auto", "required", "none"]), json_values),
        "parallel_tool_calls": json_values,
        "response_format": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["json_object", "json_schema"]), "json_schema": json_values}
            ),
        ),
    },
).map(json.dumps)
input_data = st.one_of(st.text(max_size=60), transcripts, json_values.map(json.dumps))
job_inputs = st.builds(
    JobInput,
    input_data,
    st.sampled_from(["text", "prompt", "url", "event", "job"]),
    st.text(max_size=5),
    st.one_of(st.sampled_from(["", "chat", "prompt"]), st.text(max_size=5)),
)
param_values = st.one_of(
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
    st.lists(st.text(max_size=5), max_size=20).map(json.dumps),
    json_values.map(json.dumps),
)
params = st.lists(st.tuples(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=8)), param_values), max_size=5)
random_jobs = st.builds(
    lambda inputs, params: JobRequest(inputs=tuple(inputs), params=tuple(params)),
    st.lists(job_inputs, max_size=4),
    params,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_jobs, st.integers(min_value=1, max_value=100_000))
@example(chat_input("1" * 5000), 32_768)
@example(prompt_job({"stop": "[" * 100_000}), 32_768)
def test_request_from_job_raises_only_malformed(job: JobRequest, cap: int) -> None:
    try:
        back = request_from_job(job, max_tokens_cap=cap)
    except MalformedEvent:
        return
    except Exception as exc:
        pytest.fail(
            f"SRC BUG (swarm.chat_job.request_from_job): raised {type(exc).__name__}: {exc!s:.200} "
            f"instead of MalformedEvent on {job!r:.600}"
        )
    assert isinstance(back, lm15.Request)
    assert back.messages
    assert back.config.max_tokens is None or 1 <= back.config.max_tokens <= cap
