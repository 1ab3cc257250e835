"""Canonical JSON and content ids: pure functions, no I/O.

A value is canonicalised with RFC 8785 (JSON Canonicalization Scheme: sorted keys, no
whitespace, ECMAScript number formatting, UTF-8), so the same content hashes the same in
any process, under any ``PYTHONHASHSEED``, whatever the dict order. Ids are SHA-256 of
those bytes in lower-case hex.
"""

from __future__ import annotations

import hashlib
import json
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
    if _standard_json_is_canonical(value):  # an iterative walk: no depth limit of its own
        # The C encoder writes exactly RFC 8785 here (sorted keys, no whitespace, UTF-8, the
        # same escapes with lower-case hex): 4-5x faster than the pure-Python rfc8785, which
        # stays the reference (a property test compares the two) and does every other case.
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: rfc8785 says what is wrong
            pass
        except RecursionError:
            raise ManifestError("cannot hash this value as canonical JSON: it is nested too deeply") from None
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise ManifestError(f"cannot hash this value as canonical JSON: {exc}") from None
    except RecursionError:
        raise ManifestError("cannot hash this value as canonical JSON: it is nested too deeply") from None


_SAFE_INT = 2**53 - 1


def _standard_json_is_canonical(value: JsonValue) -> bool:
    """Whether ``json.dumps`` (sorted, compact) writes ``value`` as RFC 8785 does: no floats
    (ECMAScript formats numbers differently from ``repr``), integers within ±2**53, and no
    key beyond the Basic Multilingual Plane (RFC 8785 sorts keys by UTF-16 code units)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) or item is None or item is True or item is False:
            continue
        if isinstance(item, int):
            if -_SAFE_INT <= item <= _SAFE_INT:
                continue
            return False
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str) or (not key.isascii() and max(key) > "\uffff"):
                    return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:  # floats, tuples and anything else: the reference path
            return False
    return True


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
    try:
        return _plain(value)
    except _NotJson:
        pass
    except RecursionError:
        raise ManifestError(f"{where} is nested too deeply to be carried as JSON") from None
    # Walked again, slowly, only to say where the offending value is.
    return _located(value, where)


class _NotJson(Exception):
    pass


_SCALARS = (str, int, bool, type(None))


def _plain(value: Any) -> JsonValue:
    # The fast walk (every demo of every predictor goes through it): exact type checks first.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotJson
            out[key] = _plain(item)
        return out
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind is float:
        if not math.isfinite(value):
            raise _NotJson
        return value
    converted = _converted(value)
    if converted is None:
        raise _NotJson
    return _plain(converted)


def _converted(value: Any) -> Any:
    """A value of another type as plain data, or ``None`` when it has no JSON form."""
    if isinstance(value, (str, int, float)):  # subclasses (enums...): their plain value
        for base in (bool, int, float, str):
            if isinstance(value, base):
                return base(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict):
        return to_dict()
    return None


def _located(value: Any, where: str) -> JsonValue:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ManifestError(f"{where} is {value!r}: JSON has no such number")
        return value
    if kind is dict:
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ManifestError(f"{where} has a key {key!r} that is not a string")
            out[key] = _located(item, f"{where}.{key}")
        return out
    if kind is list or kind is tuple:
        return [_located(item, f"{where}[{i}]") for i, item in enumerate(value)]
    converted = _converted(value)
    if converted is None:
        raise ManifestError(f"{where} is a {type(value).__name__}, which a compiled program cannot carry as JSON")
    return _located(converted, where)


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
