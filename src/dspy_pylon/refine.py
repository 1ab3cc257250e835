"""``pylon.Refine``: run a module until a reward clears a threshold — retries with varied rollouts,
feedback carried into the next attempt, a fallback LM after the primary's attempts, a cost cap,
and a full report of every attempt when nothing clears the bar.

What DSPy's own ``dspy.Refine`` lacks and users asked for: a fallback LM (``pylon:local`` first,
the paid swarm after), rewards that return feedback and not only a score, an advice step run on
the module's own LM (never the global one), a cost limit, a typed failure instead of ``None``,
and no state changed on the instance (it is safe to share across threads and to deep-copy).
"""

from __future__ import annotations

import contextvars
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy

from dspy_pylon.callbacks import PylonCallback
from dspy_pylon.errors import ConfigError, PylonError
from dspy_pylon.trace.notes import annotate

Reward = Callable[[dict[str, Any], Any], Any]
#: Attempts run at once by best_of_n.
MAX_PARALLEL = 8
OnFailure = Literal["raise", "best"]


@dataclass(frozen=True)
class RefineAttempt:
    """One attempt: which LM ran it (its model string), whether it was the fallback, its score
    and feedback (``None`` when it failed before a score), exact cost in msats (pylon LMs; other
    LMs' cost is not known and counts 0), and the error when the module or the reward raised."""

    index: int
    lm: str
    fallback: bool
    score: float | None
    feedback: str | None
    cost_msats: int
    error_type: str | None = None
    error: str | None = None
    prediction: Any = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """One line for a report."""
        lane = "fallback" if self.fallback else "primary"
        head = f"attempt {self.index} ({lane} {self.lm}): "
        if self.error_type is not None:
            return head + f"{self.error_type}: {self.error}" + f"; {self.cost_msats} msats"
        said = f"; feedback: {self.feedback}" if self.feedback else ""
        return head + f"score {self.score}{said}; {self.cost_msats} msats"


@dataclass(frozen=True)
class RefineResult:
    """What :meth:`Refine.run` returns: the prediction chosen, every attempt, and whether the
    fallback LM produced it."""

    prediction: Any
    attempts: tuple[RefineAttempt, ...]
    used_fallback: bool
    met_threshold: bool

    @property
    def cost_msats(self) -> int:
        """What all attempts cost together."""
        return sum(a.cost_msats for a in self.attempts)


class RefineFailed(PylonError):
    """No attempt reached the threshold (with ``on_failure="raise"``): ``attempts`` lists each one's
    LM, score, feedback, cost and error."""

    def __init__(self, message: str, attempts: tuple[RefineAttempt, ...]) -> None:
        super().__init__(message)
        self.attempts = attempts


class _Meter(PylonCallback):
    """Adds up the exact cost of the LM calls made inside one attempt (registered in its context only)."""

    def __init__(self) -> None:
        self.cost_msats = 0

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        info = self.lm_call_info(call_id)
        if info is not None and info.cost_msats:
            self.cost_msats += info.cost_msats


class _Attempt(dspy.Module):  # type: ignore[misc]  # dspy ships no types
    """One attempt as a call of its own (a trace shows each under the Refine node): the module,
    then the reward on what it returned. Made anew for each attempt, so its ``outcome`` is its own."""

    def __init__(self, module: Any, name: str, reward: Callable[[Any], tuple[float, str | None]]) -> None:
        super().__init__()
        self.module = module
        self.trace_name = name
        self._reward = reward
        self.outcome: tuple[float, str | None] | None = None

    def _scored(self, prediction: Any) -> Any:
        self.outcome = self._reward(prediction)
        annotate(score=self.outcome[0])
        return prediction

    def forward(self, **inputs: Any) -> Any:
        return self._scored(self.module(**inputs))

    async def aforward(self, **inputs: Any) -> Any:
        return self._scored(await self.module.acall(**inputs))


#: Where ``Refine.run`` collects the result of the call it makes (``forward`` returns only the prediction).
_RESULT: ContextVar[list[RefineResult] | None] = ContextVar("pylon_refine_result", default=None)


