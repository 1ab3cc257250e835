"""The same calls through DSPy's own client and through pylon:local, against one real llama.cpp.

A recording proxy sits in front of the server; each test compares what the two clients put
on the wire and what came back (and, for the swarm, what a provider node puts on the wire for
a job carrying the same call). Where pylon deliberately differs, the test says so:
- pylon sends ``max_tokens`` (every local server reads it; older llama.cpp and Ollama do not
  read DSPy's ``max_completion_tokens``), and
- pylon sends ``top_k`` (lm15's OpenAI dialect drops it; llama.cpp and Ollama honour it), and
- a key neither knows is refused by pylon with a typed error, where DSPy's client hands it to
  LiteLLM to send blind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from tests.helpers import WholeAnswerAdapter
from tests.parity.recording_proxy import RecordingProxy
from tests.swarm.conftest import customer_keys, local_swarm, relay_loop, relay_url, start_provider, swarm_lm

# Fixtures of the swarm venue, for the swarm parity check.
__all__ = ["customer_keys", "local_swarm", "relay_loop", "relay_url", "start_provider", "swarm_lm"]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}},
        },
    }
]


@pytest.fixture
def proxy(tiny_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    with RecordingProxy(tiny_server.url) as recording:
        monkeypatch.setenv("LLAMACPP_URL", recording.url)
        yield recording


@pytest.fixture
def clients(proxy: RecordingProxy, tiny_model: Path) -> tuple[dspy.LM, pylon.PylonLM]:
    settings: dict[str, Any] = {"cache": False, "max_tokens": 6, "temperature": 0.0, "num_retries": 0}
    own = dspy.LM(f"openai/{tiny_model}", api_base=f"{proxy.url}/v1", api_key="not-needed", **settings)
    return own, pylon.LM("pylon:local:llamacpp", **settings)


def _normalised(body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body)
    if "max_completion_tokens" in body:  # DSPy's spelling of the same limit
        body["max_tokens"] = body.pop("max_completion_tokens")
    return body


def _both(clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy, *args: Any, **kwargs: Any) -> list[Any]:
    bodies = []
    for lm in clients:
        lm(*args, **kwargs)
        bodies.append(_normalised(proxy.chat_bodies()[-1]))
    return bodies


def test_plain_call_same_body_and_answer(clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy) -> None:
    own, mine = _both(clients, proxy, "Say hi.")
    assert own == mine
    assert clients[0].history[-1]["outputs"] == clients[1].history[-1]["outputs"]
    assert clients[0].history[-1]["usage"]["prompt_tokens"] == clients[1].history[-1]["usage"]["prompt_tokens"]


def test_backend_options_reach_llamacpp_as_through_dspy(
    clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy
) -> None:
    options: dict[str, Any] = {
        "repeat_penalty": 1.1,
        "min_p": 0.05,
        "typical_p": 0.9,
        "mirostat": 0,
        "cache_prompt": True,
        "extra_body": {"n_probs": 2},
    }
    own, mine = _both(clients, proxy, "Say hi.", **options)
    assert own == mine
    for key in ("repeat_penalty", "min_p", "typical_p", "mirostat", "cache_prompt", "n_probs"):
        assert key in mine, key
    assert "extra_body" not in mine and "provider" not in mine  # merged, and pylon's carrier stripped


def test_options_set_on_the_lm_reach_llamacpp_and_change_the_cache_key(proxy: RecordingProxy) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, repeat_penalty=1.3)
    lm("Say hi.")
    assert proxy.chat_bodies()[-1]["repeat_penalty"] == 1.3
    lm.copy(repeat_penalty=1.0)("Say hi.")  # same prompt, other option: not a cache hit
    assert len(proxy.chat_bodies()) == 2 and proxy.chat_bodies()[-1]["repeat_penalty"] == 1.0
    lm("Say hi.")  # same prompt and option: the cache answers
    assert len(proxy.chat_bodies()) == 2


def test_structured_output_and_tools_same_body(clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy) -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    own, mine = _both(clients, proxy, "Say hi.", response_format=schema)
    assert own == mine and mine["response_format"] == schema
    own, mine = _both(clients, proxy, "Weather?", tools=TOOLS, tool_choice="auto", seed=3)
    assert own == mine and mine["tools"] == TOOLS


def test_top_k_is_sent_by_pylon_only(clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy) -> None:
    own, mine = _both(clients, proxy, "Say hi.", top_k=5)
    assert "top_k" not in own  # lm15's OpenAI dialect drops it (recorded as an adaptation)
    assert mine["top_k"] == 5
    assert {k: v for k, v in mine.items() if k != "top_k"} == own


def test_unknown_key_is_refused_by_pylon_before_the_wire(
    clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy
) -> None:
    sent = len(proxy.chat_bodies())
    with pytest.raises(dspy_errors.LMUnsupportedFeatureError, match="no_such_knob"):
        clients[1]("Say hi.", no_such_knob=1)
    assert len(proxy.chat_bodies()) == sent


def test_streamed_usage_matches(clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy) -> None:
    usages = []
    for lm in clients:
        program = dspy.streamify(dspy.Predict("question -> answer"))

        async def run(program: Any = program) -> None:
            async for _ in program(question="Say hi."):
                pass

        with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
            asyncio.run(run())
        usages.append(lm.history[-1]["usage"])
        assert proxy.chat_bodies()[-1]["stream"] is True
    own, mine = usages
    assert own["prompt_tokens"] == mine["prompt_tokens"] and own["completion_tokens"] == mine["completion_tokens"]
    # Both report cached prompt tokens; pylon's call came second, so llama.cpp's prompt cache held it.
    assert set(own["prompt_tokens_details"]) == set(mine["prompt_tokens_details"]) == {"cached_tokens"}
    assert mine["prompt_tokens_details"]["cached_tokens"] > 0


# ─── through the swarm: the provider's body is DSPy's body ───


def test_a_swarm_job_reaches_the_providers_llamacpp_with_dspys_body(
    clients: tuple[dspy.LM, pylon.PylonLM], proxy: RecordingProxy, start_provider: Any, swarm_lm: Any
) -> None:
    """A schema or tools call sent as a pylon.chat.v2 job: the provider node (its llama.cpp
    behind the same recording proxy) puts on the wire what DSPy's own client would."""
    start_provider(backend_url=proxy.url)
    swarm = swarm_lm(max_tokens=6, temperature=0.0, timeout=20)
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    for kwargs in ({"response_format": schema}, {"tools": TOOLS, "tool_choice": "auto", "seed": 3}):
        own, _mine = _both(clients, proxy, "Weather?", **kwargs)
        answer = swarm("Weather?", **kwargs)
        provider_body = _normalised(proxy.chat_bodies()[-1])
        assert provider_body == own
        assert answer == clients[0].history[-1]["outputs"]
