"""NIP-90 (Data Vending Machines) as dataclasses: job requests, results and feedback.

``to_event(keys)`` signs (CPU only); ``from_event(raw)`` parses a :class:`RawEvent`
strictly and totally: anything malformed raises :class:`MalformedEvent`, never another
exception. Amounts are integer millisatoshis. The spec mixes ``_`` and ``-`` in param
names (``max_tokens`` / ``max-tokens``); both are accepted on input.

Encrypted jobs (one target provider): the ``i`` and ``param`` tags are JSON-encoded and
encrypted into ``content`` (NIP-44 or NIP-04, :mod:`dspy_pylon.nostr.ciphers`); the clear
tags keep ``p`` and ``["encrypted"]`` (plus ``bid``, ``output`` and ``relays``, which a
provider needs before decrypting). Their results and feedback are encrypted in the scheme
the request used: a result's content is the encrypted output and the details that tell
about the job (``amount``, ``model``, ``usage``, ``finish_reason``) ride in one encrypted
:data:`DETAILS_TAG`; a feedback's ``status`` (with its extra text), ``amount`` and
``["content", ...]`` are JSON-encoded tags in its encrypted content, as nostr-dvm writes
them, with a bare clear ``status`` for readers that do not decrypt.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.ciphers import Cipher, decrypt, encrypt
from dspy_pylon.nostr.events import RawEvent, sign

TEXT_GENERATION = 5050
FEEDBACK_KIND = 7000
DELETION_KIND = 5
REQUEST_KINDS = range(5000, 6000)
RESULT_KINDS = range(6000, 7000)
STATUSES = ("payment-required", "processing", "error", "success", "partial")
INPUT_TYPES = ("text", "url", "event", "job", "prompt")
NONCE_TAG = "pylon-nonce"
#: An encrypted result's details (amount, model, usage, finish reason): encrypted JSON tags.
DETAILS_TAG = "pylon-details"

_HEX64 = re.compile(r"[0-9a-f]{64}")
# ASCII digits only: str.isdigit() accepts "²" and "١", which int() then rejects or reads.
_DIGITS = re.compile(r"[0-9]{1,18}")


def is_count(value: object) -> bool:
    """Whether ``value`` is a plain non-negative decimal integer of at most 18 ASCII digits."""
    return isinstance(value, str) and _DIGITS.fullmatch(value) is not None


def is_hex64(value: object) -> bool:
    """Whether ``value`` is a 64-character lowercase hex string (event id, public key)."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _msats(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if not is_count(value):
        raise MalformedEvent(f"{what} must be a non-negative integer number of millisatoshis, got {value[:40]!r}")
    return int(value)


def _hex_tag(raw: RawEvent, name: str, what: str) -> str:
    value = raw.value(name)
    if not is_hex64(value):
        raise MalformedEvent(f"{what}: the {name!r} tag is missing or not a 64-char hex id")
    return str(value)


def _amount(raw: RawEvent) -> tuple[int | None, str | None]:
    """The ``["amount", msats, bolt11?]`` tag of a result or feedback event."""
    tag = raw.tag("amount")
    msats = _msats(tag[1] if tag and len(tag) > 1 else None, "amount")
    return msats, tag[2] if tag and len(tag) > 2 and tag[2] else None


def _amount_tag(msats: int | None, bolt11: str | None) -> list[list[str]]:
    return [] if msats is None else [["amount", str(msats), *([bolt11] if bolt11 else [])]]


