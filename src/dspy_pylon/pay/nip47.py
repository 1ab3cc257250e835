"""NIP-47 (Nostr Wallet Connect) codec: request parsing, responses, notifications, transactions.

Sans-IO: pure functions over dataclasses and JSON text, no network, no keys. Encryption and
signing happen at the edge (:mod:`dspy_pylon.pay.dev_wallet`). Parsing is total: anything a
client sends either parses or raises :class:`~dspy_pylon.errors.MalformedEvent` with a message
that says what is wrong.

What nostr-sdk 0.45.1's ``NostrWalletConnect`` client accepts (checked against the real client
in ``tests/pay/test_dev_wallet.py``):

* It sends requests NIP-04 encrypted, tagged only ``["p", service]`` (no ``encryption`` tag),
  and reads responses NIP-04 encrypted, matched by their ``["e", request_id]`` tag.
* An error response (``"error": {"code", "message"}``) raises ``nostr_sdk.NostrSdkError.Generic``
  whose text is ``"<message> [<CodeVariant>]"``, e.g. ``"invoice expired [PaymentFailed]"``: the
  code appears as rust-nostr's enum variant name (CamelCase), not the wire string
  (:data:`SDK_ERROR_VARIANTS`, :func:`sdk_error_code` map it back). ``str(exc)`` and
  ``exc.args[0]`` hold that text *quoted* (its Python repr); :func:`sdk_error_text` unquotes it.
  No answer within the client's timeout raises the same class with ``"response not received"``.
* ``get_balance`` needs ``balance`` (msats). ``pay_invoice`` needs ``preimage``; ``fees_paid``
  is optional. ``make_invoice`` needs ``invoice``; ``payment_hash``, ``description``,
  ``description_hash``, ``amount``, ``created_at``, ``expires_at`` are optional and extra fields
  (``type``, ``state``) are ignored. ``lookup_invoice`` needs ``payment_hash``, ``amount``,
  ``fees_paid`` and ``created_at``; ``type``/``state`` must be one of the spec's strings when
  present. ``get_info`` needs ``methods`` (strings); ``alias``, ``pubkey``, ``network``,
  ``notifications`` are optional. Timestamps are integer seconds.
* The client has no notification subscription of its own: a payee that wants
  ``payment_received`` subscribes to kind 23196/23197 ``#p`` = its client pubkey and decrypts.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dspy_pylon.errors import MalformedEvent

INFO_KIND = 13194
REQUEST_KIND = 23194
RESPONSE_KIND = 23195
NOTIFICATION_KIND_NIP04 = 23196
NOTIFICATION_KIND_NIP44 = 23197

RATE_LIMITED = "RATE_LIMITED"
NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
RESTRICTED = "RESTRICTED"
UNAUTHORIZED = "UNAUTHORIZED"
INTERNAL = "INTERNAL"
OTHER = "OTHER"
PAYMENT_FAILED = "PAYMENT_FAILED"
NOT_FOUND = "NOT_FOUND"
UNSUPPORTED_ENCRYPTION = "UNSUPPORTED_ENCRYPTION"

ERROR_CODES = frozenset(
    {
        RATE_LIMITED,
        NOT_IMPLEMENTED,
        INSUFFICIENT_BALANCE,
        QUOTA_EXCEEDED,
        RESTRICTED,
        UNAUTHORIZED,
        INTERNAL,
        OTHER,
        PAYMENT_FAILED,
        NOT_FOUND,
        UNSUPPORTED_ENCRYPTION,
    }
)

# nostr-sdk's client reports an error response as "<message> [<Variant>]" with rust-nostr's enum
# variant names; this maps them back to wire codes.
SDK_ERROR_VARIANTS: dict[str, str] = {
    "RateLimited": RATE_LIMITED,
    "NotImplemented": NOT_IMPLEMENTED,
    "InsufficientBalance": INSUFFICIENT_BALANCE,
    "QuotaExceeded": QUOTA_EXCEEDED,
    "Restricted": RESTRICTED,
    "Unauthorized": UNAUTHORIZED,
    "Internal": INTERNAL,
    "Other": OTHER,
    "PaymentFailed": PAYMENT_FAILED,
    "NotFound": NOT_FOUND,
}

PAYMENT_RECEIVED = "payment_received"
PAYMENT_SENT = "payment_sent"

NIP04 = "nip04"
NIP44_V2 = "nip44_v2"

INCOMING = "incoming"
OUTGOING = "outgoing"
PENDING = "pending"
SETTLED = "settled"
EXPIRED = "expired"
FAILED = "failed"

# 21 million bitcoin: no honest amount is larger, and every sum of two stays far below SQLite's 2**63.
MAX_AMOUNT_MSATS = 21_000_000 * 100_000_000 * 1000


@dataclass(frozen=True)
class NwcRequest:
    """A decrypted NIP-47 request: ``method`` and its ``params`` object."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class NwcError:
    """The ``error`` object of a response: a NIP-47 code and a human-readable message."""

    code: str
    message: str


