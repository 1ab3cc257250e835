"""A plain view of a Nostr event, and the conversion from nostr-sdk's ``Event`` (the edge).

The codec works on :class:`RawEvent` so that parsing is pure and testable with any data,
including events no honest signer would produce. Signatures are checked where events
enter (:func:`from_sdk`), by nostr-sdk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr import fast_ffi


@dataclass(frozen=True)
class RawEvent:
    """An event's fields as plain data. ``pubkey`` is the author's hex public key."""

    id: str
    pubkey: str
    kind: int
    created_at: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    json: str = ""

    def tag(self, name: str) -> tuple[str, ...] | None:
        """The first tag named ``name`` (the whole tag, name included), or None."""
        for tag in self.tags:
            if tag and tag[0] == name:
                return tag
        return None

    def tags_named(self, name: str) -> list[tuple[str, ...]]:
        """Every tag named ``name``."""
        return [tag for tag in self.tags if tag and tag[0] == name]

    def value(self, name: str) -> str | None:
        """The first value of the first tag named ``name``, or None."""
        tag = self.tag(name)
        return tag[1] if tag is not None and len(tag) > 1 else None


def from_sdk(event: Any, *, verify: bool = True) -> RawEvent:
    """Convert a nostr-sdk ``Event``; with ``verify`` its id and signature must check out."""
    if verify and not event.verify():
        raise MalformedEvent("event id or signature does not verify")
    # One call across the FFI and a C JSON parse: each accessor (id, author, tags, each tag's
    # to_vec...) is a call of its own, ~0.05 ms apiece, four times the cost in all.
    text = event.as_json()
    data = json.loads(text)
    return RawEvent(
        id=data["id"],
        pubkey=data["pubkey"],
        kind=int(data["kind"]),
        created_at=int(data["created_at"]),
        tags=tuple(tuple(tag) for tag in data["tags"]),
        content=data["content"],
        json=text,
    )


def sign(kind: int, content: str, tags: list[list[str]], keys: Any) -> Any:
    """Build and sign a nostr-sdk ``Event`` (CPU only, no I/O); nostr-sdk computes its id and signature."""
    import nostr_sdk

    fast_ffi.ensure()
    # The unsigned event handed over as one JSON text: an EventBuilder costs a call per tag.
    unsigned = {"pubkey": keys.public_key().to_hex(), "created_at": int(time.time()), "kind": kind, "tags": tags}
    unsigned["content"] = content
    try:
        return keys.sign_event(nostr_sdk.UnsignedEvent.from_json(json.dumps(unsigned, ensure_ascii=False)))
    except nostr_sdk.NostrSdkError as exc:
        raise MalformedEvent(f"cannot build a kind-{kind} event: {exc}") from None
