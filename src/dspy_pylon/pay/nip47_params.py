"""Typed readers of NIP-47 request parameters: each names the parameter and what it must be.

Pure, and total like the codec in :mod:`dspy_pylon.pay.nip47`: a value either passes or raises
:class:`~dspy_pylon.errors.MalformedEvent` saying what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.pay.nip47 import MAX_AMOUNT_MSATS

__all__ = ["param_amount", "param_hex32", "param_int", "param_str"]


def param_amount(params: Mapping[str, Any], name: str = "amount", *, required: bool = True) -> int | None:
    """A positive integer of millisatoshis (a bool is not a number here), at most 21 M BTC."""
    value = params.get(name)
    if value is None:
        if required:
            raise MalformedEvent(f"'{name}' (millisatoshis) is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"'{name}' must be an integer number of millisatoshis, got {type(value).__name__}")
    if not 0 < value <= MAX_AMOUNT_MSATS:
        raise MalformedEvent(f"'{name}' must be between 1 and {MAX_AMOUNT_MSATS} millisatoshis, got {value}")
    return value


def param_int(
    params: Mapping[str, Any], name: str, *, minimum: int, maximum: int, default: int | None = None
) -> int | None:
    """An integer in ``[minimum, maximum]``; ``default`` when absent."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"'{name}' must be an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise MalformedEvent(f"'{name}' must be between {minimum} and {maximum}, got {value}")
    return value


def param_str(params: Mapping[str, Any], name: str, *, required: bool = False, max_bytes: int = 4096) -> str | None:
    """A string of at most ``max_bytes`` UTF-8 bytes; None when absent and not ``required``."""
    value = params.get(name)
    if value is None:
        if required:
            raise MalformedEvent(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"'{name}' must be a string, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedEvent(f"'{name}' is not valid Unicode text") from None
    if size > max_bytes:
        raise MalformedEvent(f"'{name}' is {size} bytes; at most {max_bytes} are allowed")
    return value


def param_hex32(params: Mapping[str, Any], name: str) -> str | None:
    """A 32-byte value as 64 hex digits (returned lower-case), or None when absent."""
    value = param_str(params, name, max_bytes=64)
    if value is None:
        return None
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise MalformedEvent(f"'{name}' must be 64 hex digits")
    return value.lower()
