"""PylonLM on a real llama.cpp server (tiny deterministic model): routing, usage, DSPy integration."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from pathlib import Path
from typing import Any

import dspy
import httpx
import pytest
from dspy import lm15
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.usage import pylon_data
from tests.helpers import WholeAnswerAdapter


def _server_usage(url: str, text: str, max_tokens: int) -> tuple[str, int, int]:
    """What the server itself answers and counts for a one-message prompt (ground truth)."""
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0}
    data = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    return data["choices"][0]["message"]["content"], data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]


def test_call_returns_server_answer_with_real_usage_and_route(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=6, temperature=0.0, cache=False)
    [text] = lm("hello there")
    expected_text, prompt_tokens, completion_tokens = _server_usage(llamacpp_url, "hello there", 6)
    assert text == expected_text
    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] == prompt_tokens
    assert entry["usage"]["completion_tokens"] == completion_tokens == 6
    assert entry["cost"] == 0 and entry["cost_details"]["currency"] == "msat"
    route = pylon_data(entry["response"].provider_data)
    assert route["venue"] == "local" and route["backend"] == "llamacpp"
    assert route["base_url"] == llamacpp_url and route["model"].endswith("tiny.gguf")
    assert route["cost_msats"] == 0 and route["latency_ms"] > 0
    assert lm.route() == pylon.Route("local", "llamacpp", llamacpp_url, route["model"])
    usage = lm.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cost_msats) == (prompt_tokens, 6, 0)
    assert lm.total_spent_msats() == 0 and lm.remaining_budget_msats() is None


def test_budget_reports_remaining(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", budget_sats=5, max_tokens=2, cache=False)
    lm("x")
    assert lm.remaining_budget_msats() == 5000


def test_max_tokens_and_temperature_pass_through(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0, cache=False)
    lm("count")
    assert lm.history[-1]["usage"]["completion_tokens"] == 3
    lm("count", max_tokens=9)
    assert lm.history[-1]["usage"]["completion_tokens"] == 9


def test_same_prompt_same_answer_at_temperature_zero(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=8, temperature=0.0, cache=False)
    assert lm("determinism") == lm("determinism")
    assert len(lm.history) == 2 and lm.runtime.totals.calls == 2


def test_cache_hit_costs_nothing_and_skips_the_backend(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=True)
    first = lm("cache me please")
    second = lm("cache me please")
    assert first == second
    assert lm.runtime.totals.calls == 1
    hit = lm.history[-1]
    assert hit["cost"] == 0 and hit["cost_details"]["cache_hit"] is True
    assert lm.history[0]["cost_details"]["cache_hit"] is False
    assert lm.usage().completion_tokens == 4  # counted once


def test_explicit_request_returns_response(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", cache=False)
    request = lm15.Request(
        model=lm.model, messages=(lm15.Message.user("hi"),), config=lm15.Config(max_tokens=5, temperature=0.0)
    )
    response = lm(request)
    assert isinstance(response, lm15.Response)
    assert response.usage.output_tokens == 5 and response.finish_reason == "length"
    assert pylon_data(response.provider_data)["backend"] == "llamacpp"


def test_predict_and_chain_of_thought(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=12, temperature=0.0, cache=False)
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        prediction = dspy.Predict("question -> answer")(question="What is 2+2?")
        assert isinstance(prediction.answer, str) and prediction.answer
        cot = dspy.ChainOfThought("question -> answer")(question="Why?")
        assert cot.reasoning
    assert len(lm.history) == 2
    # The adapter's system prompt and the user turn both reached the server.
    messages = lm.history[0]["messages"]
    assert messages[0]["role"] == "system" and "question" in messages[-1]["content"]


def test_dspy_configure_global_lm(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, cache=False)
    dspy.configure(lm=lm, adapter=WholeAnswerAdapter())
    dspy.Predict("q -> a")(q="hello")
    assert lm.runtime.totals.calls == 1


def test_evaluate_with_eight_threads(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False)
    devset = [dspy.Example(question=f"question {i}", answer="x").with_inputs("question") for i in range(24)]
    threads: set[str] = set()

    def metric(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> float:
        threads.add(threading.current_thread().name)
        return float(bool(prediction.answer))

    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=8, display_progress=False)(
            dspy.Predict("question -> answer")
        )
    assert result.score == 100.0
    assert lm.runtime.totals.calls == 24
    assert lm.usage().completion_tokens == 24 * 4
    assert len(threads) > 1


def test_deep_copies_share_one_runtime(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=2, cache=False)
    program = dspy.Predict("q -> a")
    program.set_lm(lm)
    clone = program.deepcopy()
    clone_lm = clone.get_lm()
    assert clone_lm is not lm and clone_lm.runtime is lm.runtime
    rollout = lm.copy(rollout_id=1, temperature=1.0)
    assert rollout.runtime is lm.runtime
    copy.deepcopy(lm)("via deep copy")
    rollout("via rollout copy")
    assert lm.runtime.totals.calls == 2


def test_acall_and_concurrent_async_calls(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0, cache=False)

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(lm.acall(f"async {i}") for i in range(8)))

    results = asyncio.run(main())
    assert all(len(r) == 1 and r[0] for r in results)
    assert lm.runtime.totals.calls == 8
    # A second event loop gets its own connection pool (the first loop is closed).
    assert asyncio.run(lm.acall("again"))[0]


def test_async_predict(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=3, cache=False)

    async def main() -> dspy.Prediction:
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
            return await dspy.Predict("q -> a").acall(q="hi")

    assert asyncio.run(main()).a
    assert lm.history[-1]["cost"] == 0


def test_streamify_streams_through_the_engine(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=10, temperature=0.0, cache=False)
    program = dspy.streamify(dspy.Predict("question -> answer"))

    async def collect() -> tuple[list[object], dspy.Prediction | None]:
        chunks: list[object] = []
        final = None
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
            async for item in program(question="stream please"):
                if isinstance(item, dspy.Prediction):
                    final = item
                else:
                    chunks.append(item)
        return chunks, final

    chunks, final = asyncio.run(collect())
    assert final is not None and final.answer
    assert len(chunks) >= 10  # one chunk per token at least
    entry = lm.history[-1]
    assert entry["usage"]["completion_tokens"] == 10
    assert pylon_data(entry["response"].provider_data)["backend"] == "llamacpp"
    assert lm.usage().completion_tokens == 10


def test_from_config(llamacpp_url: str) -> None:
    config = pylon.PylonConfig.local_with("llamacpp")
    lm = pylon.PylonLM.from_config(config, max_tokens=2, cache=False)
    assert lm.model == "pylon:local:llamacpp"
    assert lm.config is config
    assert lm("x")[0]


@pytest.mark.parametrize("kwargs", [{"timeout": 5}, {"budget_sats": 1}, {"embedded_fallback": False}])
def test_settings_beside_config_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(pylon.ConfigError, match="inside config="):
        pylon.PylonLM("pylon:local", config=pylon.PylonConfig(), **kwargs)  # type: ignore[arg-type]


def test_saved_program_reloads_its_pylon_lm(llamacpp_url: str, tmp_path: Path) -> None:
    lm = pylon.LM("pylon:local:llamacpp:tiny", max_tokens=3, temperature=0.0, timeout=9, budget_sats=4, cache=False)
    program = dspy.Predict("q -> a")
    program.set_lm(lm)
    path = tmp_path / "program.json"
    program.save(str(path))
    saved = json.loads(path.read_text())
    assert saved["lm"]["pylon_config"]["venue"] == {"type": "local", "backend": "llamacpp", "embedded_fallback": True}
    loaded = dspy.Predict("q -> a")
    loaded.load(str(path), allow_unsafe_lm_state=True)
    clone = loaded.get_lm()
    assert isinstance(clone, pylon.PylonLM) and clone.config == lm.config
    assert clone.kwargs == lm.kwargs
    with dspy.context(adapter=WholeAnswerAdapter()):
        assert loaded(q="hi").a
    assert clone.history[-1]["usage"]["completion_tokens"] == 3


def test_copy_with_another_model_string_routes_to_that_model(llamacpp_url: str, tiny_server: Any) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=2, cache=False, budget_sats=5)
    other = lm.copy(model="pylon:local:llamacpp:tiny", temperature=0.0)
    assert other.model == "pylon:local:llamacpp:tiny" and other.config.model == "tiny"
    assert other.runtime is not lm.runtime
    assert other.runtime.budget is lm.runtime.budget and other.runtime.totals is lm.runtime.totals
    assert other("x")
    assert other.history[-1]["response"].provider_data["pylon"]["model"] == str(tiny_server.model_path)
    missing = lm.copy(model="pylon:local:llamacpp:not-served", num_retries=0)
    with pytest.raises(dspy_errors.LMUnsupportedModelError):
        missing("x")  # the new name is really used: it is not silently the old model
    assert lm.copy(temperature=0.5).runtime is lm.runtime


def test_model_types_other_than_chat_are_refused() -> None:
    with pytest.raises(pylon.ConfigError, match="model_type"):
        pylon.LM("pylon:local", model_type="text")
    lm = pylon.LM("pylon:local").copy(model_type="responses")
    with pytest.raises(pylon.ConfigError, match="model_type"):
        lm("x")