def _norm_param(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class JobInput:
    """One ``["i", data, type, relay, marker]`` input."""

    data: str
    type: str = "text"
    relay: str = ""
    marker: str = ""

    def as_tag(self) -> list[str]:
        """The input as a tag."""
        tag = ["i", self.data, self.type]
        if self.relay or self.marker:
            tag += [self.relay, self.marker]
        return tag

    @classmethod
    def from_tag(cls, tag: Iterable[str]) -> JobInput:
        """Parse an ``i`` tag (``prompt`` is accepted as a text type)."""
        parts = list(tag)
        if len(parts) < 2:
            raise MalformedEvent("an 'i' tag has no data")
        kind = parts[2] if len(parts) > 2 and parts[2] else "text"
        if kind not in INPUT_TYPES:
            raise MalformedEvent(f"unknown input type {kind[:20]!r} (expected one of {', '.join(INPUT_TYPES)})")
        return cls(parts[1], kind, parts[3] if len(parts) > 3 else "", parts[4] if len(parts) > 4 else "")


def _inputs_and_params(tags: Iterable[Iterable[str]]) -> tuple[tuple[JobInput, ...], tuple[tuple[str, str], ...]]:
    inputs: list[JobInput] = []
    params: list[tuple[str, str]] = []
    for tag in tags:
        parts = list(tag)
        if not parts:
            continue
        if parts[0] == "i":
            inputs.append(JobInput.from_tag(parts))
        elif parts[0] == "param":
            if len(parts) < 3 or not parts[1]:
                raise MalformedEvent("a 'param' tag needs a name and a value")
            params.append((_norm_param(parts[1]), parts[2]))
    return tuple(inputs), tuple(params)


def _hidden_tags(keys: Any, author: str, payload: str, what: str) -> tuple[tuple[tuple[str, ...], ...], Cipher]:
    """Tags JSON-encoded into an encrypted ``payload``, and the scheme it used."""
    text, cipher = decrypt(keys, author, payload)
    try:
        hidden = json.loads(text)
    except (ValueError, RecursionError) as exc:  # huge numbers and deep nesting are not JSONDecodeError
        raise MalformedEvent(f"decrypted {what} is not JSON") from exc
    if not isinstance(hidden, list) or not all(
        isinstance(t, list) and all(isinstance(x, str) for x in t) for t in hidden
    ):
        raise MalformedEvent(f"decrypted {what} is not a list of tags")
    return tuple(tuple(t) for t in hidden), cipher


def _with_hidden(raw: RawEvent, hidden: tuple[tuple[str, ...], ...]) -> RawEvent:
    """``raw`` seen with its hidden tags first: a hidden tag wins over a clear one of its name."""
    return dataclasses.replace(raw, tags=(*hidden, *raw.tags))


@dataclass(frozen=True)
class JobRequest:
    """A job request (kind 5000-5999). ``id``, ``customer`` and ``created_at`` are set when parsed."""

    inputs: tuple[JobInput, ...]
    kind: int = TEXT_GENERATION
    params: tuple[tuple[str, str], ...] = ()
    output: str | None = None
    bid_msats: int | None = None
    relays: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    encrypted: bool = False
    #: The scheme an encrypted request is (or was) written in.
    cipher: Cipher = Cipher.NIP04
    nonce: str = ""
    id: str = ""
    customer: str = ""
    created_at: int = 0
    event_json: str = field(default="", repr=False)

    @property
    def reply_cipher(self) -> Cipher | None:
        """The scheme results and feedback on this job are encrypted in (None: in the clear)."""
        return self.cipher if self.encrypted else None

    def param(self, name: str) -> str | None:
        """The value of param ``name`` (``_`` and ``-`` spellings are the same), or None."""
        wanted = _norm_param(name)
        return next((value for key, value in self.params if _norm_param(key) == wanted), None)

    def _clear_tags(self) -> list[list[str]]:
        tags: list[list[str]] = []
        if self.output:
            tags.append(["output", self.output])
        if self.bid_msats is not None:
            tags.append(["bid", str(self.bid_msats)])
        if self.relays:
            tags.append(["relays", *self.relays])
        tags += [["p", provider] for provider in self.providers]
        if self.nonce:
            # Two identical calls in the same second would otherwise be the same event
            # (same id): relays and providers would drop the second as a duplicate.
            tags.append([NONCE_TAG, self.nonce])
        return tags

    def to_event(self, keys: Any) -> Any:
        """Sign the request with the customer's ``keys``."""
        if self.kind not in REQUEST_KINDS:
            raise ValueError(f"job request kind must be 5000-5999, got {self.kind}")
        secret = [i.as_tag() for i in self.inputs] + [["param", k, v] for k, v in self.params]
        if not self.encrypted:
            return sign(self.kind, "", secret + self._clear_tags(), keys)
        if len(self.providers) != 1:
            raise ValueError("an encrypted job targets exactly one provider")
        content = encrypt(keys, self.providers[0], json.dumps(secret), self.cipher)
        return sign(self.kind, content, [*self._clear_tags(), ["encrypted"]], keys)

    @classmethod
    def from_event(cls, raw: RawEvent, keys: Any = None) -> JobRequest:
        """Parse a job request; ``keys`` (the provider's) decrypts an encrypted one."""
        if raw.kind not in REQUEST_KINDS:
            raise MalformedEvent(f"kind {raw.kind} is not a job request (5000-5999)")
        encrypted = raw.tag("encrypted") is not None
        tags: Iterable[Iterable[str]] = raw.tags
        cipher = Cipher.NIP04
        if encrypted:
            hidden, cipher = _hidden_tags(keys, raw.pubkey, raw.content, "job content")
            tags = [*raw.tags, *hidden]
        inputs, params = _inputs_and_params(tags)
        relays_tag = raw.tag("relays")
        providers = tuple(tag[1] for tag in raw.tags_named("p") if len(tag) > 1)
        if not all(is_hex64(p) for p in providers):
            raise MalformedEvent("a 'p' tag is not a 64-char hex public key")
        return cls(
            inputs=inputs,
            kind=raw.kind,
            params=params,
            output=raw.value("output"),
            bid_msats=_msats(raw.value("bid"), "bid"),
            relays=tuple(relays_tag[1:]) if relays_tag else (),
            providers=providers,
            encrypted=encrypted,
            cipher=cipher,
            nonce=raw.value(NONCE_TAG) or "",
            id=raw.id,
            customer=raw.pubkey,
            created_at=raw.created_at,
            event_json=raw.json,
        )


@dataclass(frozen=True)
class JobResult:
    """A job result (kind = request kind + 1000). ``id``/``provider`` are set when parsed."""

    request_id: str
    customer: str
    content: str
    kind: int = TEXT_GENERATION + 1000
    request_json: str | None = None
    inputs: tuple[JobInput, ...] = ()
    amount_msats: int | None = None
    bolt11: str | None = None
    encrypted: bool = False
    #: The scheme an encrypted result is written in: the one its request used.
    cipher: Cipher = Cipher.NIP04
    relay_hint: str = ""
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    id: str = ""
    provider: str = ""
    created_at: int = 0

    def _details(self) -> list[list[str]]:
        tags = _amount_tag(self.amount_msats, self.bolt11)
        if self.model:
            tags.append(["model", self.model])
        if self.prompt_tokens is not None and self.completion_tokens is not None:
            tags.append(["usage", str(self.prompt_tokens), str(self.completion_tokens)])
        if self.finish_reason:
            tags.append(["finish_reason", self.finish_reason])
        return tags

    def to_event(self, keys: Any) -> Any:
        """Sign the result with the provider's ``keys`` (encrypting the content if asked)."""
        if self.kind not in RESULT_KINDS:
            raise ValueError(f"job result kind must be 6000-6999, got {self.kind}")
        tags: list[list[str]] = []
        if self.request_json is not None:
            tags.append(["request", self.request_json])  # an encrypted request stays encrypted in it
        tags.append(["e", self.request_id, self.relay_hint] if self.relay_hint else ["e", self.request_id])
        tags.append(["p", self.customer])
        if not self.encrypted:
            tags += [i.as_tag() for i in self.inputs] + self._details()
            return sign(self.kind, self.content, tags, keys)
        details = self._details()
        if details:
            tags.append([DETAILS_TAG, encrypt(keys, self.customer, json.dumps(details), self.cipher)])
        tags.append(["encrypted"])
        return sign(self.kind, encrypt(keys, self.customer, self.content, self.cipher), tags, keys)

    @classmethod
    def from_event(cls, raw: RawEvent, keys: Any = None) -> JobResult:
        """Parse a result; ``keys`` (the customer's) decrypts an encrypted one."""
        if raw.kind not in RESULT_KINDS:
            raise MalformedEvent(f"kind {raw.kind} is not a job result (6000-6999)")
        request_id = _hex_tag(raw, "e", "job result")
        customer = _hex_tag(raw, "p", "job result")
        encrypted = raw.tag("encrypted") is not None
        content, cipher = decrypt(keys, raw.pubkey, raw.content) if encrypted else (raw.content, Cipher.NIP04)
        details = raw.value(DETAILS_TAG)
        if encrypted and details is not None:
            raw = _with_hidden(raw, _hidden_tags(keys, raw.pubkey, details, "result details")[0])
        amount_msats, bolt11 = _amount(raw)
        usage = raw.tag("usage")
        prompt_tokens = completion_tokens = None
        if usage is not None:
            if len(usage) < 3 or not is_count(usage[1]) or not is_count(usage[2]):
                raise MalformedEvent("a 'usage' tag needs two token counts")
            prompt_tokens, completion_tokens = int(usage[1]), int(usage[2])
        e_tag = raw.tag("e") or ()
        return cls(
            request_id=request_id,
            customer=customer,
            content=content,
            kind=raw.kind,
            request_json=raw.value("request"),
            inputs=_inputs_and_params(raw.tags_named("i"))[0],
            amount_msats=amount_msats,
            bolt11=bolt11,
            encrypted=encrypted,
            cipher=cipher,
            relay_hint=e_tag[2] if len(e_tag) > 2 else "",
            model=raw.value("model"),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=raw.value("finish_reason"),
            id=raw.id,
            provider=raw.pubkey,
            created_at=raw.created_at,
        )


@dataclass(frozen=True)
class JobFeedback:
    """Job feedback (kind 7000): ``status`` is one of :data:`STATUSES`."""

    request_id: str
    customer: str
    status: str
    extra: str = ""
    amount_msats: int | None = None
    bolt11: str | None = None
    content: str = ""
    #: Feedback on an encrypted job is encrypted, in the scheme its request used.
    encrypted: bool = False
    cipher: Cipher = Cipher.NIP04
    id: str = ""
    provider: str = ""
    created_at: int = 0
    unknown_tags: tuple[tuple[str, ...], ...] = field(default=(), repr=False)

    def to_event(self, keys: Any) -> Any:
        """Sign the feedback with the provider's ``keys``."""
        if self.status not in STATUSES:
            raise ValueError(f"feedback status must be one of {STATUSES}, got {self.status!r}")
        told = [["status", self.status, *([self.extra] if self.extra else [])]]
        told += _amount_tag(self.amount_msats, self.bolt11)
        ends = [["e", self.request_id], ["p", self.customer]]
        if not self.encrypted:
            return sign(FEEDBACK_KIND, self.content, [*told, *ends], keys)
        if self.content:
            told.append(["content", self.content])
        content = encrypt(keys, self.customer, json.dumps(told), self.cipher)
        return sign(FEEDBACK_KIND, content, [["status", self.status], *ends, ["encrypted"]], keys)

    @classmethod
    def from_event(cls, raw: RawEvent, keys: Any = None) -> JobFeedback:
        """Parse a feedback event; ``keys`` (the customer's) decrypts an encrypted one."""
        if raw.kind != FEEDBACK_KIND:
            raise MalformedEvent(f"kind {raw.kind} is not job feedback (7000)")
        encrypted = raw.tag("encrypted") is not None
        content, cipher = raw.content, Cipher.NIP04
        # Which job and whom it is for come from the signed clear tags, never from hidden ones.
        request_id, customer = _hex_tag(raw, "e", "job feedback"), _hex_tag(raw, "p", "job feedback")
        if encrypted:
            hidden, cipher = _hidden_tags(keys, raw.pubkey, raw.content, "feedback")
            raw = _with_hidden(raw, hidden)
            content = next((t[1] for t in hidden if len(t) > 1 and t[0] == "content"), "")
        status_tag = raw.tag("status")
        if status_tag is None or len(status_tag) < 2 or status_tag[1] not in STATUSES:
            raise MalformedEvent(f"feedback needs a 'status' tag with one of {', '.join(STATUSES)}")
        amount_msats, bolt11 = _amount(raw)
        return cls(
            request_id=request_id,
            customer=customer,
            status=status_tag[1],
            extra=status_tag[2] if len(status_tag) > 2 else "",
            amount_msats=amount_msats,
            bolt11=bolt11,
            content=content,
            encrypted=encrypted,
            cipher=cipher,
            id=raw.id,
            provider=raw.pubkey,
            created_at=raw.created_at,
        )


def deletion_tags(event_id: str, kind: int, reason: str = "") -> tuple[list[list[str]], str]:
    """Tags and content of a NIP-09 deletion (kind 5) cancelling a job request."""
    return [["e", event_id], ["k", str(kind)]], reason
