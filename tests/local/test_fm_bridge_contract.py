"""Contract tests for the Apple Foundation Models bridge, against recorded real-shaped responses.

The bridge needs macOS 26+, so these tests talk to :class:`RecordedServer` (see its
docstring); ``test_live_backends.py`` repeats the essentials against a real bridge when
``127.0.0.1:11435`` answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import dspy
import pytest
from dspy.utils.exceptions import LMUnsupportedModelError

import dspy_pylon as pylon
from dspy_pylon.errors import UnknownModel
from dspy_pylon.local.detect import detect
from dspy_pylon.route import Route

from .recorded_server import RecordedServer, load_recorded

FM_MODEL = "apple-foundation-model"
CHAT = load_recorded("fm_bridge", "chat_completion")
TEXT = CHAT["choices"][0]["message"]["content"]
USAGE = CHAT["usage"]
STREAM_USAGE = next(c["usage"] for c in load_recorded("fm_bridge", "chat_completion_stream") if "usage" in c)


@pytest.fixture
def fm_bridge(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedServer]:
    """A recorded Apple FM bridge, with ``FM_BRIDGE_URL`` pointing at it."""
    with RecordedServer("fm_bridge") as server:
        monkeypatch.setenv("FM_BRIDGE_URL", server.url)
        yield server


@pytest.fixture
def ollama(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordedServer]:
    """A recorded Ollama server, with ``OLLAMA_HOST`` pointing at it."""
    with RecordedServer("ollama") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        yield server


def unique_prompt() -> str:
    """A prompt no other test sent (DSPy's in-memory cache is shared across tests)."""
    return f"What is the capital of France? ({uuid.uuid4().hex[:8]})"


def fm_lm(model: str = "pylon:local:apple-fm", **kwargs: Any) -> pylon.PylonLM:
    return pylon.LM(model, cache=False, max_tokens=64, **kwargs)


# ─── detection ──────────────────────────────────────────────────────────────────────


def test_auto_picks_fm_bridge_when_ollama_is_down(fm_bridge: RecordedServer, llamacpp_url: str) -> None:
    """Runs against recorded responses (FM bridge) and the real tiny llama.cpp: Ollama's port is
    closed, so auto takes the bridge, which comes before llama.cpp."""
    results = {r.endpoint.kind: r for r in detect("auto")}
    assert not results["ollama"].ok
    assert results["apple-fm"].ok and results["llamacpp"].ok, results

    lm = fm_lm("pylon:local")
    assert lm.route() == Route("local", "apple-fm", fm_bridge.url, FM_MODEL)
    assert lm(unique_prompt()) == [TEXT]
    assert len(fm_bridge.chat_bodies()) == 1
    assert lm.history[-1]["response"].provider_data["pylon"]["backend"] == "apple-fm"


def test_auto_picks_ollama_over_fm_bridge(fm_bridge: RecordedServer, ollama: RecordedServer) -> None:
    """Runs against recorded responses: with Ollama and the bridge both up, auto takes Ollama."""
    lm = fm_lm("pylon:local")
    assert lm.route().backend == "ollama"
    lm(unique_prompt())
    assert len(ollama.chat_bodies()) == 1
    assert fm_bridge.chat_bodies() == []
    assert "/health" in fm_bridge.paths("GET")  # it was probed, concurrently, and lost on order


def test_bridge_probed_with_health(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: the bridge is found by GET /health, its model by GET /v1/models."""
    fm_lm().route()
    assert fm_bridge.paths() == ["/health", "/v1/models"]


def test_unhealthy_bridge_is_not_picked(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: a bridge whose /health answers 503 is not used."""
    fm_bridge.fail("/health", 503, {"status": "unavailable", "reason": "Apple Intelligence is not enabled"})
    with pytest.raises(pylon.NoLocalBackend) as error:
        fm_lm().route()
    assert fm_bridge.url in str(error.value)
    assert "FM_BRIDGE_URL" in str(error.value)


def test_fm_bridge_url_trailing_slash(fm_bridge: RecordedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs against recorded responses: FM_BRIDGE_URL with a trailing slash still reaches the bridge."""
    monkeypatch.setenv("FM_BRIDGE_URL", fm_bridge.url + "/")
    lm = fm_lm()
    assert lm.route().base_url == fm_bridge.url
    assert lm(unique_prompt()) == [TEXT]


# ─── model ──────────────────────────────────────────────────────────────────────────


def test_model_from_v1_models(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: the served model comes from /v1/models and is sent as `model`."""
    lm = fm_lm()
    lm(unique_prompt())
    assert lm.route().model == FM_MODEL
    assert fm_bridge.chat_bodies()[0]["model"] == FM_MODEL


@pytest.mark.parametrize(
    ("model", "expected"), [("pylon:local:apple-fm", FM_MODEL), ("pylon:local:apple-fm:sys", "sys")]
)
def test_model_when_v1_models_fails(fm_bridge: RecordedServer, model: str, expected: str) -> None:
    """Runs against recorded responses: a bridge without /v1/models gets the configured model or the default."""
    fm_bridge.fail("/v1/models", 404, {"error": {"message": "Not Found"}})
    lm = fm_lm(model)
    lm(unique_prompt())
    assert lm.route().model == expected
    assert fm_bridge.chat_bodies()[0]["model"] == expected


def test_unknown_model_lists_bridge_model(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: a model the bridge does not list fails, naming the one it serves."""
    lm = fm_lm("pylon:local:apple-fm:gpt-4o")
    with pytest.raises(LMUnsupportedModelError) as wrapped:
        lm(unique_prompt())
    cause = wrapped.value.__cause__
    assert isinstance(cause, UnknownModel)
    assert cause.available == (FM_MODEL,)
    assert FM_MODEL in str(cause)
    assert "ollama pull" not in str(cause)
    assert fm_bridge.chat_bodies() == []


# ─── calls ──────────────────────────────────────────────────────────────────────────


def test_request_result_route_and_cost(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: settings reach the bridge; text, usage, route and cost come back."""
    lm = fm_lm(temperature=0.4)
    prompt = unique_prompt()
    assert lm(prompt, stop=["\n\n"], seed=11) == [TEXT]

    [body] = fm_bridge.chat_bodies()
    assert body["model"] == FM_MODEL
    assert body["messages"] == [{"role": "user", "content": prompt}]
    assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == (0.4, 64, ["\n\n"], 11)
    assert not body.get("stream")

    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == USAGE["prompt_tokens"]
    assert entry["usage"]["completion_tokens"] == USAGE["completion_tokens"]
    assert entry["usage"]["total_tokens"] == USAGE["total_tokens"]
    assert entry["cost"] == 0
    expected = Route("local", "apple-fm", fm_bridge.url, FM_MODEL)
    record = entry["response"].provider_data["pylon"]
    assert {k: record[k] for k in ("venue", "backend", "base_url", "model")} == expected.as_dict()
    assert record["cost_msats"] == 0
    assert lm.route() == expected


def test_predict_and_async(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: DSPy programs, sync and async, read the bridge's answer."""
    lm = fm_lm()
    program = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        assert program(question=unique_prompt()).answer == "The capital of France is Paris."

    async def run() -> Any:
        with dspy.context(lm=lm):
            return await program.acall(question=unique_prompt())

    assert asyncio.run(run()).answer == "The capital of France is Paris."
    assert len(fm_bridge.chat_bodies()) == 2
    assert lm.usage().total_tokens == 2 * USAGE["total_tokens"]


def test_streamify_streams_the_answer(fm_bridge: RecordedServer) -> None:
    """Runs against recorded responses: dspy.streamify receives the bridge's SSE chunks."""
    lm = fm_lm()
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
    assert "".join(chunks) == "The capital of France is Paris."
    assert len([c for c in chunks if c]) >= 2  # it really arrived in pieces
    assert final is not None and final.answer == "The capital of France is Paris."
    [body] = fm_bridge.chat_bodies()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    entry = lm.history[-1]
    assert entry["usage"]["total_tokens"] == STREAM_USAGE["total_tokens"]
    assert entry["response"].provider_data["pylon"]["backend"] == "apple-fm"
    assert entry["cost"] == 0
