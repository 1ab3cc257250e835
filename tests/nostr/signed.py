"""Helpers of the codec tests: a key's hex public key, and a signed event as the codec sees it."""

from __future__ import annotations

from typing import Any

from dspy_pylon.nostr.events import RawEvent, from_sdk


def hex_of(keys: Any) -> str:
    return str(keys.public_key().to_hex())


def signed(event: Any) -> RawEvent:
    """A signed nostr-sdk event read back as the codec sees it (signature verified)."""
    return from_sdk(event)
