"""``pylon.compile``: run a DSPy optimizer, score the result, and describe it in a manifest.

Any DSPy optimizer (an instance with a ``compile(student, trainset=..., ...)`` method)
runs as DSPy runs it; pylon adds the scoring (several rollouts, before and after) and the
manifest: ids of the program and of both sets, the optimizer's settings and seed, the
models, the structure. Candidates the optimizer exposes are reported to a hook.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dspy_pylon.contract.artifact import compiled_id, program_artifact
from dspy_pylon.contract.hashing import JsonValue, jsonable
from dspy_pylon.contract.loading import build_manifest
from dspy_pylon.contract.manifest import Compatibility, CompiledModuleManifest, ModelRef
from dspy_pylon.contract.scoring import Metric, metric_name, score_program
from dspy_pylon.plain_errors import ConfigError, ManifestError

#: ``on_optimizer_candidate(candidate_id, metrics, parent_id, program_state)``.
CandidateHook = Callable[[str, Mapping[str, float], str | None, Mapping[str, JsonValue]], None]


def compile(
    program: Any,
    optimizer: Any,
    trainset: Sequence[Any],
    valset: Sequence[Any] | None = None,
    *,
    metric: Metric,
    truth_metric: Metric | None = None,
    rollouts: int = 3,
    baseline: bool = True,
    num_threads: int | None = None,
    compatibility: Compatibility | None = None,
    compile_kwargs: Mapping[str, Any] | None = None,
    on_optimizer_candidate: CandidateHook | None = None,
) -> tuple[Any, CompiledModuleManifest]:
    """Optimize ``program`` with ``optimizer``, score it, and return ``(compiled, manifest)``.

    ``optimizer`` is a DSPy optimizer instance (``dspy.BootstrapFewShot(metric=...)``,
    ``dspy.MIPROv2(...)``...); it gets ``trainset`` (and ``valset`` when its ``compile``
    takes one) plus ``compile_kwargs``. The compiled program is then evaluated ``rollouts``
    times on ``valset`` (the trainset when there is none, which the manifest then says:
    ``valset_id`` equals ``trainset_id``) with ``metric`` and, when given, ``truth_metric``;
    with ``baseline`` the program before compiling is scored the same way first
    (``manifest.baseline_scorecard``). ``compatibility`` goes into the manifest as is.

    ``on_optimizer_candidate(candidate_id, metrics, parent_id, program_state)`` (and every
    registered :class:`~dspy_pylon.callbacks.PylonCallback`'s) hears each
    candidate program the optimizer exposes (GEPA's with ``track_stats=True``, with their
    parents; MIPROv2 and COPRO's ``candidate_programs``; then the final program), each
    identified by its ``compiled_id``, after the optimizer ran.
    """
    train = list(trainset)
    scoring = list(valset) if valset is not None else train
    if not train:
        raise ConfigError("compile needs a non-empty trainset")
    program_artifact(program)  # a program that cannot be saved fails now, not after the optimizer ran
    compile_fn = getattr(optimizer, "compile", None)
    if not callable(compile_fn):
        raise ConfigError(f"{type(optimizer).__name__} is not a DSPy optimizer (it has no compile method)")
    settings = optimizer_settings(optimizer)  # before compile: optimizers keep run state on themselves
    before = None
    if baseline:
        before = score_program(
            program, scoring, metric, rollouts=rollouts, truth_metric=truth_metric, num_threads=num_threads
        )
    kwargs = dict(compile_kwargs or {})
    if valset is not None and "valset" in _parameters(compile_fn):
        kwargs.setdefault("valset", list(valset))
    compiled = compile_fn(program, trainset=train, **kwargs)
    after = score_program(
        compiled, scoring, metric, rollouts=rollouts, truth_metric=truth_metric, num_threads=num_threads
    )
    registered = _registered_callbacks()
    if on_optimizer_candidate is not None or registered.callbacks:

        def every(*args: Any) -> None:
            if on_optimizer_candidate is not None:
                on_optimizer_candidate(*args)
            registered.on_optimizer_candidate(*args)  # a failing callback is logged and skipped

        report_candidates(compiled, metric_name(metric), after.median_score, every)
    manifest = build_manifest(
        compiled,
        optimizer=type(optimizer).__name__,
        optimizer_settings=settings,
        seed=_seed(optimizer, kwargs),
        trainset=train,
        valset=scoring,
        scorecard=after,
        baseline_scorecard=before,
        compatibility=compatibility,
        models=models_of(compiled),
    )
    return compiled, manifest


def _registered_callbacks() -> Any:
    """The pylon callbacks registered with DSPy, as one :class:`~dspy_pylon.callbacks.CompositeCallback`."""
    import dspy

    from dspy_pylon.callbacks import CompositeCallback, PylonCallback

    callbacks = dspy.settings.get("callbacks", None) or []
    return CompositeCallback(c for c in callbacks if isinstance(c, PylonCallback))


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _seed(optimizer: Any, kwargs: Mapping[str, Any]) -> int | None:
    for value in (kwargs.get("seed"), getattr(optimizer, "seed", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# A setting whose name says it holds a credential is never written (GEPA takes wandb_api_key).
_SECRET_NAME = re.compile(r"key|secret|token|passw|credential|auth|cookie|session", re.IGNORECASE)


def _without_secrets(value: JsonValue) -> JsonValue:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if not _SECRET_NAME.search(k)}
    if isinstance(value, list):
        return [_without_secrets(item) for item in value]
    return value


def optimizer_settings(optimizer: Any) -> dict[str, JsonValue]:
    """The optimizer's public settings that are plain data (metrics by name; LMs, programs
    and other objects left out rather than written as an unstable ``repr``; anything named
    like a key, token, password or other credential left out, nested ones too)."""
    settings: dict[str, JsonValue] = {}
    for name, value in sorted(vars(optimizer).items()):
        if name.startswith("_") or _SECRET_NAME.search(name):
            continue
        if callable(value) and name.endswith("metric"):
            settings[name] = metric_name(value)
            continue
        try:
            settings[name] = _without_secrets(jsonable(value, name))
        except ManifestError:
            continue
    return settings


def models_of(program: Any) -> tuple[ModelRef, ...]:
    """The models the program's predictors call (each predictor's LM, else DSPy's), once each."""
    import dspy

    from dspy_pylon.lm import PylonLM

    seen: dict[str, ModelRef] = {}
    for _, predictor in program.named_predictors():
        lm = predictor.lm or dspy.settings.lm
        model = getattr(lm, "model", None)
        if not isinstance(model, str) or model in seen:
            continue
        served = _served_model(lm) if isinstance(lm, PylonLM) else None
        seen[model] = ModelRef(model=model, served_model=served, gguf_sha256=gguf_digest(served))
    return tuple(seen.values())


def gguf_digest(served_model: str | None) -> str | None:
    """The SHA-256 of the served model when it is a GGUF file on this machine (llama.cpp
    servers started by pylon name their model by its path), else ``None``."""
    if not served_model or not served_model.endswith(".gguf"):
        return None
    path = Path(served_model)
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _served_model(lm: Any) -> str | None:
    # The model the last call was answered by, as the response recorded it.
    for entry in reversed(getattr(lm, "history", None) or []):
        response = entry.get("response")
        model = getattr(response, "model", None)
        if isinstance(model, str) and model:
            return model
    return None


def report_candidates(program: Any, metric: str, final_score: float, hook: CandidateHook) -> None:
    """Tell ``hook`` of every candidate ``program`` carries, then of the final program, each by
    its ``compiled_id``: GEPA's (``track_stats=True``: its ``detailed_results``, with each
    candidate's validation score and parent), MIPROv2 and COPRO's ``candidate_programs``."""
    final_state = program_artifact(program)
    final_id = compiled_id(final_state)
    for candidate_id, metrics, parent_id, state in _gepa_candidates(program, metric):
        hook(candidate_id, metrics, parent_id, state)
    for candidate in getattr(program, "candidate_programs", None) or ():
        module = candidate.get("program") if isinstance(candidate, Mapping) else None
        if module is None or not hasattr(module, "named_predictors"):
            continue
        state = program_artifact(module)
        score = candidate.get("score")
        metrics = {metric: float(score)} if isinstance(score, (int, float)) else {}
        hook(compiled_id(state), metrics, None, state)
    hook(final_id, {metric: final_score}, None, final_state)


def _gepa_candidates(program: Any, metric: str) -> list[tuple[str, dict[str, float], str | None, dict[str, JsonValue]]]:
    results = getattr(program, "detailed_results", None)
    candidates = getattr(results, "candidates", None)
    if not candidates:
        return []
    scores = list(getattr(results, "val_aggregate_scores", None) or [])
    parents = list(getattr(results, "parents", None) or [])
    states = [program_artifact(module) for module in candidates]
    ids = [compiled_id(state) for state in states]
    found = []
    for i, (candidate_id, state) in enumerate(zip(ids, states, strict=True)):
        metrics = {metric: float(scores[i])} if i < len(scores) else {}
        lineage = [p for p in (parents[i] if i < len(parents) and parents[i] else []) if isinstance(p, int)]
        parent_id = ids[lineage[0]] if lineage and lineage[0] < len(ids) else None
        found.append((candidate_id, metrics, parent_id, state))
    return found