@dataclass(frozen=True)
class NwcResponse:
    """A decrypted NIP-47 response: exactly one of ``result`` and ``error`` is set."""

    result_type: str
    result: dict[str, Any] | None
    error: NwcError | None


@dataclass(frozen=True)
class NwcNotification:
    """A decrypted NIP-47 notification (``payment_received``, ``payment_sent``)."""

    notification_type: str
    notification: dict[str, Any]


@dataclass(frozen=True)
class Transaction:
    """The NIP-47 transaction object (lookup_invoice, make_invoice, notifications). Amounts in msats."""

    type: str
    state: str
    invoice: str
    description: str | None
    description_hash: str | None
    preimage: str | None
    payment_hash: str
    amount: int
    fees_paid: int
    created_at: int
    expires_at: int | None
    settled_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object; absent optional fields are left out (rust-nostr reads "" as absent too)."""
        return {key: value for key, value in self.__dict__.items() if value is not None}


def _loads_object(plaintext: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(plaintext)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays exhaust the parser's stack; still just bad input.
        raise MalformedEvent(f"NIP-47 {what} is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise MalformedEvent(f"NIP-47 {what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_request(plaintext: str) -> NwcRequest:
    """Parse a decrypted request; raises :class:`MalformedEvent` (and nothing else) when malformed.

    A missing or null ``params`` reads as ``{}``: ``get_balance``/``get_info`` carry nothing and
    some clients leave the field out.
    """
    payload = _loads_object(plaintext, "request")
    method = payload.get("method")
    if not isinstance(method, str) or not method:
        raise MalformedEvent("NIP-47 request needs a non-empty string 'method'")
    params = payload.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise MalformedEvent(f"NIP-47 request 'params' must be an object, got {type(params).__name__}")
    return NwcRequest(method, params)


def result_type_for(plaintext: str) -> str:
    """The method a request names, for answering one too malformed to parse ("" when none)."""
    try:
        method = json.loads(plaintext).get("method")
    except (ValueError, RecursionError, AttributeError):
        return ""
    return method if isinstance(method, str) else ""


def request_json(method: str, params: Mapping[str, Any]) -> str:
    """A request's plaintext: ``{"method", "params": {...}}``."""
    return json.dumps({"method": method, "params": dict(params)}, separators=(",", ":"), ensure_ascii=False)


