"""pylon.Refine: the first good attempt, retries that vary, feedback and advice carried forward,
the fallback LM, a full report when nothing is good enough, errors in the module and the reward,
best-of-n, the cost cap, threads, async, copies, saving, and the trace."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.trace.graph import NodeType
from dspy_pylon.trace.recorder import TraceRecorder


class SharedDummyLM(DummyLM):
    """A DummyLM whose copies (DSPy's ``lm.copy(rollout_id=...)``) share one script, as one real
    LM's copies share one server: each attempt gets the next answer. A test double of an LM."""

    def __init__(self, answers: list[dict[str, Any]], name: str) -> None:
        super().__init__(answers)
        self.model = name
        self.copies: list[dict[str, Any]] = []  # each copy's settings

    def copy(self, **kwargs: Any) -> SharedDummyLM:
        twin: SharedDummyLM = super().copy(**kwargs)
        twin.answers, twin.history, twin.copies = self.answers, self.history, self.copies
        self.copies.append(dict(twin.kwargs))
        return twin


def answers(*words: str) -> list[dict[str, Any]]:
    return [{"answer": word} for word in words]


def good_if(word: str) -> Any:
    return lambda inputs, prediction: 1.0 if prediction.answer == word else 0.0


def qa() -> dspy.Module:
    return dspy.Predict("question -> answer")


def test_the_first_good_attempt_is_returned_and_nothing_more_is_run() -> None:
    lm = SharedDummyLM(answers("good", "never"), "primary")
    refine = pylon.Refine(qa(), max_retries=3, reward_fn=good_if("good"), threshold=1.0)
    with dspy.context(lm=lm):
        result = refine.run(question="q")
    assert result.prediction.answer == "good" and len(result.attempts) == 1 and not result.used_fallback
    assert result.met_threshold and result.attempts[0].score == 1.0 and result.attempts[0].lm == "primary"


def test_later_attempts_vary_and_the_first_that_is_good_enough_wins() -> None:
    lm = SharedDummyLM(answers("bad", "worse", "good", "never"), "primary")
    refine = pylon.Refine(qa(), max_retries=3, reward_fn=good_if("good"))
    with dspy.context(lm=lm):
        result = refine.run(question="q")
    assert [a.score for a in result.attempts] == [0.0, 0.0, 1.0] and result.prediction.answer == "good"
    # Each retry ran on a copy with its own rollout id at temperature 1.0 (no cache hit repeats the first).
    assert len(lm.history) == 3
    assert [(c.get("rollout_id"), c.get("temperature")) for c in lm.copies] == [(2, 1.0), (3, 1.0)]


def test_feedback_from_the_reward_reaches_the_next_attempt_as_a_hint() -> None:
    lm = SharedDummyLM(answers("bad", "good"), "primary")

    def reward(inputs: dict[str, Any], prediction: Any) -> tuple[float, str]:
        return (1.0, "") if prediction.answer == "good" else (0.0, "answer with the word good")

    refine = pylon.Refine(qa(), max_retries=2, reward_fn=reward, hints=True)
    with dspy.context(lm=lm):
        result = refine.run(question="q")
    assert result.prediction.answer == "good"
    first, second = (str(entry["messages"]) for entry in lm.history)
    assert "answer with the word good" not in first and "answer with the word good" in second
    assert "hint_" in second


def test_without_feedback_advice_comes_from_the_modules_own_lm_not_the_global_one() -> None:
    module_lm = SharedDummyLM([{"answer": "bad"}, {"advice": "try harder"}, {"answer": "good"}], "module-lm")
    global_lm = SharedDummyLM([], "global-lm")  # any call to it would raise StopIteration
    module = qa()
    module.set_lm(module_lm)
    refine = pylon.Refine(module, max_retries=2, reward_fn=good_if("good"), hints=True)
    with dspy.context(lm=global_lm):
        result = refine.run(question="q")
    assert result.prediction.answer == "good" and global_lm.history == []
    assert "try harder" in str(module_lm.history[-1]["messages"])


def test_the_fallback_lm_runs_after_the_primary_attempts_and_is_recorded() -> None:
    primary = SharedDummyLM(answers("bad", "bad"), "pylon:local")
    fallback = SharedDummyLM(answers("bad", "good"), "pylon:swarm")
    refine = pylon.Refine(qa(), max_retries=2, reward_fn=good_if("good")).with_fallback(fallback)
    with dspy.context(lm=primary):
        result = refine.run(question="q")
    assert result.used_fallback and result.prediction.answer == "good"
    assert [(a.lm, a.fallback) for a in result.attempts] == [
        ("pylon:local", False),
        ("pylon:local", False),
        ("pylon:swarm", True),
        ("pylon:swarm", True),
    ]


def test_when_nothing_is_good_enough_every_attempt_is_reported_or_the_best_returned() -> None:
    def scored(inputs: dict[str, Any], prediction: Any) -> tuple[float, str]:
        return {"a": 0.2, "b": 0.7, "c": 0.4}[prediction.answer], f"{prediction.answer} is not it"

    lm = SharedDummyLM(answers("a", "b", "c"), "primary")
    with dspy.context(lm=lm), pytest.raises(pylon.RefineFailed) as failed:
        pylon.Refine(qa(), max_retries=3, reward_fn=scored, threshold=0.9)(question="q")
    assert isinstance(failed.value, pylon.PylonError)
    assert [(a.score, a.feedback) for a in failed.value.attempts] == [
        (0.2, "a is not it"),
        (0.7, "b is not it"),
        (0.4, "c is not it"),
    ]
    assert "attempt 2 (primary primary): score 0.7; feedback: b is not it; 0 msats" in str(failed.value)
    lm = SharedDummyLM(answers("a", "b", "c"), "primary")
    with dspy.context(lm=lm):
        result = pylon.Refine(qa(), max_retries=3, reward_fn=scored, threshold=0.9, on_failure="best").run(question="q")
    assert result.prediction.answer == "b" and not result.met_threshold


def test_a_reward_or_a_module_that_raises_is_an_attempt_that_failed_with_its_error() -> None:
    calls = {"n": 0}

    def flaky(inputs: dict[str, Any], prediction: Any) -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("reward bug")
        return 1.0

    lm = SharedDummyLM(answers("x", "y"), "primary")
    with dspy.context(lm=lm):
        result = pylon.Refine(qa(), max_retries=2, reward_fn=flaky).run(question="q")
    assert [a.error_type for a in result.attempts] == ["ValueError", None] and result.prediction.answer == "y"

    class Broken(dspy.Module):
        def forward(self, question: str) -> Any:
            raise RuntimeError("module bug")

    with dspy.context(lm=lm), pytest.raises(pylon.RefineFailed, match="RuntimeError: module bug") as failed:
        pylon.Refine(Broken(), max_retries=2, reward_fn=good_if("x")).run(question="q")
    assert [a.error_type for a in failed.value.attempts] == ["RuntimeError", "RuntimeError"]
    with dspy.context(lm=lm), pytest.raises(pylon.RefineFailed, match="a reward is a finite number"):
        pylon.Refine(qa(), max_retries=1, reward_fn=lambda i, p: "high").run(question="q")


def test_best_of_n_runs_every_attempt_and_returns_the_best() -> None:
    lm = SharedDummyLM(answers("a", "c", "b"), "primary")
    scores = {"a": 1.0, "b": 2.0, "c": 3.0}
    refine = pylon.Refine(qa(), max_retries=3, reward_fn=lambda i, p: scores[p.answer], best_of_n=True)
    with dspy.context(lm=lm):
        result = refine.run(question="q")
    assert len(result.attempts) == 3 and result.prediction.answer == "c"


def test_bad_settings_are_config_errors() -> None:
    for kwargs in ({"max_retries": 0}, {"on_failure": "ignore"}, {"max_cost_msats": 1.5}, {"threshold": float("nan")}):
        with pytest.raises(pylon.ConfigError):
            pylon.Refine(qa(), reward_fn=good_if("x"), **kwargs)  # type: ignore[arg-type]
    with dspy.context(lm=SharedDummyLM(answers("x"), "p")), pytest.raises(pylon.ConfigError, match="reward_fn"):
        pylon.Refine(qa())(question="q")
    with pytest.raises(pylon.ConfigError, match="needs an LM"):
        pylon.Refine(qa(), reward_fn=good_if("x"))(question="q")


def test_under_evaluate_threads_each_example_refines_on_its_own_and_the_instance_is_unchanged() -> None:
    lm = DummyLM({f"q{i:02d}": {"answer": f"a{i:02d}"} for i in range(16)})
    refine = pylon.Refine(qa(), max_retries=2, reward_fn=lambda i, p: 1.0 if p.answer == "a" + i["question"][1:] else 0)
    before = refine.dump_state()
    devset = [dspy.Example(question=f"q{i:02d}", answer=f"a{i:02d}").with_inputs("question") for i in range(16)]
    with dspy.context(lm=lm):
        score = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: e.answer == p.answer, num_threads=8)(refine)
    assert score.score == 100.0 and refine.dump_state() == before


