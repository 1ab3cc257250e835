"""Structured outputs and native tool calls over the swarm (``pylon.chat.v2``): a real relay,
real provider nodes on real llama.cpp servers, the customer on the real NIP-90 path."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import dspy
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.swarm.chat_job import FORMATS
from dspy_pylon.testing import LocalSwarm, tiny_gguf
from dspy_pylon.usage import pylon_data
from tests.local.test_structured_outputs import AskWithTools, Person, Typed, weather

from .conftest import RunningProvider, eventually

StartProvider = Callable[..., RunningProvider]
SwarmLM = Callable[..., pylon.PylonLM]


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLlama]:
    """The tiny model with a template that renders no tools."""
    path = tiny_gguf.write_tiny_gguf(tmp_path_factory.mktemp("bare") / "bare.gguf", tiny_gguf.BARE_CHATML_TEMPLATE)
    with EmbeddedLlama(Path(path), n_ctx=4096, parallel=1) as server:
        yield server


def test_typed_outputs_over_the_swarm(start_provider: StartProvider, swarm_lm: SwarmLM, llamacpp_url: str) -> None:
    """JSONAdapter sends the schema through the job; the provider's llama.cpp enforces it."""
    provider = start_provider()
    announced = provider.node.announcement()
    assert announced.formats == FORMATS and {"json_schema", "json_object", "tools"} <= set(announced.features)
    lm = swarm_lm(max_tokens=600, temperature=0.0, seed=7, timeout=30)
    assert lm.supports_response_schema is True and "response_format" in lm.supported_params
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        result = dspy.Predict(Typed)(question="anything")
    assert isinstance(result.count, int) and isinstance(result.ok, bool) and result.color in ("red", "blue")
    assert isinstance(result.person, Person) and 0 <= result.person.age <= 120
    assert pylon_data(lm.history[-1]["response"].provider_data)["provider"] == provider.pubkey
    # The same schema call, local and swarm, gives the same JSON: the provider ran it as sent.
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 50}, "c": {"enum": ["a", "b"]}},
        "required": ["n", "c"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    local = pylon.LM("pylon:local:llamacpp", temperature=0.0, max_tokens=200, seed=7, cache=False)
    swarm = swarm_lm(max_tokens=200, temperature=0.0, seed=7, timeout=30)
    [text] = swarm("Give n and c.", response_format=response_format)
    assert set(json.loads(text)) == {"n", "c"}
    assert [text] == local("Give n and c.", response_format=response_format)
    eventually(lambda: provider.node.stats.done == 2)


@pytest.mark.parametrize("targeted", [False, True], ids=["broadcast", "targeted-encrypted"])
def test_native_tool_calls_over_the_swarm(
    start_provider: StartProvider, swarm_lm: SwarmLM, tools_server: EmbeddedLlama, targeted: bool
) -> None:
    provider = start_provider(backend_url=tools_server.url)
    lm = swarm_lm(
        providers=(provider.pubkey,) if targeted else (),
        max_tokens=400,
        temperature=0.0,
        seed=1,
        timeout=30,
        tool_choice="required",
    )
    assert lm.supports_function_calling is True
    tool = dspy.Tool(weather)
    [output] = lm("weather?", tools=[tool.format_as_litellm_function_call()], parallel_tool_calls=False)
    assert isinstance(output, dict)
    [call] = output["tool_calls"]
    assert call["function"]["name"] == "weather" and json.loads(call["function"]["arguments"])["city"] in (
        "Paris",
        "Rome",
    )
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_native_function_calling=True)):
        result = dspy.Predict(AskWithTools)(question="Weather in Paris?", tools=[tool])
    assert result.calls.tool_calls and result.calls.tool_calls[0].execute(functions=[tool]).startswith("sunny in ")
    # The tool result goes back in the next turn: the transcript carries calls and results.
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    assert lm(messages=history, tools=[tool.format_as_litellm_function_call()])
    eventually(lambda: provider.node.stats.done == 3)


def test_a_provider_that_cannot_honour_tools_refuses_with_error_feedback(
    start_provider: StartProvider, swarm_lm: SwarmLM, bare_server: EmbeddedLlama
) -> None:
    """Its template renders no tools: it says so in its announcement and refuses the job at
    once (error feedback), instead of running it with the tools dropped."""
    provider = start_provider(backend_url=bare_server.url)
    assert "tools" not in provider.node.announcement().features
    lm = swarm_lm(providers=(provider.pubkey,), max_tokens=20, timeout=20)
    tool = dspy.Tool(weather).format_as_litellm_function_call()
    with pytest.raises(dspy_errors.LMProviderError, match="cannot honour the job") as info:
        lm("weather?", tools=[tool])
    assert isinstance(info.value.__cause__, pylon.JobFailed)
    assert lm("plain chat still works", max_tokens=3)
    eventually(lambda: provider.node.stats.errors == 1 and provider.node.stats.done == 1)


def test_a_priced_provider_refuses_before_billing_a_job_it_cannot_honour(
    start_provider: StartProvider, swarm_lm: SwarmLM, bare_server: EmbeddedLlama, dev_wallet: LocalSwarm
) -> None:
    """No invoice for a job it would refuse: the customer pays nothing and hears why at once."""
    provider = start_provider(backend_url=bare_server.url, price_msats=1_000, wallet=dev_wallet.wallet("provider"))
    lm = swarm_lm(
        providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), auto_pay=True, timeout=20
    )
    tool = dspy.Tool(weather).format_as_litellm_function_call()
    with pytest.raises(dspy_errors.LMProviderError, match="cannot honour the job"):
        lm("weather?", tools=[tool], max_tokens=20)
    assert dev_wallet.balance("customer") == 10_000 and lm.total_spent_msats() == 0
    assert provider.node.ledger.entries("earned") == []