def response_json(
    result_type: str, result: Mapping[str, Any] | None = None, error: tuple[str, str] | None = None
) -> str:
    """A response's plaintext: ``{"result_type", "error": {"code", "message"} | null, "result": {...} | null}``."""
    if (result is None) == (error is None):
        raise ValueError("a NIP-47 response carries exactly one of result and error")
    body: dict[str, Any] = {
        "result_type": result_type,
        "error": None if error is None else {"code": error[0], "message": error[1]},
        "result": None if result is None else dict(result),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def parse_response(plaintext: str) -> NwcResponse:
    """Parse a decrypted response; raises :class:`MalformedEvent` when malformed."""
    payload = _loads_object(plaintext, "response")
    result_type = payload.get("result_type")
    if not isinstance(result_type, str):
        raise MalformedEvent("NIP-47 response needs a string 'result_type'")
    result = payload.get("result")
    error = payload.get("error")
    if result is not None and not isinstance(result, dict):
        raise MalformedEvent("NIP-47 response 'result' must be an object or null")
    parsed_error = None
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise MalformedEvent("NIP-47 response 'error' must be an object with a string 'code'")
        message = error.get("message")
        parsed_error = NwcError(error["code"], message if isinstance(message, str) else "")
    if (result is None) == (parsed_error is None):
        raise MalformedEvent("NIP-47 response must carry exactly one of 'result' and 'error'")
    return NwcResponse(result_type, result, parsed_error)


def notification_json(notification_type: str, notification: Mapping[str, Any]) -> str:
    """A notification's plaintext: ``{"notification_type", "notification": {...}}``."""
    body = {"notification_type": notification_type, "notification": dict(notification)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def parse_notification(plaintext: str) -> NwcNotification:
    """Parse a decrypted notification; raises :class:`MalformedEvent` when malformed."""
    payload = _loads_object(plaintext, "notification")
    kind = payload.get("notification_type")
    body = payload.get("notification")
    if not isinstance(kind, str) or not isinstance(body, dict):
        raise MalformedEvent("NIP-47 notification needs a string 'notification_type' and an object 'notification'")
    return NwcNotification(kind, body)


def transaction_json(transaction: Transaction) -> str:
    """The transaction object as JSON text."""
    return json.dumps(transaction.to_dict(), separators=(",", ":"), ensure_ascii=False)


def sdk_error_text(error: BaseException) -> str:
    """The text of a nostr-sdk error without the quotes its ``str()`` adds (``"<message> [<Variant>]"``)."""
    values = getattr(error, "_values", None)
    if isinstance(values, tuple) and values and isinstance(values[0], str):
        return values[0]
    text = str(error)
    try:
        unquoted = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    return unquoted if isinstance(unquoted, str) else text


def sdk_error_code(error_text: str) -> str | None:
    """The wire code in nostr-sdk's error text ``"<message> [<Variant>]"`` (quoted or not), or None."""
    text = error_text.rstrip().rstrip("'\"")
    if not text.endswith("]") or "[" not in text:
        return None
    variant = text[text.rindex("[") + 1 : -1]
    return SDK_ERROR_VARIANTS.get(variant)


# Event tags (tuples of strings, as in RawEvent).


def request_encryption(tags: Iterable[Sequence[str]]) -> str:
    """The scheme a request uses: ``nip04`` unless it carries ``["encryption", "nip44_v2"]``.

    Several schemes in one tag (space-separated) pick NIP-44 when offered. Returns the tag's text
    for an unknown scheme, so the caller can refuse it.
    """
    for tag in tags:
        if len(tag) >= 2 and tag[0] == "encryption":
            schemes = tag[1].split()
            if NIP44_V2 in schemes:
                return NIP44_V2
            if NIP04 in schemes:
                return NIP04
            return tag[1]
    return NIP04


def is_expired(tags: Iterable[Sequence[str]], now: float) -> bool:
    """True when an ``expiration`` tag is in the past, or unreadable (a request must not outlive it)."""
    for tag in tags:
        if tag and tag[0] == "expiration":
            if len(tag) < 2:
                return True
            try:
                return int(tag[1]) <= now
            except ValueError:
                return True
    return False


def info_content(methods: Sequence[str], notifications: Sequence[str]) -> str:
    """The info event's content: supported methods, and ``notifications`` when any are sent."""
    return " ".join([*methods, "notifications"] if notifications else methods)


def info_tags(notifications: Sequence[str], encryptions: Sequence[str]) -> list[list[str]]:
    """The info event's tags: ``["encryption", "nip04 nip44_v2"]``, ``["notifications", "..."]``."""
    tags = [["encryption", " ".join(encryptions)]]
    if notifications:
        tags.append(["notifications", " ".join(notifications)])
    return tags


__all__ = [
    "ERROR_CODES",
    "EXPIRED",
    "FAILED",
    "INCOMING",
    "INFO_KIND",
    "INSUFFICIENT_BALANCE",
    "INTERNAL",
    "MAX_AMOUNT_MSATS",
    "NIP04",
    "NIP44_V2",
    "NOTIFICATION_KIND_NIP04",
    "NOTIFICATION_KIND_NIP44",
    "NOT_FOUND",
    "NOT_IMPLEMENTED",
    "OTHER",
    "OUTGOING",
    "PAYMENT_FAILED",
    "PAYMENT_RECEIVED",
    "PAYMENT_SENT",
    "PENDING",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "REQUEST_KIND",
    "RESPONSE_KIND",
    "RESTRICTED",
    "SDK_ERROR_VARIANTS",
    "SETTLED",
    "UNAUTHORIZED",
    "UNSUPPORTED_ENCRYPTION",
    "NwcError",
    "NwcNotification",
    "NwcRequest",
    "NwcResponse",
    "Transaction",
    "info_content",
    "info_tags",
    "is_expired",
    "notification_json",
    "parse_notification",
    "parse_request",
    "parse_response",
    "request_encryption",
    "response_json",
    "result_type_for",
    "sdk_error_code",
    "sdk_error_text",
    "transaction_json",
]