def test_async_copies_and_the_builder() -> None:
    lm = SharedDummyLM(answers("bad", "good"), "primary")
    refine = pylon.Refine(qa(), reward_fn=good_if("nothing")).with_retries(2).with_reward(good_if("good"))
    refine = refine.with_threshold(0.5)
    assert (refine.max_retries, refine.threshold) == (2, 0.5)
    twin = copy.deepcopy(refine)
    assert twin.reward_fn is refine.reward_fn and twin is not refine

    async def main() -> Any:
        with dspy.context(lm=lm):
            return await twin.arun(question="q")

    result = asyncio.run(main())
    assert result.prediction.answer == "good" and len(result.attempts) == 2


def test_settings_and_the_fallback_model_are_saved_with_the_program(tmp_path: Path) -> None:
    refine = pylon.Refine(
        qa(), max_retries=4, reward_fn=good_if("x"), threshold=0.8, fallback=pylon.LM("pylon:swarm"), hints=True
    )
    refine.save(str(tmp_path / "refine.json"))
    loaded = pylon.Refine(qa(), reward_fn=good_if("x"))
    loaded.load(str(tmp_path / "refine.json"))
    assert (loaded.max_retries, loaded.threshold, loaded.hints) == (4, 0.8, True)
    assert isinstance(loaded.fallback, pylon.PylonLM) and loaded.fallback.model == "pylon:swarm"


