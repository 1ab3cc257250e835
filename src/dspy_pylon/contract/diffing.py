"""What changed between two compiled programs: a pure comparison of their manifests and artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspy_pylon.contract.hashing import content_id
from dspy_pylon.contract.manifest import CompiledModuleManifest


@dataclass(frozen=True)
class Change:
    """One difference: ``where`` it is (``predict.instructions``, ``scorecard.median_score``...)
    and the value before and after (``None`` when absent on that side)."""

    where: str
    before: Any
    after: Any


def _predictors(artifact: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in artifact.get("predictors", [])}


def _demo_key(demo: Any) -> str:
    return content_id(demo)


def diff_programs(
    a: CompiledModuleManifest, a_artifact: dict[str, Any], b: CompiledModuleManifest, b_artifact: dict[str, Any]
) -> list[Change]:
    """Every difference from ``a`` to ``b`` that a user asks about: ids, per-predictor
    instructions, signature fields and demos (added and removed, by content), optimizer,
    sets, scores and compatibility. Empty when the two are the same compiled program and
    were scored alike."""
    changes: list[Change] = []

    def compare(where: str, before: Any, after: Any) -> None:
        if before != after:
            changes.append(Change(where, before, after))

    compare("compiled_id", a.compiled_id, b.compiled_id)
    pa, pb = _predictors(a_artifact), _predictors(b_artifact)
    for name in sorted(pa.keys() | pb.keys()):
        left, right = pa.get(name), pb.get(name)
        if left is None or right is None:
            compare(f"{name}", None if left is None else left["kind"], None if right is None else right["kind"])
            continue
        compare(f"{name}.kind", left["kind"], right["kind"])
        sig_a, sig_b = left["signature"], right["signature"]
        compare(f"{name}.instructions", sig_a.get("instructions"), sig_b.get("instructions"))
        fields_a = {f["name"]: f for f in sig_a.get("fields", [])}
        fields_b = {f["name"]: f for f in sig_b.get("fields", [])}
        for field in sorted(fields_a.keys() | fields_b.keys()):
            fa, fb = fields_a.get(field), fields_b.get(field)
            if fa is None or fb is None:
                compare(f"{name}.fields.{field}", fa, fb)
                continue
            for key in ("role", "prefix", "description", "type"):
                compare(f"{name}.fields.{field}.{key}", fa.get(key), fb.get(key))
        compare(f"{name}.models", sig_a.get("models"), sig_b.get("models"))
        demos_a = {_demo_key(d): d for d in left["state"].get("demos", [])}
        demos_b = {_demo_key(d): d for d in right["state"].get("demos", [])}
        for key in sorted(demos_a.keys() - demos_b.keys()):
            changes.append(Change(f"{name}.demos (removed)", demos_a[key], None))
        for key in sorted(demos_b.keys() - demos_a.keys()):
            changes.append(Change(f"{name}.demos (added)", None, demos_b[key]))
        if demos_a.keys() == demos_b.keys():
            order_a = [_demo_key(d) for d in left["state"].get("demos", [])]
            order_b = [_demo_key(d) for d in right["state"].get("demos", [])]
            compare(f"{name}.demos (order)", order_a, order_b)
    for key in ("optimizer", "optimizer_settings", "seed", "trainset_id", "valset_id"):
        compare(key, getattr(a, key), getattr(b, key))
    for card in ("scorecard", "baseline_scorecard"):
        sa, sb = getattr(a, card), getattr(b, card)
        if sa is None or sb is None:
            compare(card, None if sa is None else sa.median_score, None if sb is None else sb.median_score)
            continue
        compare(f"{card}.median_score", sa.median_score, sb.median_score)
        compare(f"{card}.p_fail", sa.p_fail, sb.p_fail)
        compare(f"{card}.rollouts", sa.rollouts, sb.rollouts)
        for metric in sorted(sa.proxy_metrics.keys() | sb.proxy_metrics.keys()):
            compare(f"{card}.proxy_metrics.{metric}", sa.proxy_metrics.get(metric), sb.proxy_metrics.get(metric))
        for metric in sorted(sa.truth_metrics.keys() | sb.truth_metrics.keys()):
            compare(f"{card}.truth_metrics.{metric}", sa.truth_metrics.get(metric), sb.truth_metrics.get(metric))
    compare("compatibility", a.compatibility.model_dump(mode="json"), b.compatibility.model_dump(mode="json"))
    compare("models", [m.model_dump(mode="json") for m in a.models], [m.model_dump(mode="json") for m in b.models])
    return changes
