"""``pylon.Refine``: run a module until a reward clears a threshold — retries with varied rollouts,
feedback carried into the next attempt, a fallback LM after the primary's attempts, a cost cap,
and a full report of every attempt when nothing clears the bar.

What DSPy's own ``dspy.Refine`` lacks and users asked for: a fallback LM (``pylon:local`` first,
the paid swarm after), rewards that return feedback and not only a score, an advice step run on
the module's own LM (never the global one), a cost limit, a typed failure instead of ``None``,
and no state changed on the instance (it is safe to share across threads and to deep-copy).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
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
    under the attempt's LM and hint, then the reward on what it returned (the reward sees neither).
    Made anew for each attempt, so its ``outcome`` is its own."""

    def __init__(
        self, module: Any, name: str, lm: Any, hint: str | None, reward: Callable[[Any], tuple[float, str | None]]
    ) -> None:
        super().__init__()
        self.module = module
        self.trace_name = name
        self._lm = lm
        self._hint = hint
        self._reward = reward
        self.outcome: tuple[float, str | None] | None = None

    def _context(self) -> Any:
        overrides: dict[str, Any] = {}
        if self._lm is not None:  # also reaches predictors made inside forward, and dspy.settings.lm readers
            overrides["lm"] = self._lm
        if self._hint is not None:
            overrides["adapter"] = _hinted_adapter(dspy.settings.adapter or dspy.ChatAdapter(), self._hint)
        return dspy.context(**overrides) if overrides else nullcontext()

    def _scored(self, prediction: Any) -> Any:
        self.outcome = self._reward(prediction)
        annotate(score=self.outcome[0])
        return prediction

    def forward(self, **inputs: Any) -> Any:
        with self._context():
            prediction = self.module(**inputs)
        return self._scored(prediction)

    async def aforward(self, **inputs: Any) -> Any:
        with self._context():
            if _has_aforward(self.module):
                prediction = await self.module.acall(**inputs)
            else:  # a module with only forward: on a thread (the context goes with it), not blocking the loop
                prediction = await asyncio.to_thread(self.module, **inputs)
        return self._scored(prediction)


class _Advice(dspy.Module):  # type: ignore[misc]  # dspy ships no types
    """The advice step after an attempt, named for it in a trace, on the attempt's LM."""

    def __init__(self, lm: Any, index: int) -> None:
        super().__init__()
        self.advisor = dspy.Predict(_ADVICE)
        self.advisor.set_lm(lm)
        self.trace_name = f"advice after attempt {index}"

    def forward(self, **inputs: Any) -> Any:
        return self.advisor(**inputs)

    async def aforward(self, **inputs: Any) -> Any:
        return await self.advisor.acall(**inputs)


