"""A plain view of a Nostr event, and the conversion from nostr-sdk's ``Event`` (the edge).

The codec works on :class:`RawEvent` so that parsing is pure and testable with any data,
including events no honest signer would produce. Signatures are checked where events
enter (:func:`from_sdk`), by nostr-sdk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspy_pylon.errors import MalformedEvent


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
    return RawEvent(
        id=event.id().to_hex(),
        pubkey=event.author().to_hex(),
        kind=int(event.kind().as_u16()),
        created_at=int(event.created_at().as_secs()),
        tags=tuple(tuple(tag.to_vec()) for tag in event.tags()),
        content=event.content(),
        json=event.as_json(),
    )


def sign(kind: int, content: str, tags: list[list[str]], keys: Any) -> Any:
    """Build and sign a nostr-sdk ``Event`` (CPU only, no I/O)."""
    import nostr_sdk

    builder = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), content).tags([nostr_sdk.Tag.parse(t) for t in tags])
    return builder.finalize(keys)
