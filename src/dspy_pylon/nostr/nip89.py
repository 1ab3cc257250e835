"""NIP-89 handler announcements (kind 31990): how providers advertise, as a dataclass.

The content is JSON metadata. Besides name, about, models and prices, pylon names the
encryption schemes its node reads (``"encryption": ["nip44", "nip04"]``) and also writes
the flags nostr-dvm reads (``encryptionSupported`` / ``supportsEncryption``): a customer
encrypts with NIP-44 only to a provider that names it, NIP-04 (NIP-90's scheme) otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.nostr.nip90 import is_count

ANNOUNCEMENT_KIND = 31990


def _names(value: object) -> tuple[str, ...]:
    """A short list of short names from another peer's metadata (anything else: none)."""
    if not isinstance(value, list):
        return ()
    return tuple(str(v)[:64] for v in value if isinstance(v, str))[:32]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _params_meta(models: tuple[str, ...]) -> dict[str, Any]:
    """The job params a pylon node reads, in the ``nip90Params`` shape nostr-dvm announces."""
    params: dict[str, Any] = {"model": {"required": False, "values": list(models)}}
    for name in ("max_tokens", "temperature", "top_p", "seed", "stop", "pylon_chat"):
        params[name] = {"required": False, "values": []}
    return params


@dataclass(frozen=True)
class Announcement:
    """A provider's announcement: what it serves, at what price (msats per job), where."""

    identifier: str
    kinds: tuple[int, ...]
    name: str = ""
    about: str = ""
    models: tuple[str, ...] = ()
    #: The price per job; None when the announcement names none: unknown, which is not free.
    price_msats: int | None = None
    relays: tuple[str, ...] = ()
    pubkey: str = ""
    created_at: int = 0
    #: Per-model prices (msats per job) that override ``price_msats``.
    prices: tuple[tuple[str, int], ...] = ()
    #: The chat transcript formats it reads (``pylon.chat.v1``, ``pylon.chat.v2``).
    formats: tuple[str, ...] = ()
    #: What its backend honours beyond text chat: ``json_schema``, ``json_object``, ``tools``.
    features: tuple[str, ...] = ()
    #: The encryption schemes it reads, as it names them (none named: NIP-04 at most).
    encryption: tuple[Cipher, ...] = ()
    #: What a job asking for no ``max_tokens`` gets, and the most one may ask for.
    max_tokens_default: int | None = None
    max_tokens_cap: int | None = None
    #: A sandbox node's offer (``dspy_pylon.sandbox.wire.SandboxOffer.to_meta``), as announced.
    sandbox: dict[str, Any] | None = None

    @property
    def cipher(self) -> Cipher:
        """The scheme to encrypt a job to this provider with: NIP-44 when it says it reads it."""
        return Cipher.NIP44 if Cipher.NIP44 in self.encryption else Cipher.NIP04

    def to_event(self, keys: Any) -> Any:
        """Sign the announcement with the provider's ``keys``."""
        content: dict[str, Any] = {
            "name": self.name,
            "about": self.about,
            "models": list(self.models),
            "relays": list(self.relays),
            "software": "dspy-pylon",
        }
        if self.price_msats is not None:
            content["price_msats"] = self.price_msats
        if self.max_tokens_default is not None or self.max_tokens_cap is not None:
            content["max_tokens"] = {"default": self.max_tokens_default, "max": self.max_tokens_cap}
        content["nip90Params"] = _params_meta(self.models)
        if self.sandbox is not None:
            content["sandbox"] = self.sandbox
        if self.prices:
            content["prices"] = dict(self.prices)
        if self.formats:
            content["formats"] = list(self.formats)
        if self.features:
            content["features"] = list(self.features)
        if self.encryption:
            content["encryption"] = [str(c) for c in self.encryption]
            content["encryptionSupported"] = content["supportsEncryption"] = True  # what nostr-dvm reads
        tags = [["d", self.identifier], *(["k", str(k)] for k in self.kinds)]
        return sign(ANNOUNCEMENT_KIND, json.dumps(content), tags, keys)

    @classmethod
    def from_event(cls, raw: RawEvent) -> Announcement:
        """Parse an announcement. Metadata from other software may be partial: missing fields default."""
        if raw.kind != ANNOUNCEMENT_KIND:
            raise MalformedEvent(f"kind {raw.kind} is not a handler announcement ({ANNOUNCEMENT_KIND})")
        identifier = raw.value("d")
        if not identifier:
            raise MalformedEvent("an announcement needs a 'd' tag")
        kinds = []
        for tag in raw.tags_named("k"):
            if len(tag) < 2 or not is_count(tag[1]) or len(tag[1]) > 5:
                raise MalformedEvent("a 'k' tag must hold an event kind number")
            kinds.append(int(tag[1]))
        try:
            meta = json.loads(raw.content) if raw.content.strip() else {}
        except (ValueError, RecursionError):  # huge numbers and deep nesting are not JSONDecodeError
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        models = meta.get("models")
        price = meta.get("price_msats")
        tokens = meta.get("max_tokens")
        tokens = tokens if isinstance(tokens, dict) else {}
        relays = meta.get("relays")
        prices = meta.get("prices")
        return cls(
            encryption=tuple(c for c in Cipher if c.value in _names(meta.get("encryption"))),
            formats=_names(meta.get("formats")),
            features=_names(meta.get("features")),
            identifier=identifier,
            kinds=tuple(kinds),
            name=str(meta.get("name") or meta.get("display_name") or "")[:200],
            about=str(meta.get("about") or "")[:1000],
            models=tuple(str(m) for m in models)[:100] if isinstance(models, list) else (),
            price_msats=price if _is_count(price) else None,
            max_tokens_default=tokens.get("default") if _is_count(tokens.get("default")) else None,
            max_tokens_cap=tokens.get("max") if _is_count(tokens.get("max")) else None,
            relays=tuple(str(r) for r in relays)[:20] if isinstance(relays, list) else (),
            pubkey=raw.pubkey,
            created_at=raw.created_at,
            sandbox=meta.get("sandbox") if isinstance(meta.get("sandbox"), dict) else None,
            prices=tuple(
                (str(model)[:200], value)
                for model, value in (prices.items() if isinstance(prices, dict) else ())
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0
            )[:100],
        )