def test_the_trace_shows_a_refine_operator_with_one_child_per_attempt() -> None:
    primary = SharedDummyLM(answers("bad"), "pylon:local")
    fallback = SharedDummyLM(answers("good"), "pylon:swarm")
    recorder = TraceRecorder()
    refine = pylon.Refine(qa(), max_retries=1, reward_fn=good_if("good"), fallback=fallback)
    with dspy.context(lm=primary, callbacks=[recorder]):
        refine(question="q")
    [operator] = [n for n in recorder.graph if n.type is NodeType.REFINE]
    assert operator.attributes["used_fallback"] is True and operator.attributes["attempts"] == 2
    attempts = recorder.graph.children(operator.id)
    assert [a.name for a in attempts] == ["attempt 1 · primary pylon:local", "attempt 2 · fallback pylon:swarm"]
    assert [a.attributes.get("score") for a in attempts] == [0.0, 1.0]


def test_best_of_n_runs_its_attempts_at_once() -> None:
    import threading
    import time

    class Slow(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = qa()

        def forward(self, question: str) -> Any:
            time.sleep(0.2)
            return self.inner(question=question)

    lm = SharedDummyLM(answers("a", "b", "c", "d"), "primary")
    seen: set[int] = set()

    def reward(inputs: dict[str, Any], prediction: Any) -> float:
        seen.add(threading.get_ident())
        return {"a": 1.0, "b": 4.0, "c": 2.0, "d": 3.0}[prediction.answer]

    recorder = TraceRecorder()
    began = time.perf_counter()
    with dspy.context(lm=lm, callbacks=[recorder]):
        result = pylon.Refine(Slow(), max_retries=4, reward_fn=reward, best_of_n=True).run(question="q")
    assert time.perf_counter() - began < 0.6  # four 0.2 s attempts, not one after another
    assert len(seen) == 4 and result.prediction.answer == "b" and len(result.attempts) == 4
    [operator] = [n for n in recorder.graph if n.type is NodeType.REFINE]
    assert len(recorder.graph.children(operator.id)) == 4  # each thread's attempt under the operator


def test_a_refine_compiles_with_pylon_compile_and_its_predictor_is_found() -> None:
    lm = DummyLM({f"q{i}": {"answer": f"a{i}"} for i in range(4)})
    refine = pylon.Refine(qa(), max_retries=2, reward_fn=lambda i, p: 1.0)
    examples = [dspy.Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(4)]
    with dspy.context(lm=lm):
        compiled, manifest = pylon.compile(
            refine, dspy.LabeledFewShot(k=2), examples, metric=lambda e, p, t=None: e.answer == p.answer, rollouts=1
        )
    assert isinstance(compiled, pylon.Refine) and len(compiled.module.demos) == 2
    assert manifest.scorecard is not None and manifest.scorecard.median_score == 1.0


def test_on_the_primary_lane_each_predictor_keeps_its_own_lm() -> None:
    a, b = SharedDummyLM(answers("x", "x", "x"), "lm-a"), SharedDummyLM(answers("y", "y", "y"), "lm-b")
    g = SharedDummyLM([], "global")  # never called

    class Two(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = qa(), qa()
            self.first.lm, self.second.lm = a, b

        def forward(self, question: str) -> Any:
            self.first(question=question)
            return self.second(question=question)

    with dspy.context(lm=g):
        result = pylon.Refine(Two(), max_retries=2, reward_fn=lambda i, p: 0.0, on_failure="best").run(question="q")
    assert len(a.history) == len(b.history) == 2 and g.history == [] and len(result.attempts) == 2
    assert {c["rollout_id"] for c in a.copies} == {2}  # the retry varied each predictor's own LM


def test_the_fallback_reaches_predictors_made_inside_forward_and_dspys_lm() -> None:
    primary, fallback = SharedDummyLM(answers("bad"), "primary"), SharedDummyLM(answers("good"), "fallback")

    class Builds(dspy.Module):
        def forward(self, question: str) -> Any:
            return dspy.Predict("question -> answer")(question=question)  # reads DSPy's LM

    with dspy.context(lm=primary):
        result = pylon.Refine(Builds(), max_retries=1, reward_fn=good_if("good"), fallback=fallback).run(question="q")
    assert result.used_fallback and result.prediction.answer == "good" and len(fallback.history) == 1


def test_bootstrapping_through_a_refine_finds_its_real_predictor() -> None:
    lm = DummyLM({f"q{i}": {"answer": f"a{i}"} for i in range(4)})
    refine = pylon.Refine(qa(), max_retries=2, reward_fn=lambda i, p: 1.0)
    examples = [dspy.Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(4)]
    with dspy.context(lm=lm):
        optimizer = dspy.BootstrapFewShot(metric=lambda e, p, t=None: e.answer == p.answer, max_bootstrapped_demos=2)
        compiled = optimizer.compile(refine, trainset=examples)
    assert sum(1 for demo in compiled.module.demos if demo.get("augmented")) == 2  # bootstrapped, from its traces


def test_advice_is_not_asked_after_the_last_attempt_and_a_base_rollout_id_is_kept() -> None:
    lm = SharedDummyLM([{"answer": "bad"}, {"advice": "better"}, {"answer": "bad"}], "primary")
    lm.kwargs["rollout_id"] = 7
    with dspy.context(lm=lm), pytest.raises(pylon.RefineFailed):
        pylon.Refine(qa(), max_retries=2, reward_fn=good_if("good"), hints=True).run(question="q")
    assert len(lm.history) == 3  # attempt, advice, attempt: no advice after the last
    assert lm.copies[0]["rollout_id"] == "7.refine2"  # never a scoring rollout's own id


def test_the_reward_sees_neither_the_hint_nor_the_attempts_lm() -> None:
    lm = SharedDummyLM(answers("bad", "good"), "primary")
    seen: list[Any] = []

    def reward(inputs: dict[str, Any], prediction: Any) -> tuple[float, str]:
        seen.append(type(dspy.settings.adapter).__name__ if dspy.settings.adapter else None)
        return (1.0, "") if prediction.answer == "good" else (0.0, "say good")

    with dspy.context(lm=lm):
        pylon.Refine(qa(), max_retries=2, reward_fn=reward, hints=True).run(question="q")
    assert seen == [None, None]


def test_hostile_saved_settings_and_lms_without_copy_are_config_errors(tmp_path: Path) -> None:
    refine = pylon.Refine(qa(), reward_fn=good_if("x"))
    for bad in ({"max_cost_msats": "abc"}, {"hints": "false"}, {"on_failure": "ignore"}, {"max_retries": 0}):
        state = {**refine.dump_state(), "refine": {**refine.dump_state()["refine"], **bad}}
        with pytest.raises(pylon.ConfigError):
            pylon.Refine(qa(), reward_fn=good_if("x")).load_state(state)
    with pytest.raises(pylon.ConfigError):
        pylon.Refine(qa(), reward_fn=good_if("x"), max_cost_msats=-1)

    class NoCopy:
        model = "no-copy"

    with dspy.context(lm=NoCopy()), pytest.raises(pylon.ConfigError, match="copy"):
        pylon.Refine(qa(), reward_fn=good_if("x")).run(question="q")


def test_a_zero_cap_still_runs_the_first_attempt() -> None:
    lm = SharedDummyLM(answers("bad", "bad"), "primary")
    with dspy.context(lm=lm), pytest.raises(pylon.RefineFailed) as failed:
        pylon.Refine(qa(), max_retries=2, reward_fn=good_if("good"), max_cost_msats=0).run(question="q")
    assert len(failed.value.attempts) == 1


def test_arun_runs_a_module_that_has_only_forward() -> None:
    class SyncOnly(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = qa()

        def forward(self, question: str) -> Any:
            return self.inner(question=question)

    lm = SharedDummyLM(answers("bad", "good"), "primary")

    async def main() -> Any:
        with dspy.context(lm=lm):
            return await pylon.Refine(SyncOnly(), max_retries=2, reward_fn=good_if("good")).arun(question="q")

    assert asyncio.run(main()).prediction.answer == "good"


def test_an_exhausted_budget_stops_every_attempt_after_it() -> None:
    class Broke(dspy.Module):
        def forward(self, question: str) -> Any:
            raise pylon.BudgetExceeded("the budget is spent")

    fallback = SharedDummyLM(answers("good"), "fallback")
    with dspy.context(lm=SharedDummyLM([], "primary")), pytest.raises(pylon.RefineFailed) as failed:
        pylon.Refine(Broke(), max_retries=3, reward_fn=good_if("good"), fallback=fallback).run(question="q")
    assert [a.error_type for a in failed.value.attempts] == ["BudgetExceeded"] and fallback.history == []


def test_in_a_trace_advice_is_named_for_the_attempt_it_follows() -> None:
    lm = SharedDummyLM([{"answer": "bad"}, {"advice": "better"}, {"answer": "good"}], "primary")
    recorder = TraceRecorder()
    with dspy.context(lm=lm, callbacks=[recorder]):
        pylon.Refine(qa(), max_retries=2, reward_fn=good_if("good"), hints=True).run(question="q")
    [operator] = [n for n in recorder.graph if n.type is NodeType.REFINE]
    assert [c.name for c in recorder.graph.children(operator.id)] == [
        "attempt 1 · primary primary",
        "advice after attempt 1",
        "attempt 2 · primary primary",
    ]