_ADVICE = dspy.Signature(
    "program_inputs: str, program_outputs: str, reward_value: float, target_threshold: float -> advice: str",
    "An attempt's outputs scored below the target. Give concrete, actionable advice for the next attempt "
    "on the same inputs, so it does better.",
)


def _score(value: Any) -> tuple[float, str | None]:
    # float | (score, feedback) | Prediction(score=..., feedback=...)
    feedback = None
    if isinstance(value, tuple) and len(value) == 2:
        value, feedback = value
    elif hasattr(value, "score") and not isinstance(value, (int, float)):
        feedback = getattr(value, "feedback", None)
        value = value.score
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise TypeError(f"a reward is a finite number, (score, feedback) or a Prediction(score=...), got {value!r}")
    return float(value), None if feedback is None else str(feedback)


def _model(lm: Any) -> str:
    return str(getattr(lm, "model", None) or type(lm).__name__)


def _hinted_adapter(adapter: Any, hint: str) -> Any:
    # The hint reaches every predictor of the attempt as one more input field (as dspy.Refine does).
    base = type(adapter)

    def call(self: Any, lm: Any, lm_kwargs: Any, signature: Any, demos: Any, inputs: Any) -> Any:
        field_ = dspy.InputField(desc="A hint for this attempt, from the one before")
        return base.__call__(self, lm, lm_kwargs, signature.append("hint_", field_), demos, {**inputs, "hint_": hint})

    async def acall(self: Any, lm: Any, lm_kwargs: Any, signature: Any, demos: Any, inputs: Any) -> Any:
        field_ = dspy.InputField(desc="A hint for this attempt, from the one before")
        hinted_signature = signature.append("hint_", field_)
        return await base.acall(self, lm, lm_kwargs, hinted_signature, demos, {**inputs, "hint_": hint})

    hinted = copy.copy(adapter)
    hinted.__class__ = type(f"Hinted{base.__name__}", (base,), {"__call__": call, "acall": acall})
    return hinted


