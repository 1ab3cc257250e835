"""Contract tests for the Ollama backend, against recorded real-shaped Ollama responses.

No Ollama server can run here, so these tests talk to :class:`RecordedServer` (see its
docstring); ``test_live_backends.py`` repeats the essentials against a real Ollama when
``127.0.0.1:11434`` answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import dspy
import pytest
from dspy import lm15
from dspy.utils.exceptions import LMServerError, LMUnsupportedModelError

import dspy_pylon as pylon
from dspy_pylon.errors import BackendRequestError, BackendServerError, UnknownModel
from dspy_pylon.local.detect import detect
from dspy_pylon.route import Route

from .recorded_server import RecordedServer, load_recorded

TAGS = [m["name"] for m in load_recorded("ollama", "api_tags")["models"]]
CHAT = load_recorded("ollama", "chat_completion")
TEXT = CHAT["choices"][0]["message"]["content"]
USAGE = CHAT["usage"]
STREAM_USAGE = next(c["usage"] for c in load_recorded("ollama", "chat_completion_stream") if "usage" in c)


@pytest.fixture
def ollama(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedServer]:
    """A recorded Ollama server, with ``OLLAMA_HOST`` pointing at it."""
    with RecordedServer("ollama") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        yield server


def unique_prompt() -> str:
    """A prompt no other test sent (DSPy's in-memory cache is shared across tests)."""
    return f"What is the capital of France? ({uuid.uuid4().hex[:8]})"


def qa_lm(model: str = "pylon:local", **kwargs: Any) -> pylon.PylonLM:
    return pylon.LM(model, cache=False, max_tokens=64, **kwargs)


def test_recorded_tags_are_real_shaped() -> None:
    """Runs against recorded responses: the recorded /api/tags entries have every field Ollama 0.12 sends."""
    tags = load_recorded("ollama", "api_tags")
    for entry in tags["models"]:
        assert set(entry) == {"name", "model", "modified_at", "size", "digest", "details"}
        assert set(entry["details"]) == {
            "parent_model",
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        }
        assert len(entry["digest"]) == 64
    assert load_recorded("ollama", "api_version") == {"version": "0.12.6"}


# ─── detection ──────────────────────────────────────────────────────────────────────


def test_auto_picks_ollama_when_llamacpp_also_answers(ollama: RecordedServer, llamacpp_url: str) -> None:
    """Runs against recorded responses (Ollama) and the real tiny llama.cpp server: auto takes Ollama."""
    results = {r.endpoint.kind: r for r in detect("auto")}
    assert results["ollama"].ok and results["llamacpp"].ok, results  # both really answered

    lm = qa_lm()
    route = lm.route()
    assert route == Route("local", "ollama", ollama.url, TAGS[0])
    assert lm(unique_prompt()) == [TEXT]
    assert len(ollama.chat_bodies()) == 1
    assert lm.history[-1]["response"].provider_data["pylon"]["backend"] == "ollama"


def test_probe_asks_api_version_first(ollama: RecordedServer) -> None:
    """Runs against recorded responses: detection proves Ollama with GET /api/version."""
    qa_lm("pylon:local:ollama").route()
    assert ollama.paths()[:2] == ["/api/version", "/api/tags"]


def test_probe_falls_back_to_api_tags(ollama: RecordedServer) -> None:
    """Runs against recorded responses: if /api/version fails, a 2xx /api/tags still proves Ollama."""
    ollama.fail("/api/version", 404, {"error": "not found"})
    route = qa_lm().route()
    assert route.backend == "ollama"
    assert ollama.paths("GET")[:2] == ["/api/version", "/api/tags"]


def test_ollama_down_is_not_picked(ollama: RecordedServer, llamacpp_url: str) -> None:
    """Runs against recorded responses: an Ollama answering 500 everywhere is skipped for llama.cpp."""
    ollama.fail("/api/version", 500, {"error": "boom"})
    ollama.fail("/api/tags", 500, {"error": "boom"})
    route = qa_lm().route()
    assert route.backend == "llamacpp"
    assert route.base_url == llamacpp_url


@pytest.mark.parametrize("form", ["host:port", "0.0.0.0:port", "host:port/"])
def test_ollama_host_without_scheme(ollama: RecordedServer, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """Runs against recorded responses: OLLAMA_HOST as Ollama documents it (no scheme, maybe a bind address)."""
    value = {
        "host:port": ollama.host_port,
        "0.0.0.0:port": f"0.0.0.0:{ollama.port}",
        "host:port/": f"{ollama.host_port}/",
    }[form]
    monkeypatch.setenv("OLLAMA_HOST", value)
    lm = qa_lm("pylon:local:ollama")
    assert lm.route().base_url == ollama.url
    assert lm(unique_prompt()) == [TEXT]
    assert len(ollama.chat_bodies()) == 1


def test_ollama_url_when_ollama_host_unset(ollama: RecordedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs against recorded responses: OLLAMA_URL is honoured when OLLAMA_HOST is not set."""
    monkeypatch.delenv("OLLAMA_HOST")
    monkeypatch.setenv("OLLAMA_URL", ollama.url + "/")
    assert qa_lm("pylon:local:ollama").route().base_url == ollama.url


def test_ollama_host_wins_over_ollama_url(ollama: RecordedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs against recorded responses: with both set, OLLAMA_HOST (Ollama's own variable) wins."""
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")
    assert qa_lm("pylon:local:ollama").route().base_url == ollama.url


# ─── model resolution ───────────────────────────────────────────────────────────────


def test_first_model_of_tags_when_none_configured(ollama: RecordedServer) -> None:
    """Runs against recorded responses: with no model named, the first /api/tags entry is used."""
    lm = qa_lm("pylon:local:ollama")
    lm(unique_prompt())
    assert lm.route().model == TAGS[0] == "qwen2.5:0.5b"
    assert ollama.chat_bodies()[0]["model"] == TAGS[0]


@pytest.mark.parametrize(
    ("configured", "served"),
    [("llama3.2", "llama3.2:latest"), ("llama3.2:latest", "llama3.2:latest"), ("qwen2.5:0.5b", "qwen2.5:0.5b")],
)
def test_configured_model_resolves_to_served_name(ollama: RecordedServer, configured: str, served: str) -> None:
    """Runs against recorded responses: `pylon:local:ollama:llama3.2` means `llama3.2:latest`."""
    lm = qa_lm(f"pylon:local:ollama:{configured}")
    lm(unique_prompt())
    assert lm.route().model == served
    assert ollama.chat_bodies()[0]["model"] == served
    assert lm.history[-1]["response"].provider_data["pylon"]["model"] == served


def test_unknown_configured_model_lists_available(ollama: RecordedServer) -> None:
    """Runs against recorded responses: a model not in /api/tags fails before any chat, naming what exists."""
    lm = qa_lm("pylon:local:ollama:nope")
    with pytest.raises(UnknownModel) as direct:
        lm.route()
    assert direct.value.available == tuple(TAGS)
    for name in TAGS:
        assert name in str(direct.value)
    assert "ollama pull nope" in str(direct.value)

    with pytest.raises(LMUnsupportedModelError) as wrapped:
        lm(unique_prompt())
    cause = wrapped.value.__cause__
    assert isinstance(cause, UnknownModel)
    assert cause.available == tuple(TAGS)
    assert ollama.chat_bodies() == []  # nothing was sent for an unknown model


def test_embedding_model_listed_first_is_not_picked_for_chat(ollama: RecordedServer) -> None:
    """Runs against recorded responses: Ollama lists the newest model first; an embedding model is skipped."""
    with ollama._lock:
        models = ollama._tags["models"]
        embed = next(m for m in models if "embed" in m["name"])
        ollama._tags["models"] = [embed] + [m for m in models if m is not embed]
    assert ollama.model_names()[0] == embed["name"]
    assert qa_lm().route().model == next(name for name in ollama.model_names() if "embed" not in name)


def test_only_embedding_models_is_a_clear_error(ollama: RecordedServer) -> None:
    """Runs against recorded responses: with nothing but an embedding model, no chat model is guessed."""
    for name in [n for n in ollama.model_names() if "embed" not in n]:
        ollama.remove_model(name)
    with pytest.raises(LMUnsupportedModelError, match="no chat models") as info:
        qa_lm(num_retries=0)(unique_prompt())
    assert "nomic-embed-text" in str(info.value)
    assert ollama.chat_bodies() == []


def test_unknown_model_on_empty_ollama(ollama: RecordedServer) -> None:
    """Runs against recorded responses: an Ollama with no models pulled says how to get one."""
    for name in TAGS:
        ollama.remove_model(name)
    with pytest.raises(UnknownModel, match="ollama pull"):
        qa_lm("pylon:local:ollama").route()


def _check_unknown_after_404(error: BaseException, server: RecordedServer) -> None:
    assert isinstance(error, UnknownModel), repr(error)
    assert error.available == tuple(TAGS[1:])
    assert TAGS[0] in str(error)
    original = error.__cause__
    assert isinstance(original, BackendRequestError)
    assert original.status == 404
    assert f'model "{TAGS[0]}" not found, try pulling it first' in str(original)
    assert [b["model"] for b in server.chat_bodies()] == [TAGS[0]]  # sent once: an unknown model is not retried


def _check_next_call_resolves_again(lm: pylon.PylonLM, server: RecordedServer) -> None:
    # The route was forgotten and probed again, but the model that answered is gone: the next
    # call names both instead of letting the model now first in /api/tags answer silently.
    sent = len(server.chat_bodies())
    with pytest.raises(LMUnsupportedModelError) as wrapped:
        lm(unique_prompt())
    cause = wrapped.value.__cause__
    assert isinstance(cause, UnknownModel)
    assert TAGS[0] in str(cause) and TAGS[1] in str(cause) and "will not switch" in str(cause)
    assert len(server.chat_bodies()) == sent


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_chat_404_becomes_unknown_model(ollama: RecordedServer, mode: str) -> None:
    """Runs against recorded responses: Ollama's chat 404 "model not found" (model removed after
    resolution) becomes UnknownModel listing what is left; the next call refuses to switch models."""
    lm = qa_lm("pylon:local:ollama")
    assert lm.route().model == TAGS[0]
    ollama.remove_model(TAGS[0])  # `ollama rm` while pylon holds the resolved route

    with pytest.raises(LMUnsupportedModelError) as wrapped:
        if mode == "sync":
            lm(unique_prompt())
        else:
            asyncio.run(lm.acall(unique_prompt()))
    _check_unknown_after_404(wrapped.value.__cause__, ollama)
    _check_next_call_resolves_again(lm, ollama)


def test_chat_404_while_streaming(ollama: RecordedServer) -> None:
    """Runs against recorded responses: the streamed chat's 404 also becomes UnknownModel."""
    lm = qa_lm("pylon:local:ollama")
    lm.route()
    ollama.remove_model(TAGS[0])
    request = lm15.Request(model=lm.model, messages=(lm15.Message.user(unique_prompt()),))
    with pytest.raises(UnknownModel) as direct:
        list(pylon.PylonEngine(lm.runtime).stream(request))
    _check_unknown_after_404(direct.value, ollama)
    _check_next_call_resolves_again(lm, ollama)


def test_chat_404_through_streamify(ollama: RecordedServer) -> None:
    """Runs against recorded responses: a streamify caller gets LMUnsupportedModelError naming what is left.

    DSPy 3.4.1's streamify re-raises the error ``from None``, so its ``__cause__`` (the
    UnknownModel) is gone on this path; the message still carries everything.
    """
    lm = qa_lm("pylon:local:ollama")
    lm.route()
    ollama.remove_model(TAGS[0])
    program = dspy.streamify(dspy.Predict("question -> answer"), async_streaming=False)
    with pytest.raises(LMUnsupportedModelError) as wrapped, dspy.context(lm=lm):
        list(program(question=unique_prompt()))
    message = str(wrapped.value)
    assert f"model {TAGS[0]!r} is not served by ollama" in message
    assert "available: " + ", ".join(TAGS[1:]) in message
    assert ollama.chat_bodies()[0]["stream"] is True
    _check_next_call_resolves_again(lm, ollama)


# ─── what pylon sends, what it returns ──────────────────────────────────────────────


def test_request_carries_settings(ollama: RecordedServer) -> None:
    """Runs against recorded responses: temperature, max_tokens, stop and seed reach Ollama unchanged."""
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, temperature=0.25, max_tokens=48)
    prompt = unique_prompt()
    lm(prompt, stop=["\n\n", "[[ ## completed"], seed=1234)
    [body] = ollama.chat_bodies()
    assert body["model"] == "llama3.2:latest"
    assert body["messages"] == [{"role": "user", "content": prompt}]
    assert body["temperature"] == 0.25
    assert body["max_tokens"] == 48
    assert body["stop"] == ["\n\n", "[[ ## completed"]
    assert body["seed"] == 1234
    assert not body.get("stream")


def test_per_call_settings_override_lm_settings(ollama: RecordedServer) -> None:
    """Runs against recorded responses: per-call temperature and max_tokens win over the LM's."""
    lm = pylon.LM("pylon:local:ollama", cache=False, temperature=0.9, max_tokens=300)
    lm(unique_prompt(), temperature=0.0, max_tokens=12)
    [body] = ollama.chat_bodies()
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 12
    assert "seed" not in body
    assert "stop" not in body


def test_result_usage_route_and_cost(ollama: RecordedServer) -> None:
    """Runs against recorded responses: text, token counts, route and a zero cost are all reported."""
    lm = qa_lm("pylon:local:ollama:llama3.2")
    assert lm(unique_prompt()) == [TEXT]

    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == USAGE["prompt_tokens"]
    assert entry["usage"]["completion_tokens"] == USAGE["completion_tokens"]
    assert entry["usage"]["total_tokens"] == USAGE["total_tokens"]
    assert entry["cost"] == 0 and isinstance(entry["cost"], int)
    assert entry["cost_details"]["currency"] == "msat"
    assert entry["cost_details"]["cache_hit"] is False

    expected = Route("local", "ollama", ollama.url, "llama3.2:latest")
    record = entry["response"].provider_data["pylon"]
    assert {k: record[k] for k in ("venue", "backend", "base_url", "model")} == expected.as_dict()
    assert record["cost_msats"] == 0
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0
    assert lm.route() == expected

    usage = lm.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cost_msats) == (
        USAGE["prompt_tokens"],
        USAGE["completion_tokens"],
        0,
    )
    assert lm.total_spent_msats() == 0


def test_async_call(ollama: RecordedServer) -> None:
    """Runs against recorded responses: the async path sends the same body and reads the same answer."""
    lm = qa_lm("pylon:local:ollama", temperature=0.5)
    assert asyncio.run(lm.acall(unique_prompt(), seed=3)) == [TEXT]
    [body] = ollama.chat_bodies()
    assert (body["model"], body["temperature"], body["seed"], body["max_tokens"]) == (TAGS[0], 0.5, 3, 64)
    assert lm.history[-1]["usage"]["total_tokens"] == USAGE["total_tokens"]
    assert lm.history[-1]["response"].provider_data["pylon"]["backend"] == "ollama"


def test_predict_parses_recorded_answer(ollama: RecordedServer) -> None:
    """Runs against recorded responses: a DSPy program reads Ollama's ChatAdapter-formatted answer."""
    lm = qa_lm("pylon:local:ollama:llama3.2")
    with dspy.context(lm=lm):
        prediction = dspy.Predict("question -> answer")(question=unique_prompt())
    assert prediction.answer == "Paris"
    [body] = ollama.chat_bodies()
    assert body["messages"][0]["role"] == "system"
    assert "[[ ## answer ## ]]" in body["messages"][0]["content"]


def test_memory_cache_hit_sends_nothing_and_costs_nothing(ollama: RecordedServer) -> None:
    """Runs against recorded responses: with the cache on, a repeated call never reaches Ollama."""
    lm = pylon.LM("pylon:local:ollama", max_tokens=64)  # cache on (memory only in tests)
    prompt = unique_prompt()
    assert lm(prompt) == [TEXT]
    assert lm(prompt) == [TEXT]
    assert len(ollama.chat_bodies()) == 1
    assert lm.history[-1]["cost"] == 0
    assert lm.history[-1]["cost_details"]["cache_hit"] is True
    assert lm.runtime.totals.calls == 1


def test_server_error_surfaces_with_ollama_message(ollama: RecordedServer) -> None:
    """Runs against recorded responses: Ollama's 500 (a crashed runner) arrives as a server error."""
    message = "llama runner process has terminated: exit status 2"
    ollama.fail("/v1/chat/completions", 500, {"error": {"message": message, "type": "api_error", "param": None}})
    lm = qa_lm("pylon:local:ollama", num_retries=0)
    with pytest.raises(LMServerError) as wrapped:
        lm(unique_prompt())
    cause = wrapped.value.__cause__
    assert isinstance(cause, BackendServerError)
    assert cause.status == 500
    assert message in str(cause)
    assert len(ollama.chat_bodies()) == 1


# ─── streaming ──────────────────────────────────────────────────────────────────────


def test_streamify_streams_the_answer(ollama: RecordedServer) -> None:
    """Runs against recorded responses: dspy.streamify receives Ollama's SSE chunks as they arrive."""
    lm = qa_lm("pylon:local:ollama:llama3.2")
    listener = dspy.streaming.StreamListener(signature_field_name="answer")
    program = dspy.streamify(dspy.Predict("question -> answer"), stream_listeners=[listener], async_streaming=False)
    chunks: list[str] = []
    final = None
    with dspy.context(lm=lm):
        for item in program(question=unique_prompt()):
            if isinstance(item, dspy.streaming.StreamResponse):
                chunks.append(item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
    assert "".join(chunks) == "Paris"
    assert final is not None and final.answer == "Paris"

    [body] = ollama.chat_bodies()
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "llama3.2:latest"
    assert body["max_tokens"] == 64

    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == STREAM_USAGE["prompt_tokens"]
    assert entry["usage"]["completion_tokens"] == STREAM_USAGE["completion_tokens"]
    assert entry["cost"] == 0
    assert entry["response"].provider_data["pylon"]["backend"] == "ollama"
    assert entry["response"].provider_data["pylon"]["base_url"] == ollama.url


def test_engine_stream_events(ollama: RecordedServer) -> None:
    """Runs against recorded responses: the engine's stream yields start, text deltas and an end with usage."""
    lm = qa_lm("pylon:local:ollama")
    request = lm15.Request(
        model=lm.model,
        messages=(lm15.Message.user(unique_prompt()),),
        config=lm15.Config(max_tokens=20, temperature=0.0, seed=9, stop=("\n\n\n",)),
    )
    events = list(pylon.PylonEngine(lm.runtime).stream(request))
    assert isinstance(events[0], lm15.StreamStartEvent)
    assert events[0].id == "chatcmpl-456"
    text = "".join(e.delta.text for e in events if isinstance(e, lm15.StreamDeltaEvent))
    assert text == TEXT
    end = events[-1]
    assert isinstance(end, lm15.StreamEndEvent)
    assert end.finish_reason == "stop"
    assert end.usage.input_tokens == STREAM_USAGE["prompt_tokens"]
    assert end.usage.output_tokens == STREAM_USAGE["completion_tokens"]
    assert end.provider_data["pylon"]["model"] == TAGS[0]
    assert end.provider_data["pylon"]["cost_msats"] == 0
    [body] = ollama.chat_bodies()
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stop"]) == (20, 0.0, 9, ["\n\n\n"])
    assert lm.usage().prompt_tokens == STREAM_USAGE["prompt_tokens"]


def test_async_streamify(ollama: RecordedServer) -> None:
    """Runs against recorded responses: the async stream path yields the same answer."""
    lm = qa_lm("pylon:local:ollama")
    listener = dspy.streaming.StreamListener(signature_field_name="answer")
    program = dspy.streamify(dspy.Predict("question -> answer"), stream_listeners=[listener])

    async def run() -> tuple[list[str], Any]:
        chunks: list[str] = []
        final = None
        with dspy.context(lm=lm):
            async for item in program(question=unique_prompt()):
                if isinstance(item, dspy.streaming.StreamResponse):
                    chunks.append(item.chunk)
                elif isinstance(item, dspy.Prediction):
                    final = item
        return chunks, final

    chunks, final = asyncio.run(run())
    assert "".join(chunks) == "Paris"
    assert final is not None and final.answer == "Paris"
    assert ollama.chat_bodies()[0]["stream"] is True
    assert lm.history[-1]["usage"]["total_tokens"] == STREAM_USAGE["total_tokens"]


def test_a_newly_pulled_model_listed_first_does_not_take_over(ollama: RecordedServer) -> None:
    """Runs against recorded responses: after the route is forgotten (e.g. a dropped connection),
    the model that answered is still served, so it keeps answering although `ollama pull` listed
    another model first."""
    lm = qa_lm("pylon:local:ollama")
    assert lm(unique_prompt()) == [TEXT]
    ollama.pull_model("newcomer:latest")
    lm.runtime.local_router().invalidate()
    assert lm(unique_prompt()) == [TEXT]
    assert lm.route().model == TAGS[0]
    assert ollama.chat_bodies()[-1]["model"] == TAGS[0]


# ─── Ollama's own options: its native /api/chat (the OpenAI-compatible /v1 ignores them) ───

NATIVE = load_recorded("ollama", "api_chat")


def test_ollama_options_go_to_the_native_api(ollama: RecordedServer) -> None:
    """Runs against recorded responses: num_ctx, repeat_penalty, mirostat land in ``options``
    with the sampling settings, keep_alive at the top, and the answer reads as from /v1."""
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, temperature=0.2, max_tokens=40, num_ctx=8192)
    prompt = unique_prompt()
    assert lm(prompt, repeat_penalty=1.1, mirostat=2, keep_alive="5m", seed=7, stop=["\n\n"]) == [TEXT]
    assert ollama.chat_bodies() == []
    [body] = ollama.native_bodies()
    assert body["model"] == "llama3.2:latest" and body["stream"] is False and body["keep_alive"] == "5m"
    assert body["messages"] == [{"role": "user", "content": prompt}]
    assert body["options"] == {
        "temperature": 0.2,
        "num_predict": 40,
        "seed": 7,
        "stop": ["\n\n"],
        "num_ctx": 8192,
        "repeat_penalty": 1.1,
        "mirostat": 2,
    }
    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == NATIVE["prompt_eval_count"]
    assert entry["usage"]["completion_tokens"] == NATIVE["eval_count"]
    assert entry["response"].provider_data["pylon"]["backend"] == "ollama"


def test_without_options_calls_stay_on_v1(ollama: RecordedServer) -> None:
    lm = qa_lm("pylon:local:ollama:llama3.2")
    lm(unique_prompt())
    assert len(ollama.chat_bodies()) == 1 and ollama.native_bodies() == []


def test_native_api_schema_tools_and_tool_calls(ollama: RecordedServer) -> None:
    """Runs against recorded responses: a JSON schema goes in ``format``, JSON mode as "json",
    tools as sent, tool-call arguments as objects; the recorded tool call parses back."""
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, num_ctx=4096)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    lm("x", response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}})
    assert ollama.native_bodies()[-1]["format"] == schema
    lm("x", response_format={"type": "json_object"})
    assert ollama.native_bodies()[-1]["format"] == "json"
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Rome"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    [output] = lm(messages=history, tools=[weather])
    body = ollama.native_bodies()[-1]
    assert body["tools"] == [weather]
    assert body["messages"][1]["tool_calls"] == [{"function": {"name": "weather", "arguments": {"city": "Rome"}}}]
    assert body["messages"][2] == {"role": "tool", "tool_name": "weather", "content": "sunny"}
    assert isinstance(output, dict)
    [call] = output["tool_calls"]
    assert call["id"] == "call_wy6hpf1u" and call["function"]["name"] == "weather"
    assert call["function"]["arguments"] == '{"city": "Paris"}'