def _has_aforward(module: Any) -> bool:
    method = getattr(type(module), "aforward", None)
    return method is not None and method is not getattr(dspy.Module, "aforward", None)


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
    made (their rewards and advice included) cost that much — a soft cap: the first attempt
    always runs, and the one that reaches it finishes. A refused payment or an exhausted budget
    stops every attempt after it. When nothing reaches the threshold: :class:`RefineFailed` with
    every attempt (``on_failure="raise"``), or the best scored prediction (``on_failure="best"``;
    when every attempt raised there is none, and it raises too).

    On the primary lane each predictor keeps its own LM; the fallback replaces them all (and
    DSPy's LM, for anything that reads it). The module is run itself, not a copy, unless a
    predictor's LM must change, so an optimizer bootstraps from its real predictors. Its settings
    save with the program when the Refine is the program; nested inside another module, DSPy
    saves only its predictors, and the Refine is built again with its settings.

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
        _check_settings(max_retries, threshold, hints, best_of_n, max_cost_msats, on_failure)
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
        predictors = [p for _, p in self.module.named_predictors()]
        own = [p.lm for p in predictors if p.lm is not None]
        # The module's own LM when all its predictors have one (DSPy's then goes unused), else DSPy's.
        primary = own[0] if own and len(own) == len(predictors) else (dspy.settings.lm or (own[0] if own else None))
        if primary is None:
            raise ConfigError("Refine needs an LM: set one on the module or with dspy.configure(lm=...)")
        for lm in (primary, *own, *([self.fallback] if self.fallback is not None else [])):
            if not callable(getattr(lm, "copy", None)):
                raise ConfigError(f"Refine varies its attempts with lm.copy(...): {_model(lm)} has none")
        lanes = [(primary, False)] * self.max_retries
        if self.fallback is not None:
            lanes += [(self.fallback, True)] * self.max_retries
        return lanes

    def _prepare(
        self, index: int, lane_index: int, lm: Any, fallback: bool, inputs: dict[str, Any], hint: str | None
    ) -> tuple[_Attempt, Any]:
        """The attempt's module and the LM it runs on (what its advice runs on, too).

        The first attempt of each lane runs as configured; later ones vary (a rollout id of their
        own and ``temperature=1.0``), so DSPy's cache does not hand back the same answer. On the
        primary lane each predictor keeps its own LM (varied); on the fallback lane every
        predictor, and anything reading DSPy's LM, gets the fallback. The module itself is run,
        not a copy, unless a predictor's LM must change: an optimizer's trace then points at the
        predictors it knows.
        """

        def vary(model: Any) -> Any:
            if lane_index == 0:
                return model
            base = model.kwargs.get("rollout_id") if isinstance(getattr(model, "kwargs", None), dict) else None
            rollout = index if base is None else f"{base}.refine{index}"  # never a scoring rollout's own id
            return model.copy(rollout_id=rollout, temperature=1.0)

        varied = vary(lm)
        own = [p for _, p in self.module.named_predictors() if p.lm is not None]
        module = self.module
        if own and (fallback or lane_index > 0):
            module = self.module.deepcopy()
            originals = [p for _, p in self.module.named_predictors()]
            for original, predictor in zip(originals, [p for _, p in module.named_predictors()], strict=True):
                if fallback:
                    predictor.lm = varied
                elif original.lm is not None:
                    predictor.lm = vary(original.lm)  # the LM itself, varied, not the deep copy's twin of it
        context_lm = None if (not fallback and lane_index == 0) else varied
        lane = "fallback" if fallback else "primary"
        attempt = _Attempt(
            module, f"attempt {index} · {lane} {_model(lm)}", context_lm, hint, lambda p: self._reward(inputs, p)
        )
        return attempt, varied

    def _reward(self, inputs: dict[str, Any], prediction: Any) -> tuple[float, str | None]:
        assert self.reward_fn is not None  # checked before the first attempt
        return _score(self.reward_fn(dict(inputs), prediction))

    @contextmanager
    def _metered(self, meter: _Meter) -> Iterator[None]:
        # The attempt's calls are counted (its reward's and advice's too), and a Refine inside it
        # reports to no one out here.
        token = _RESULT.set(None)
        try:
            with dspy.context(callbacks=[*(dspy.settings.get("callbacks", None) or []), meter]):
                yield
        finally:
            _RESULT.reset(token)

    def _advice_inputs(self, inputs: dict[str, Any], prediction: Any, score: float) -> dict[str, Any]:
        outputs = dict(prediction.items()) if hasattr(prediction, "items") else prediction
        return {
            "program_inputs": str(inputs),
            "program_outputs": str(outputs),
            "reward_value": score,
            "target_threshold": self.threshold,
        }

    def _advice(self, lm: Any, index: int, inputs: dict[str, Any], prediction: Any, score: float) -> str | None:
        # On the attempt's own LM, never DSPy's global one.
        try:
            return str(_Advice(lm, index)(**self._advice_inputs(inputs, prediction, score)).advice)
        except Exception as exc:  # advice is a help, not a requirement: the next attempt goes on without
            annotate(advice_error=type(exc).__name__)
            return None

    async def _aadvice(self, lm: Any, index: int, inputs: dict[str, Any], prediction: Any, score: float) -> str | None:
        try:
            return str((await _Advice(lm, index).acall(**self._advice_inputs(inputs, prediction, score))).advice)
        except Exception as exc:  # advice is a help, not a requirement
            annotate(advice_error=type(exc).__name__)
            return None

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
        # A soft cap: the first attempt always runs, and one running when the cap is reached finishes.
        spent = sum(a.cost_msats for a in attempts)
        return bool(attempts) and self.max_cost_msats is not None and spent >= self.max_cost_msats

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

    def _plan(self) -> list[tuple[int, int, Any, bool]]:
        """``(index, index within its lane, lm, fallback)`` for every attempt there may be."""
        plan, lane_index, last = [], 0, None
        for index, (lm, fallback) in enumerate(self._lanes(), 1):
            lane_index = lane_index + 1 if fallback == last else 0
            last = fallback
            plan.append((index, lane_index, lm, fallback))
        return plan

    def _one(
        self, step: tuple[int, int, Any, bool], inputs: dict[str, Any], hint: str | None = None
    ) -> tuple[RefineAttempt, Exception | None, _Meter, Any]:
        """Run one attempt: its record, what it raised, its meter and the LM it ran on."""
        index, lane_index, lm, fallback = step
        meter, prediction, error = _Meter(), None, None
        attempt, varied = self._prepare(index, lane_index, lm, fallback, inputs, hint)
        try:
            with self._metered(meter):
                prediction = attempt(**inputs)
        except ConfigError:
            raise
        except Exception as exc:  # the module or the reward raised: recorded, the next attempt goes on
            error = exc
        return self._attempted(index, lm, fallback, meter, attempt, prediction, error), error, meter, varied

    async def _aone(
        self, step: tuple[int, int, Any, bool], inputs: dict[str, Any], hint: str | None = None
    ) -> tuple[RefineAttempt, Exception | None, _Meter, Any]:
        """:meth:`_one`, awaited."""
        index, lane_index, lm, fallback = step
        meter, prediction, error = _Meter(), None, None
        attempt, varied = self._prepare(index, lane_index, lm, fallback, inputs, hint)
        try:
            with self._metered(meter):
                prediction = await attempt.acall(**inputs)
        except ConfigError:
            raise
        except Exception as exc:  # the module or the reward raised: recorded, the next attempt goes on
            error = exc
        return self._attempted(index, lm, fallback, meter, attempt, prediction, error), error, meter, varied

    def _parallel(self) -> bool:
        return self.best_of_n and not self.hints and self.max_cost_msats is None

    def _then(self, attempts: list[RefineAttempt], error: Exception | None, remaining: int) -> str:
        """After an attempt: ``won``, ``stop`` (a refused payment or spent budget stops every attempt
        after it, the fallback's too), ``advise`` (a hint is wanted for the next one) or ``next``."""
        done = attempts[-1]
        if done.score is not None and done.score >= self.threshold and not self.best_of_n:
            return "won"
        if error is not None and _refused_payment(error):
            return "stop"
        if self.hints and done.score is not None and remaining > 0 and not self._over_budget(attempts):
            return "advise"
        return "next"

    def _refine(self, inputs: dict[str, Any]) -> RefineResult:
        plan = self._plan()
        if self._parallel():
            # Every attempt at once, each thread in a copy of this one's context (DSPy's settings,
            # the trace's parent call).
            with ThreadPoolExecutor(max_workers=min(len(plan), MAX_PARALLEL)) as pool:
                futures = [pool.submit(contextvars.copy_context().run, self._one, step, inputs) for step in plan]
                return self._finish([future.result()[0] for future in futures], None)
        attempts: list[RefineAttempt] = []
        hint: str | None = None
        for position, step in enumerate(plan):
            if self._over_budget(attempts):
                break
            done, error, meter, varied = self._one(step, inputs, hint if self.hints else None)
            attempts.append(done)
            then = self._then(attempts, error, len(plan) - position - 1)
            if then == "won":
                return self._finish(attempts, done)
            if then == "stop":
                break
            if then == "advise":
                hint = done.feedback
                if not hint:
                    with self._metered(meter):
                        hint = self._advice(varied, step[0], inputs, done.prediction, done.score or 0.0)
                    attempts[-1] = replace(done, cost_msats=meter.cost_msats)  # the advice is the attempt's cost
        return self._finish(attempts, None)

    async def _arefine(self, inputs: dict[str, Any]) -> RefineResult:
        plan = self._plan()
        if self._parallel():
            # Each attempt a task of its own: asyncio gives each a copy of the context.
            outcomes = await asyncio.gather(*(self._aone(step, inputs) for step in plan))
            return self._finish([outcome[0] for outcome in outcomes], None)
        attempts: list[RefineAttempt] = []
        hint: str | None = None
        for position, step in enumerate(plan):
            if self._over_budget(attempts):
                break
            done, error, meter, varied = await self._aone(step, inputs, hint if self.hints else None)
            attempts.append(done)
            then = self._then(attempts, error, len(plan) - position - 1)
            if then == "won":
                return self._finish(attempts, done)
            if then == "stop":
                break
            if then == "advise":
                hint = done.feedback
                if not hint:
                    with self._metered(meter):
                        hint = await self._aadvice(varied, step[0], inputs, done.prediction, done.score or 0.0)
                    attempts[-1] = replace(done, cost_msats=meter.cost_msats)
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
        if settings is not None:
            if not isinstance(settings, Mapping):
                raise ConfigError("a saved Refine's settings are a mapping")
            values = {
                "max_retries": settings.get("max_retries", self.max_retries),
                "threshold": settings.get("threshold", self.threshold),
                "hints": settings.get("hints", self.hints),
                "best_of_n": settings.get("best_of_n", self.best_of_n),
                "max_cost_msats": settings.get("max_cost_msats", self.max_cost_msats),
                "on_failure": settings.get("on_failure", self.on_failure),
            }
            _check_settings(**values)
            self.max_retries, self.hints, self.best_of_n = values["max_retries"], values["hints"], values["best_of_n"]
            self.threshold, self.max_cost_msats = float(values["threshold"]), values["max_cost_msats"]
            self.on_failure = values["on_failure"]
            model = settings.get("fallback")
            if model is not None and not isinstance(model, str):
                raise ConfigError("a saved Refine's fallback is a model string")
            # Built again by its model string with default settings: a pylon:swarm fallback pays
            # nothing without approval (auto_pay is off); pass the LM itself for anything more.
            if isinstance(model, str) and (self.fallback is None or _model(self.fallback) != model):
                self.fallback = _lm_from_model(model)
        return self


def _check_settings(
    max_retries: Any, threshold: Any, hints: Any, best_of_n: Any, max_cost_msats: Any, on_failure: Any
) -> None:
    """Refine's settings as given or as loaded from a file: anything else is a ConfigError."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
        raise ConfigError(f"max_retries is a number of attempts (1 or more), got {max_retries!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ConfigError(f"threshold is a finite number, got {threshold!r}")
    if not isinstance(hints, bool) or not isinstance(best_of_n, bool):
        raise ConfigError("hints and best_of_n are True or False")
    if max_cost_msats is not None and (
        isinstance(max_cost_msats, bool) or not isinstance(max_cost_msats, int) or max_cost_msats < 0
    ):
        raise ConfigError(f"max_cost_msats is a whole, non-negative number of millisatoshis, got {max_cost_msats!r}")
    if on_failure not in ("raise", "best"):
        raise ConfigError(f'on_failure is "raise" or "best", got {on_failure!r}')


def _refused_payment(error: BaseException) -> bool:
    from dspy_pylon.errors import BudgetExceeded, PaymentRefused, PaymentRequired

    seen: BaseException | None = error
    for _ in range(8):  # DSPy wraps pylon's error in its own LM error: look down the chain
        if seen is None:
            return False
        if isinstance(seen, (BudgetExceeded, PaymentRefused, PaymentRequired)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _lm_from_model(model: str) -> Any:
    if model.startswith("pylon:"):
        from dspy_pylon.lm import LM

        return LM(model)
    return dspy.LM(model)
