"""Canonical JSON and content ids: pure functions, no I/O.

A value is canonicalised with RFC 8785 (JSON Canonicalization Scheme: sorted keys, no
whitespace, ECMAScript number formatting, UTF-8), so the same content hashes the same in
any process, under any ``PYTHONHASHSEED``, whatever the dict order. Ids are SHA-256 of
those bytes in lower-case hex.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import rfc8785

from dspy_pylon.plain_errors import ManifestError

#: What a JSON value may hold here (after :func:`jsonable`).
JsonValue = Any


def canonical_json(value: JsonValue) -> bytes:
    """``value`` as RFC 8785 canonical JSON bytes.

    Raises :class:`ManifestError` for what JSON cannot carry exactly: NaN and infinities,
    integers beyond ±2**53 (JSON numbers are doubles), and non-JSON types.
    """
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise ManifestError(f"cannot hash this value as canonical JSON: {exc}") from None


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hex characters."""
    return hashlib.sha256(data).hexdigest()


def content_id(value: JsonValue) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))


def jsonable(value: Any, where: str = "value") -> JsonValue:
    """``value`` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Tuples become lists; pydantic models their JSON dump; DSPy ``Example``-likes (with
    ``toDict``) their dict. Anything else raises :class:`ManifestError` naming ``where``,
    rather than hashing an unstable ``repr``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{where} is {value!r}: JSON has no such number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{where} has a key {key!r} that is not a string")
            out[key] = jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json"), where)
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict):
        return jsonable(to_dict(), where)
    raise ManifestError(f"{where} is a {type(value).__name__}, which a compiled program cannot carry as JSON")


def examples_id(examples: Iterable[Any]) -> str:
    """The id of a train or validation set: its examples in order, inputs and labels alike.

    Each DSPy ``Example`` counts with all its fields and which of them are inputs
    (``with_inputs``), so relabelling a field changes the id; reordering changes it too.
    """
    rows = []
    for i, example in enumerate(examples):
        fields = example.toDict() if callable(getattr(example, "toDict", None)) else example
        input_keys = getattr(example, "_input_keys", None)
        rows.append(
            {
                "fields": jsonable(fields, f"example {i}"),
                "inputs": sorted(input_keys) if input_keys is not None else None,
            }
        )
    return content_id({"examples": rows})