def test_native_api_streams_ndjson(ollama: RecordedServer) -> None:
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, num_ctx=4096)
    request = lm15.Request(model=lm.model, messages=(lm15.Message.user(unique_prompt()),))
    events = list(lm.runtime.stream(request, {"num_ctx": 4096}))
    text = "".join(e.delta.text for e in events if isinstance(e, lm15.StreamDeltaEvent))
    assert text == TEXT
    end = events[-1]
    assert isinstance(end, lm15.StreamEndEvent) and end.usage.output_tokens == NATIVE["eval_count"]
    assert ollama.native_bodies()[-1]["stream"] is True


@pytest.mark.parametrize(
    ("kwargs", "feature"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"cache_prompt": True}, "cache_prompt"),  # a llama.cpp option Ollama does not read
    ],
)
def test_native_api_refuses_what_it_cannot_carry(ollama: RecordedServer, kwargs: dict[str, Any], feature: str) -> None:
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, num_ctx=4096, num_retries=0)
    weather = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(dspy.utils.exceptions.LMUnsupportedFeatureError) as info:
        lm("x", tools=[weather], **kwargs)
    assert isinstance(info.value.__cause__, pylon.UnsupportedRequest) and info.value.__cause__.feature == feature
    assert ollama.native_bodies() == []


def test_native_api_unknown_model_is_unknown_model(ollama: RecordedServer) -> None:
    lm = pylon.LM("pylon:local:ollama:llama3.2", cache=False, num_ctx=4096, num_retries=0)
    ollama.remove_model("llama3.2:latest")
    with pytest.raises(LMUnsupportedModelError) as info:
        lm("x")
    assert isinstance(info.value.__cause__, UnknownModel)
