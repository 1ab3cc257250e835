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
from dspy_pylon.plain_errors import ConfigError, IntegrityError, IntegrityProblem, ManifestError

#: The version of the artifact's shape (``program.json``'s ``schema_version``).
ARTIFACT_VERSION = 1


#: The keys of a predictor's state an artifact carries (what ``Predict.dump_state`` writes, minus
#: ``lm``): loading applies every key it gets, so nothing else is written or read.
STATE_KEYS = frozenset({"traces", "train", "demos", "signature", "fields"})


def program_artifact(program: Any) -> dict[str, JsonValue]:
    """The artifact of ``program`` (a ``dspy.Module``), as plain JSON."""
    named = getattr(program, "named_predictors", None)
    if not callable(named) or isinstance(program, type):
        raise ConfigError(f"{program!r} is not a DSPy program instance (a dspy.Module with predictors)")
    predictors = []
    for name, predictor in named():
        state = predictor_state(predictor)
        unknown = sorted(set(state) - STATE_KEYS)
        if unknown:
            raise ManifestError(
                f"predictor {name!r} ({type(predictor).__name__}) saves state a compiled program cannot carry: "
                f"{', '.join(unknown)}"
            )
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
    must agree). What a named type holds is described too, so editing it changes the id: a
    pydantic model's JSON Schema (its fields' types when it has no JSON Schema, as for
    ``dspy.Tool``), an enum's members, a dataclass's or TypedDict's fields, in ``models``.
    A type with no stable description (its repr holds a memory address) is a
    :class:`ManifestError`, never an id that changes every run.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(arg) for arg in typing.get_args(annotation)) + "]"
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        return "Annotated[" + ", ".join([describe_type(base, models), *(_metadata(m) for m in metadata)]) + "]"
    if origin is not None:
        args = typing.get_args(annotation)
        head = "Union" if origin in (typing.Union, types.UnionType) else _name(origin, models)
        return head + "[" + ", ".join(describe_type(arg, models) for arg in args) + "]" if args else head
    if annotation is None or annotation is type(None):
        return "None"
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:  # typing.NewType: its name and what it wraps
        return f"{annotation.__name__}({describe_type(supertype, models)})"
    return _name(annotation, models)


def _name(annotation: Any, models: dict[str, JsonValue]) -> str:
    if isinstance(annotation, type):
        name = annotation.__qualname__
        if annotation.__module__ == "builtins":
            return name
        content = _contents(annotation, models)
        if content is None:
            return name
        key = name
        if models.get(key, content) != content:  # two types named alike: told apart by content
            key = f"{name}@{content_id(content)[:12]}"
        models[key] = content
        return key
    text = repr(annotation).removeprefix("typing.")
    if " at 0x" in text:
        raise ManifestError(f"the field type {text} has no stable description to hash; use a named type")
    return text


def _contents(annotation: type, models: dict[str, JsonValue]) -> JsonValue:
    """What a named type holds, as JSON (``None`` for an opaque class, hashed by name only)."""
    import dataclasses
    import enum

    if issubclass(annotation, enum.Enum):
        return {"enum": [[member.name, jsonable(member.value, annotation.__qualname__)] for member in annotation]}
    schema = getattr(annotation, "model_json_schema", None)
    if callable(schema):
        try:
            return jsonable(schema(), f"the JSON Schema of {annotation.__qualname__}")
        except Exception:  # pydantic cannot write a JSON Schema for it (dspy.Tool holds a callable)
            fields = getattr(annotation, "model_fields", {})
            return {"fields": {name: describe_type(f.annotation, models) for name, f in fields.items()}}
    if dataclasses.is_dataclass(annotation):
        return {"fields": {f.name: describe_type(f.type, models) for f in dataclasses.fields(annotation)}}
    if typing.is_typeddict(annotation):
        return {"fields": {k: describe_type(v, models) for k, v in annotation.__annotations__.items()}}
    return None


def _metadata(value: Any) -> str:
    # Annotated[...] metadata (pydantic's FieldInfo, annotated-types constraints) by its settings.
    return f"{type(value).__qualname__}:{content_id(_stable(value))[:16]}"


def _stable(value: Any, depth: int = 0) -> JsonValue:
    """An object's public settings as JSON, recursively; what has none stable is refused."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return jsonable(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_stable(item, depth + 1) for item in value]
        return sorted(items, key=content_id) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(key): _stable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, type):
        return value.__qualname__
    if depth > 6 or callable(value):
        raise ManifestError(f"the field type metadata {value!r} has no stable description to hash")
    names = list(getattr(value, "__dict__", {}))
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    settings = {
        name: getattr(value, name)
        for name in sorted(set(names))
        if not name.startswith("_") and getattr(value, name, None) is not None
    }
    return {"type": type(value).__qualname__, **{k: _stable(v, depth + 1) for k, v in settings.items()}}


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
    if isinstance(program, type) or not callable(getattr(program, "named_predictors", None)):
        raise ConfigError(f"load into an instance of the program ({program!r} is not one): e.g. MyProgram()")
    saved = structure(artifact)
    here = [
        {"name": name, "kind": type(p).__name__, "signature": describe_signature(p.signature)}
        for name, p in program.named_predictors()
    ]
    if shape(saved) != shape(here):
        raise IntegrityError(
            "program.json was compiled from a different program: "
            f"it holds {_outline(saved)}, the program given has {_outline(here)}",
            reason=IntegrityProblem.SHAPE,
            expected=content_id(shape(saved)),
            actual=content_id(shape(here)),
        )
    state = {p["name"]: {**p["state"], "lm": None} for p in artifact["predictors"]}
    if list(state) == ["self"]:  # the program is itself a predictor: its state is not keyed by name
        state = state["self"]
    own_lms = {name: p.lm for name, p in program.named_predictors()}  # the program's own choices stay
    try:
        program.load_state(state)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ManifestError(
            f"program.json's predictor state cannot be loaded into {type(program).__name__}: {exc!r}"
        ) from None
    for name, predictor in program.named_predictors():
        predictor.lm = own_lms.get(name)


def _outline(shape: list[dict[str, JsonValue]]) -> str:
    parts = []
    for p in shape:
        sig = p["signature"]
        fields = ", ".join(f"{f['name']}: {f['type']}" for f in sig["fields"])
        parts.append(f"{p['name']} ({p['kind']}: {fields})")
    return "; ".join(parts) or "no predictors"
