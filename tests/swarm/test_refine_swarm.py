"""pylon.Refine end to end: the local llama.cpp model first, the paid swarm as its fallback, each
attempt's route and exact cost recorded; and the cost cap stopping attempts on a priced provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.trace.graph import NodeType
from dspy_pylon.trace.recorder import TraceRecorder
from tests.helpers import WholeAnswerAdapter
from tests.swarm.conftest import RunningProvider

PRICE_MSATS = 2_000


@pytest.fixture
def paying_swarm_lm(
    local_swarm: LocalSwarm, start_provider: Callable[..., RunningProvider], swarm_lm: Callable[..., pylon.PylonLM]
) -> pylon.PylonLM:
    start_provider(price_msats=PRICE_MSATS, wallet=local_swarm.wallet("provider"))
    return swarm_lm(nwc_uri=local_swarm.account("payer", 100_000), bid_msats=3_000, auto_pay=True, max_tokens=4)


def test_local_first_then_the_paid_swarm_as_fallback(
    paying_swarm_lm: pylon.PylonLM, tiny_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACPP_URL", tiny_server.url)
    local = pylon.LM("pylon:local:llamacpp", max_tokens=4, cache=False)
    scores = iter([0.0, 0.0, 1.0])  # the local model's two attempts fall short, the swarm's passes

    def reward(inputs: dict[str, Any], prediction: Any) -> float:
        return next(scores)

    recorder = TraceRecorder()
    refine = pylon.Refine(dspy.Predict("question -> answer"), max_retries=2, reward_fn=reward, fallback=paying_swarm_lm)
    with dspy.context(lm=local, adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        result = refine.run(question="hello")
    assert result.used_fallback
    assert [(a.fallback, a.cost_msats) for a in result.attempts] == [(False, 0), (False, 0), (True, PRICE_MSATS)]
    assert result.cost_msats == paying_swarm_lm.total_spent_msats() == PRICE_MSATS
    [operator] = [n for n in recorder.graph if n.type is NodeType.REFINE]
    assert operator.attributes["used_fallback"] is True and operator.attributes["cost_msats"] == PRICE_MSATS
    # Under each attempt, the LM call went where the attempt says: llama.cpp twice, then a swarm job.
    venues = []
    for attempt in recorder.graph.children(operator.id):
        below = recorder.subgraph(attempt.id)
        venues += [(n.route or {}).get("venue") for n in below if n.type is NodeType.LM]
    assert venues == ["local", "local", "swarm"]


def test_the_cost_cap_stops_attempts_on_a_priced_provider(paying_swarm_lm: pylon.PylonLM) -> None:
    refine = pylon.Refine(
        dspy.Predict("question -> answer"),
        max_retries=5,
        reward_fn=lambda inputs, prediction: 0.0,  # never good enough: only the cap ends it
        max_cost_msats=2 * PRICE_MSATS,
    )
    with dspy.context(lm=paying_swarm_lm, adapter=WholeAnswerAdapter()), pytest.raises(pylon.RefineFailed) as failed:
        refine(question="pay twice at most")
    assert [a.cost_msats for a in failed.value.attempts] == [PRICE_MSATS, PRICE_MSATS]
    assert paying_swarm_lm.total_spent_msats() == 2 * PRICE_MSATS