class Refine(dspy.Module):  # type: ignore[misc]  # dspy ships no types
    """Run ``module`` until ``reward_fn(inputs, prediction)`` reaches ``threshold``.

    ``max_retries`` is the number of attempts on the primary LM (the module's, else DSPy's
    configured one); then ``fallback`` (another LM, e.g. ``pylon.LM("pylon:swarm")``) gets as
    many. The first attempt runs the module as configured; later ones vary (a ``rollout_id`` and
    ``temperature=1.0``, so DSPy's cache does not return the same answer). ``reward_fn`` returns a
    float, ``(score, feedback)`` or ``dspy.Prediction(score=..., feedback=...)``; with
    ``hints=True`` the feedback — or, when the reward gives none, advice from a short step run
    on the attempt's own LM — goes into the next attempt as a ``hint_`` input. ``best_of_n=True``
    runs every attempt and returns the best (all at once on up to 8 threads, unless hints or a
    cost cap need them one after another). ``max_cost_msats`` stops further attempts once those
    made cost that much. When nothing reaches the threshold: :class:`RefineFailed` with every
    attempt (``on_failure="raise"``), or the best prediction (``on_failure="best"``).

    :meth:`run` returns the whole :class:`RefineResult`; calling the module returns the prediction.
    """

    trace_node_type = "refine"

    def __init__(
        self,
        module: Any,
        max_retries: int = 3,
        reward_fn: Reward | None = None,
        threshold: float = 1.0,
        fallback: Any = None,
        hints: bool = False,
        best_of_n: bool = False,
        max_cost_msats: int | None = None,
        on_failure: OnFailure = "raise",
    ) -> None:
        super().__init__()
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
            raise ConfigError(f"max_retries is a number of attempts (1 or more), got {max_retries!r}")
        if on_failure not in ("raise", "best"):
            raise ConfigError(f'on_failure is "raise" or "best", got {on_failure!r}')
        if max_cost_msats is not None and (isinstance(max_cost_msats, bool) or not isinstance(max_cost_msats, int)):
            raise ConfigError(f"max_cost_msats is a whole number of millisatoshis, got {max_cost_msats!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ConfigError(f"threshold is a finite number, got {threshold!r}")
        self.module = module
        self.max_retries = max_retries
        self.reward_fn = reward_fn
        self.threshold = float(threshold)
        self.fallback = fallback
        self.hints = hints
        self.best_of_n = best_of_n
        self.max_cost_msats = max_cost_msats
        self.on_failure: OnFailure = on_failure

    # ─── the builder form ───

    def _with(self, **changes: Any) -> Refine:
        other = copy.copy(self)
        other.__dict__.update(changes)
        return other

    def with_retries(self, n: int) -> Refine:
        """A copy with ``n`` attempts on the primary LM (and as many on the fallback)."""
        return Refine(self.module, n, self.reward_fn, self.threshold, self.fallback, self.hints,
                      self.best_of_n, self.max_cost_msats, self.on_failure)  # fmt: skip

    def with_reward(self, reward_fn: Reward) -> Refine:
        """A copy scoring with ``reward_fn``."""
        return self._with(reward_fn=reward_fn)

    def with_threshold(self, threshold: float) -> Refine:
        """A copy that accepts a score of ``threshold`` or more."""
        return Refine(self.module, self.max_retries, self.reward_fn, threshold, self.fallback, self.hints,
                      self.best_of_n, self.max_cost_msats, self.on_failure)  # fmt: skip

    def with_fallback(self, lm: Any) -> Refine:
        """A copy that turns to ``lm`` after the primary LM's attempts."""
        return self._with(fallback=lm)

    # ─── running ───

    def _lanes(self) -> list[tuple[Any, bool]]:
        if self.reward_fn is None:
            raise ConfigError("Refine needs a reward_fn (pass it, or use .with_reward(fn))")
        primary = self.module.get_lm() if _has_one_lm(self.module) else None
        primary = primary or dspy.settings.lm
        if primary is None:
            raise ConfigError("Refine needs an LM: set one on the module or with dspy.configure(lm=...)")
        lanes = [(primary, False)] * self.max_retries
        if self.fallback is not None:
            lanes += [(self.fallback, True)] * self.max_retries
        return lanes

    def _prepare(self, index: int, lm: Any, fallback: bool, inputs: dict[str, Any]) -> tuple[_Attempt, Any]:
        # The first attempt is the module as configured; later ones vary, so the cache does not repeat it.
        varied = lm if index == 1 else lm.copy(rollout_id=index, temperature=1.0)
        module = self.module.deepcopy()
        module.set_lm(varied)
        lane = "fallback" if fallback else "primary"
        attempt = _Attempt(module, f"attempt {index} · {lane} {_model(lm)}", lambda p: self._reward(inputs, p))
        return attempt, varied

    def _reward(self, inputs: dict[str, Any], prediction: Any) -> tuple[float, str | None]:
        assert self.reward_fn is not None  # checked before the first attempt
        return _score(self.reward_fn(dict(inputs), prediction))

    @contextmanager
    def _attempt_context(self, meter: _Meter, hint: str | None) -> Iterator[None]:
        callbacks = [*(dspy.settings.get("callbacks", None) or []), meter]
        token = _RESULT.set(None)  # a Refine inside the attempt reports to no one out here
        try:
            if hint is None:
                with dspy.context(callbacks=callbacks):
                    yield
                return
            adapter = dspy.settings.adapter or dspy.ChatAdapter()
            with dspy.context(callbacks=callbacks, adapter=_hinted_adapter(adapter, hint)):
                yield
        finally:
            _RESULT.reset(token)

    def _advice(self, lm: Any, inputs: dict[str, Any], prediction: Any, score: float) -> str | None:
        # On the attempt's own LM, never DSPy's global one.
        advisor = dspy.Predict(_ADVICE)
        advisor.set_lm(lm)
        try:
            answer = advisor(
                program_inputs=str(inputs),
                program_outputs=str(dict(prediction.items()) if hasattr(prediction, "items") else prediction),
                reward_value=score,
                target_threshold=self.threshold,
            )
        except Exception as exc:  # advice is a help, not a requirement: the next attempt goes on without
            annotate(advice_error=type(exc).__name__)
            return None
        return str(answer.advice)

    def _finish(self, attempts: list[RefineAttempt], met: RefineAttempt | None) -> RefineResult:
        scored = [a for a in attempts if a.score is not None]
        best = met or (max(scored, key=lambda a: a.score or 0.0) if scored else None)
        reached = best is not None and best.score is not None and best.score >= self.threshold
        annotate(
            attempts=len(attempts),
            used_fallback=bool(best is not None and best.fallback),
            cost_msats=sum(a.cost_msats for a in attempts),
            met_threshold=reached,
        )
        if best is None or not (reached or self.on_failure == "best"):
            lines = "\n".join(f"  {a.describe()}" for a in attempts)
            raise RefineFailed(
                f"no attempt of {len(attempts)} reached the threshold {self.threshold}:\n{lines}", tuple(attempts)
            )
        return RefineResult(best.prediction, tuple(attempts), best.fallback, reached)

    def _over_budget(self, attempts: list[RefineAttempt]) -> bool:
        return self.max_cost_msats is not None and sum(a.cost_msats for a in attempts) >= self.max_cost_msats

    def _attempted(
        self, index: int, lm: Any, fallback: bool, meter: _Meter, attempt: _Attempt, prediction: Any, error: Any
    ) -> RefineAttempt:
        score, feedback = attempt.outcome if attempt.outcome is not None and error is None else (None, None)
        return RefineAttempt(
            index,
            _model(lm),
            fallback,
            score,
            feedback,
            meter.cost_msats,
            None if error is None else type(error).__name__,
            None if error is None else str(error)[:500],
            prediction,
        )

    def _one(self, index: int, lm: Any, fallback: bool, inputs: dict[str, Any]) -> RefineAttempt:
        attempt, _ = self._prepare(index, lm, fallback, inputs)
        meter, prediction, error = _Meter(), None, None
        try:
            with self._attempt_context(meter, None):
                prediction = attempt(**inputs)
        except ConfigError:
            raise
        except Exception as exc:  # the module or the reward raised: recorded with the others
            error = exc
        return self._attempted(index, lm, fallback, meter, attempt, prediction, error)

    def _all_at_once(self, inputs: dict[str, Any]) -> RefineResult:
        # best_of_n without hints or a cost cap: every attempt at once, each thread in a copy of
        # this one's context (DSPy's settings, the trace's parent call).
        lanes = self._lanes()
        with ThreadPoolExecutor(max_workers=min(len(lanes), MAX_PARALLEL)) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, self._one, index, lm, fallback, inputs)
                for index, (lm, fallback) in enumerate(lanes, 1)
            ]
            attempts = [future.result() for future in futures]
        return self._finish(attempts, None)

    def _refine(self, inputs: dict[str, Any]) -> RefineResult:
        if self.best_of_n and not self.hints and self.max_cost_msats is None:
            return self._all_at_once(inputs)
        attempts: list[RefineAttempt] = []
        hint: str | None = None
        for index, (lm, fallback) in enumerate(self._lanes(), 1):
            if self._over_budget(attempts):
                break
            attempt, varied = self._prepare(index, lm, fallback, inputs)
            meter, prediction, error = _Meter(), None, None
            try:
                with self._attempt_context(meter, hint if self.hints else None):
                    prediction = attempt(**inputs)
            except ConfigError:
                raise
            except Exception as exc:  # the module or the reward raised: recorded, the next attempt goes on
                error = exc
            done = self._attempted(index, lm, fallback, meter, attempt, prediction, error)
            attempts.append(done)
            if done.score is not None and done.score >= self.threshold and not self.best_of_n:
                return self._finish(attempts, done)
            if self.hints and done.score is not None:
                hint = done.feedback or self._advice(varied, inputs, prediction, done.score)
        return self._finish(attempts, None)

    async def _arefine(self, inputs: dict[str, Any]) -> RefineResult:
        attempts: list[RefineAttempt] = []
        hint: str | None = None
        for index, (lm, fallback) in enumerate(self._lanes(), 1):
            if self._over_budget(attempts):
                break
            attempt, varied = self._prepare(index, lm, fallback, inputs)
            meter, prediction, error = _Meter(), None, None
            try:
                with self._attempt_context(meter, hint if self.hints else None):
                    prediction = await attempt.acall(**inputs)
            except ConfigError:
                raise
            except Exception as exc:  # the module or the reward raised: recorded, the next attempt goes on
                error = exc
            done = self._attempted(index, lm, fallback, meter, attempt, prediction, error)
            attempts.append(done)
            if done.score is not None and done.score >= self.threshold and not self.best_of_n:
                return self._finish(attempts, done)
            if self.hints and done.score is not None:
                hint = done.feedback or self._advice(varied, inputs, prediction, done.score)
        return self._finish(attempts, None)

    def forward(self, **inputs: Any) -> Any:
        """The chosen prediction (:meth:`run` has the whole report)."""
        result = self._refine(inputs)
        slot = _RESULT.get()
        if slot is not None:
            slot.append(result)
        return result.prediction

    async def aforward(self, **inputs: Any) -> Any:
        """The chosen prediction, awaited."""
        result = await self._arefine(inputs)
        slot = _RESULT.get()
        if slot is not None:
            slot.append(result)
        return result.prediction

    def run(self, **inputs: Any) -> RefineResult:
        """Run the attempts (as a call of this module, traced like one) and return the whole
        :class:`RefineResult`."""
        slot: list[RefineResult] = []
        token = _RESULT.set(slot)
        try:
            self(**inputs)
        finally:
            _RESULT.reset(token)
        return slot[0]

    async def arun(self, **inputs: Any) -> RefineResult:
        """:meth:`run`, awaited: each attempt through the module's ``acall``."""
        slot: list[RefineResult] = []
        token = _RESULT.set(slot)
        try:
            await self.acall(**inputs)
        finally:
            _RESULT.reset(token)
        return slot[0]

    # ─── saving ───

    def dump_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """DSPy's state of the module's predictors, plus Refine's settings (the fallback LM by its
        model string; the reward function is code, given again when the program is built)."""
        state: dict[str, Any] = super().dump_state(*args, **kwargs)
        state["refine"] = {
            "max_retries": self.max_retries,
            "threshold": self.threshold,
            "hints": self.hints,
            "best_of_n": self.best_of_n,
            "max_cost_msats": self.max_cost_msats,
            "on_failure": self.on_failure,
            "fallback": None if self.fallback is None else _model(self.fallback),
        }
        return state

    def load_state(self, state: Mapping[str, Any], *args: Any, **kwargs: Any) -> Refine:
        """Restore the predictors and Refine's settings; a fallback saved by model string is built
        again (``pylon:…`` through :func:`dspy_pylon.LM`, others through ``dspy.LM``)."""
        state = dict(state)
        settings = state.pop("refine", None)
        super().load_state(state, *args, **kwargs)
        if isinstance(settings, Mapping):
            self.max_retries = int(settings.get("max_retries", self.max_retries))
            self.threshold = float(settings.get("threshold", self.threshold))
            self.hints = bool(settings.get("hints", self.hints))
            self.best_of_n = bool(settings.get("best_of_n", self.best_of_n))
            self.max_cost_msats = settings.get("max_cost_msats", self.max_cost_msats)
            self.on_failure = settings.get("on_failure", self.on_failure)
            model = settings.get("fallback")
            if isinstance(model, str) and (self.fallback is None or _model(self.fallback) != model):
                self.fallback = _lm_from_model(model)
        return self


def _has_one_lm(module: Any) -> bool:
    lms = {id(p.lm) for _, p in module.named_predictors() if p.lm is not None}
    return len(lms) == 1 and all(p.lm is not None for _, p in module.named_predictors())


def _lm_from_model(model: str) -> Any:
    if model.startswith("pylon:"):
        from dspy_pylon.lm import LM

        return LM(model)
    return dspy.LM(model)
