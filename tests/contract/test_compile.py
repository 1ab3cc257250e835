"""``pylon.compile`` and ``pylon.score_program``: real DSPy optimizers, and scorecards that equal
an independent ``dspy.Evaluate``.

BootstrapFewShot runs against the real llama.cpp server on the tiny model; MIPROv2 (tiny
budget) against DSPy's own ``DummyLM``, which the issue names for it: MIPROv2 asks an LM to
write instructions, which the random-weight model cannot.
"""

from __future__ import annotations

import statistics
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.contract.hashing import examples_id
from dspy_pylon.contract.scoring import Rollout, rollout_program, scorecard_from
from tests.helpers import WholeAnswerAdapter

QUESTIONS = [(f"What is {i} plus {i}?", str(2 * i)) for i in range(1, 9)]


def _examples() -> list[dspy.Example]:
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in QUESTIONS]


def even_length(example: Any, prediction: Any, trace: Any = None) -> bool:
    """A metric the random-weight model passes on some examples and fails on others."""
    return len(str(prediction.get("answer", "") or "")) % 2 == 0


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(prediction.get("answer", "")).strip() == example.answer


def test_scorecard_arithmetic() -> None:
    card = scorecard_from([Rollout((1.0, 0.0, 1.0, 1.0)), Rollout((0.0, 0.0, 1.0, 1.0)), Rollout((1.0,) * 4)], "m")
    assert card.scores == (0.75, 0.5, 1.0)
    assert card.median_score == 0.75
    assert card.proxy_metrics == {"m": 0.75, "m_mean": 0.75, "m_min": 0.5, "m_max": 1.0}
    assert card.p_fail == pytest.approx(3 / 12)
    assert card.rollouts == 3 and card.examples == 4


def test_bootstrap_compile_on_llamacpp_scores_like_an_independent_evaluate(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=8, temperature=0.0)
    examples = _examples()
    train, val = examples[:4], examples[4:]
    seen: list[tuple[str, dict[str, float]]] = []
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        compiled, manifest = pylon.compile(
            dspy.Predict("question -> answer"),
            dspy.BootstrapFewShot(metric=even_length, max_bootstrapped_demos=2, max_labeled_demos=2),
            train,
            val,
            metric=even_length,
            truth_metric=exact,
            rollouts=3,
            on_optimizer_candidate=lambda cid, metrics, parent, state: seen.append((cid, dict(metrics))),
        )
        # Each rollout again, by hand: the same LM copy (rollout_id=r) answers from DSPy's cache.
        independent = [
            dspy.Evaluate(devset=val, metric=even_length, max_errors=99)(rollout_program(compiled, r)).score
            for r in range(3)
        ]
    card = manifest.scorecard
    assert card is not None and manifest.baseline_scorecard is not None
    assert [round(100 * s, 2) for s in card.scores] == independent
    assert card.median_score == pytest.approx(statistics.median(independent) / 100)
    assert card.rollouts == 3 and card.examples == len(val)
    assert set(card.truth_metrics) == {"exact", "exact_mean", "exact_min", "exact_max"}
    assert manifest.optimizer == "BootstrapFewShot"
    assert manifest.optimizer_settings["max_bootstrapped_demos"] == 2
    assert manifest.optimizer_settings["metric"] == "even_length"
    assert "trainset" not in manifest.optimizer_settings  # run state, not a setting
    assert manifest.trainset_id == examples_id(train) and manifest.valset_id == examples_id(val)
    assert manifest.trainset_size == 4 and manifest.valset_size == 4 and manifest.valset_id != manifest.trainset_id
    assert manifest.compiled_id == pylon.compiled_id_of(compiled)
    [model] = manifest.models
    assert model.model == "pylon:local:llamacpp" and model.served_model
    # The final program reaches the hook under its compiled_id.
    assert seen[-1] == (manifest.compiled_id, {"even_length": card.median_score})


def test_rollouts_are_distinct_calls_not_cache_hits(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0)
    val = _examples()[:3]
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        pylon.score_program(dspy.Predict("question -> answer"), val, even_length, rollouts=1)
        one = lm.usage().prompt_tokens
        pylon.score_program(dspy.Predict("question -> answer"), val, even_length, rollouts=2)
        two = lm.usage().prompt_tokens - one
    # Rollout 0 came from DSPy's cache the second time; rollout 1 reached the server for every example.
    assert one > 0 and two == one


