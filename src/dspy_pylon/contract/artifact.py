"""What of a DSPy program is its compiled artifact: the part that is hashed, saved and loaded.

The artifact is plain JSON: the program's class name and, for every predictor in
``named_predictors()`` order, its name and class, its signature described in full (each
field's name, role, prefix, description and type; pydantic types with their JSON Schema)
and the predictor's own saved state from DSPy (``dump_state()``: instructions, demos with
all their fields, DSPy's per-field settings) without its ``lm`` (an LM is configuration,
given again at load). No pickle, no code: loading applies the state to a fresh instance
of the same program, and the loaded program must give back the same artifact.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from dspy_pylon.contract.hashing import JsonValue, content_id, jsonable
from dspy_pylon.plain_errors import IntegrityError, ManifestError

#: The version of the artifact's shape (``program.json``'s ``schema_version``).
ARTIFACT_VERSION = 1


def program_artifact(program: Any) -> dict[str, JsonValue]:
    """The artifact of ``program`` (a ``dspy.Module``), as plain JSON."""
    predictors = []
    for name, predictor in program.named_predictors():
        state = predictor_state(predictor)
        predictors.append(
            {
                "name": name,
                "kind": type(predictor).__name__,
                "signature": describe_signature(predictor.signature),
                "state": jsonable(state, f"predictor {name!r}"),
            }
        )
    if not predictors:
        raise ManifestError(f"{type(program).__name__} has no predictors: there is nothing compiled to save")
    return {"program": type(program).__name__, "predictors": predictors}


def predictor_state(predictor: Any) -> dict[str, Any]:
    """A predictor's saved state without its LM: ``dump_state(json_mode=True)`` minus ``lm``.

    For a plain ``dspy.Predict`` the same keys are read directly: DSPy's ``dump_state``
    copies every demo into a new ``Example`` first (16 of the 40 ms a 1,000-demo program
    took to hash); a test checks both give the same state. Subclasses, which may save
    more, go through their own ``dump_state``.
    """
    import dspy

    if type(predictor) is not dspy.Predict:
        state = dict(predictor.dump_state(json_mode=True))
        state.pop("lm", None)
        return state
    state = {
        "traces": predictor.traces,
        "train": predictor.train,
        "demos": [demo.toDict() if callable(getattr(demo, "toDict", None)) else demo for demo in predictor.demos],
        "signature": predictor.signature.dump_state(),
    }
    if predictor.fields:
        state["fields"] = predictor.fields
    return state


def compiled_id(artifact: dict[str, JsonValue]) -> str:
    """The ``compiled_id`` of an artifact: SHA-256 of its RFC 8785 canonical JSON."""
    return content_id(artifact)


def structure(artifact: dict[str, JsonValue]) -> list[dict[str, JsonValue]]:
    """Each predictor's name, class and signature (the program's shape, without its learned state)."""
    return [{"name": p["name"], "kind": p["kind"], "signature": p["signature"]} for p in artifact["predictors"]]


def signature_name(program: Any) -> str:
    """The name of the program's signature (a predictor's), else of its class."""
    signature = getattr(program, "signature", None)
    name = getattr(signature, "__name__", None)
    return name if isinstance(name, str) else type(program).__name__


def describe_signature(signature: Any) -> dict[str, JsonValue]:
    """A signature's instructions and fields in order, each with role, prefix, description and type."""
    models: dict[str, JsonValue] = {}
    fields = []
    for name, field in signature.fields.items():
        extra = field.json_schema_extra or {}
        fields.append(
            {
                "name": name,
                "role": extra.get("__dspy_field_type"),
                "prefix": extra.get("prefix"),
                "description": extra.get("desc"),
                "type": describe_type(field.annotation, models),
            }
        )
    described: dict[str, JsonValue] = {
        "name": signature.__name__,
        "instructions": signature.instructions,
        "fields": fields,
    }
    if models:
        described["models"] = models
    return described


def describe_type(annotation: Any, models: dict[str, JsonValue]) -> str:
    """A stable name for a field's type: ``str``, ``list[Answer]``, ``Literal['a', 'b']``...

    Names carry no module path (a script run as ``__main__`` and the same module imported
    must agree). A pydantic model's JSON Schema goes into ``models`` under its name, so a
    change to one of its fields changes the id too.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(arg) for arg in typing.get_args(annotation)) + "]"
    if origin is not None:
        args = typing.get_args(annotation)
        head = "Union" if origin in (typing.Union, types.UnionType) else _name(origin, models)
        return head + "[" + ", ".join(describe_type(arg, models) for arg in args) + "]" if args else head
    if annotation is None or annotation is type(None):
        return "None"
    return _name(annotation, models)


def _name(annotation: Any, models: dict[str, JsonValue]) -> str:
    if isinstance(annotation, type):
        name = annotation.__qualname__
        schema = getattr(annotation, "model_json_schema", None)
        if callable(schema) and name not in models:
            models[name] = jsonable(schema(), f"the JSON Schema of {name}")
        return name
    # A typing special form or alias without an origin (Any, a TypeVar): its repr, minus the module.
    return repr(annotation).removeprefix("typing.")


def shape(predictors: list[dict[str, JsonValue]]) -> list[dict[str, JsonValue]]:
    """What must match between a saved program and the one it is loaded into: predictor names
    and classes, field names, roles and types — not the texts an optimizer rewrites
    (instructions, prefixes, descriptions), which loading restores."""
    return [
        {
            "name": p["name"],
            "kind": p["kind"],
            "fields": [(f["name"], f["role"], f["type"]) for f in p["signature"]["fields"]],
            "models": p["signature"].get("models"),
        }
        for p in predictors
    ]


def apply_artifact(program: Any, artifact: dict[str, JsonValue]) -> None:
    """Load the artifact's state into ``program`` (a fresh instance of the compiled program).

    The program's shape must be the artifact's (:func:`shape`: same predictors, same fields
    and types); otherwise :class:`IntegrityError` says what differs and ``program`` is left
    untouched.
    """
    saved = structure(artifact)
    here = [
        {"name": name, "kind": type(p).__name__, "signature": describe_signature(p.signature)}
        for name, p in program.named_predictors()
    ]
    if shape(saved) != shape(here):
        raise IntegrityError(
            "program.json was compiled from a different program: "
            f"it holds {_outline(saved)}, the program given has {_outline(here)}",
            expected=content_id(shape(saved)),
            actual=content_id(shape(here)),
        )
    state = {p["name"]: {**p["state"], "lm": None} for p in artifact["predictors"]}
    if list(state) == ["self"]:  # the program is itself a predictor: its state is not keyed by name
        state = state["self"]
    try:
        program.load_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(
            f"program.json's predictor state cannot be loaded into {type(program).__name__}: {exc}"
        ) from None


def _outline(shape: list[dict[str, JsonValue]]) -> str:
    parts = []
    for p in shape:
        sig = p["signature"]
        fields = ", ".join(f"{f['name']}: {f['type']}" for f in sig["fields"])
        parts.append(f"{p['name']} ({p['kind']}: {fields})")
    return "; ".join(parts) or "no predictors"
