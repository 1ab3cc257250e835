"""Scoring a program on a validation set over several rollouts: the numbers of a Scorecard.

The arithmetic is pure (:func:`scorecard_from`); :func:`score_program` runs the rollouts
with ``dspy.Evaluate``. Each rollout runs on LM copies with their own ``rollout_id``
(0, 1, ...), so DSPy's cache keeps one answer per rollout instead of returning the first
rollout's answers N times; a rollout is reproducible by evaluating with the same copy.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dspy_pylon.contract.manifest import Scorecard
from dspy_pylon.plain_errors import ConfigError

Metric = Callable[..., Any]


@dataclass(frozen=True)
class Rollout:
    """One evaluation of the program over the set: each example's metric score (0 when it raised)."""

    scores: tuple[float, ...]
    truth: tuple[float, ...] | None = None

    @property
    def mean(self) -> float:
        """The rollout's score: the mean over examples (``dspy.Evaluate``'s score / 100)."""
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def metric_name(metric: Metric) -> str:
    """How a metric is named in a scorecard: its function or class name."""
    name = getattr(metric, "__name__", None)
    return name if isinstance(name, str) else type(metric).__name__


def _summary(name: str, values: Sequence[float]) -> dict[str, float]:
    return {
        name: statistics.median(values),
        f"{name}_mean": statistics.fmean(values),
        f"{name}_min": min(values),
        f"{name}_max": max(values),
    }


def scorecard_from(rollouts: Sequence[Rollout], metric: str, truth_metric: str | None = None) -> Scorecard:
    """The scorecard of finished rollouts (pure)."""
    if not rollouts:
        raise ConfigError("a scorecard needs at least one rollout")
    means = [r.mean for r in rollouts]
    runs = [score for r in rollouts for score in r.scores]
    truth: dict[str, float] = {}
    if truth_metric is not None:
        truth_means = [sum(r.truth or ()) / len(r.truth) if r.truth else 0.0 for r in rollouts]
        truth = _summary(truth_metric, truth_means)
    return Scorecard(
        proxy_metrics=_summary(metric, means),
        truth_metrics=truth,
        rollouts=len(rollouts),
        examples=len(rollouts[0].scores),
        median_score=statistics.median(means),
        p_fail=sum(1 for s in runs if s == 0) / len(runs) if runs else 0.0,
        scores=tuple(means),
    )


def as_score(value: Any) -> float:
    """A metric's result as a number: bools count 1/0, ``dspy.Prediction(score=...)`` its score."""
    score = getattr(value, "score", value)
    if isinstance(score, bool):
        return 1.0 if score else 0.0
    try:
        return float(score)
    except (TypeError, ValueError):
        raise ConfigError(f"a metric returned {value!r}, which is not a number or a bool") from None


def rollout_program(program: Any, rollout: int) -> Any:
    """A copy of ``program`` whose every predictor calls an LM copy with ``rollout_id=rollout``."""
    import dspy

    copy = program.deepcopy()
    for _, predictor in copy.named_predictors():
        lm = predictor.lm or dspy.settings.lm
        if lm is None:
            raise ConfigError("no LM to score with: configure one (dspy.configure(lm=...)) or set predictors' lm")
        predictor.lm = lm.copy(rollout_id=rollout)
    return copy


def score_program(
    program: Any,
    devset: Sequence[Any],
    metric: Metric,
    *,
    rollouts: int = 1,
    truth_metric: Metric | None = None,
    num_threads: int | None = None,
) -> Scorecard:
    """Evaluate ``program`` on ``devset`` ``rollouts`` times and return the scorecard.

    An example that raised scores 0 (``dspy.Evaluate``'s ``failure_score``) and counts in
    ``p_fail``, as does one that scored 0; errors never stop the evaluation.
    """
    import dspy

    if rollouts < 1:
        raise ConfigError(f"rollouts must be at least 1, got {rollouts!r}")
    if not devset:
        raise ConfigError("scoring needs at least one example")
    evaluate = dspy.Evaluate(
        devset=list(devset),
        metric=metric,
        num_threads=num_threads,
        display_progress=False,
        max_errors=len(devset) + 1,
        provide_traceback=False,
        failure_score=0.0,
    )
    done = []
    for rollout in range(rollouts):
        result = evaluate(rollout_program(program, rollout))
        scores = tuple(as_score(score) for _, _, score in result.results)
        truth = None
        if truth_metric is not None:
            truth = tuple(_truth(truth_metric, example, prediction) for example, prediction, _ in result.results)
        done.append(Rollout(scores, truth))
    return scorecard_from(done, metric_name(metric), metric_name(truth_metric) if truth_metric else None)


def _truth(metric: Metric, example: Any, prediction: Any) -> float:
    try:
        return as_score(metric(example, prediction))
    except ConfigError:
        raise
    except Exception:  # a failed prediction (empty) may break a metric: it scores 0, as in Evaluate
        return 0.0