def test_mipro_compile_with_a_tiny_budget() -> None:
    answers = {q: {"answer": a} for q, a in QUESTIONS}
    lm = DummyLM(answers)
    prompt_lm = DummyLM([{"proposed_instruction": "Add the number to itself.", "observation": "sums"}] * 200)
    examples = _examples()
    seen: list[tuple[str, dict[str, float], dict[str, Any]]] = []
    with dspy.context(lm=lm):
        compiled, manifest = pylon.compile(
            dspy.Predict("question -> answer"),
            dspy.MIPROv2(metric=exact, auto=None, num_candidates=2, prompt_model=prompt_lm, seed=7, verbose=False),
            examples[:4],
            examples[4:],
            metric=exact,
            rollouts=1,
            baseline=False,
            compile_kwargs={"num_trials": 2, "max_bootstrapped_demos": 1, "max_labeled_demos": 1, "minibatch": False},
            on_optimizer_candidate=lambda cid, metrics, parent, state: seen.append((cid, dict(metrics), dict(state))),
        )
        independent = dspy.Evaluate(devset=examples[4:], metric=exact)(rollout_program(compiled, 0)).score
    assert manifest.optimizer == "MIPROv2" and manifest.seed == 7
    assert manifest.baseline_scorecard is None
    assert manifest.scorecard is not None and round(100 * manifest.scorecard.median_score, 2) == independent == 100.0
    assert "prompt_model" not in manifest.optimizer_settings  # an LM is not a setting to write down
    # MIPROv2's trials reach the hook (each candidate by its compiled_id, with its score), then the result.
    assert len(seen) >= 2 and seen[-1][0] == manifest.compiled_id
    for cid, metrics, state in seen[:-1]:
        assert len(cid) == 64 and set(metrics) <= {"exact"} and state["predictors"][0]["name"] == "self"


def test_gepa_candidates_reach_the_hook_with_their_validation_scores() -> None:
    # Half the answers are wrong; the reflection LM proposes an instruction (DummyLM cannot follow it,
    # so no candidate beats the seed: the hook hears the seed candidate with GEPA's own score).
    lm = DummyLM({q: {"answer": a if i % 2 else "0"} for i, (q, a) in enumerate(QUESTIONS)})
    reflection = DummyLM([{"new_instruction": "Double the number."}] * 100, adapter=dspy.JSONAdapter())

    def graded(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        right = str(pred.get("answer")) == gold.answer
        return dspy.Prediction(score=float(right), feedback="right" if right else f"expected {gold.answer}")

    seen: list[tuple[str, dict[str, float], str | None]] = []
    examples = _examples()
    with dspy.context(lm=lm):
        compiled, manifest = pylon.compile(
            dspy.Predict("question -> answer"),
            dspy.GEPA(metric=graded, max_metric_calls=20, reflection_lm=reflection, track_stats=True, seed=3),
            examples[:4],
            examples[4:],
            metric=graded,
            rollouts=1,
            baseline=False,
            on_optimizer_candidate=lambda cid, metrics, parent, state: seen.append((cid, dict(metrics), parent)),
        )
    results = compiled.detailed_results
    assert manifest.optimizer == "GEPA" and manifest.seed == 3
    assert len(seen) == len(results.candidates) + 1  # every candidate GEPA kept, then the result
    scores = results.val_aggregate_scores
    for (cid, metrics, parent), candidate, score in zip(seen[:-1], results.candidates, scores, strict=True):
        assert cid == pylon.compiled_id_of(candidate) and metrics == {"graded": score} and parent is None
    assert seen[-1][0] == manifest.compiled_id


def test_compile_refuses_what_is_not_an_optimizer() -> None:
    with pytest.raises(pylon.ConfigError):
        pylon.compile(dspy.Predict("q -> a"), object(), _examples(), metric=exact)
    with pytest.raises(pylon.ConfigError):
        pylon.compile(dspy.Predict("q -> a"), dspy.LabeledFewShot(k=1), [], metric=exact)


def test_scoring_without_an_lm_is_a_clear_error() -> None:
    with pytest.raises(pylon.ConfigError):
        pylon.score_program(dspy.Predict("question -> answer"), _examples(), exact)


def test_a_failing_program_scores_zero_with_p_fail_one() -> None:
    # No local backend answers (closed ports): every call raises, nothing stops the evaluation.
    lm = pylon.LM("pylon:local:llamacpp", num_retries=0, timeout=2)
    with dspy.context(lm=lm):
        card = pylon.score_program(dspy.Predict("question -> answer"), _examples()[:3], exact, rollouts=2)
    assert card.median_score == 0.0 and card.p_fail == 1.0 and card.scores == (0.0, 0.0)
