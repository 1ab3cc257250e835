"""A BOLT #11 invoice reader: bech32 checksum, human-readable part, tagged fields, signature (pure).

Hand-written on purpose. PyPI ``bolt11`` (2.2.0) takes 4.4–10 ms per invoice, 90 % of it in
``bit_utils.u5_to_bitarray`` (one ``bitstring.pack`` per 5-bit group), and a paying customer
decodes every bill on its critical path, on its single Nostr loop thread. This reader does the
same job with ints and bytes (the 5-bit groups become one big Python int, fields are sliced out
with shifts) and is checked field by field against ``bolt11`` in ``tests/pay/test_bolt11_reader.py``.

It follows the reader requirements of BOLT #11 as of 2026 (lightning/bolts ``11-payment-encoding.md``):
the checksum is bech32 (not bech32m) over the whole string without BIP-173's 90-character
limit, fixed-length fields of the wrong length fail the invoice (the spec changed this from
"skip" in 2025), ``s`` and exactly one of ``d``/``h`` are required, unknown even feature bits
fail, and an ``n`` field is checked against the signature (low-S only) instead of recovery.
Every failure is a :class:`~dspy_pylon.errors.MalformedEvent` whose text never repeats the invoice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import coincurve
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from dspy_pylon.errors import MalformedEvent

# ─── bech32 (BIP-173) ───
# Written here rather than taken from the ``bech32`` package: its ``bech32_decode`` applies
# BIP-173's length limits, and its polymod steps one value at a time with five generator tests;
# this one takes two values per step from a 1024-entry table (the polymod is linear over GF(2)).

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1  # bech32m's 0x2BC830A3 is not valid for invoices


def _step(chk: int, value: int) -> int:
    """One polymod step, exactly as BIP-173 writes it."""
    top = chk >> 25
    chk = (chk & 0x1FFFFFF) << 5 ^ value
    for i in range(5):
        chk ^= _GENERATOR[i] if (top >> i) & 1 else 0
    return chk


# Two steps with zero values from a state whose top ten bits are ``t``: what those bits add.
_TWO_STEPS = tuple(_step(_step(t << 20, 0), 0) for t in range(1024))
# Data characters to their 5-bit values (0xFF: not a bech32 character), and to base-32 digits
# so that ``int(..., 32)`` turns the whole data part into one integer in C.
_VALUES = bytes(CHARSET.index(chr(b)) if chr(b) in CHARSET else 0xFF for b in range(256))
_DIGITS = str.maketrans(CHARSET, "0123456789abcdefghijklmnopqrstuv")


def _polymod(values: bytes) -> int:
    """BIP-173's checksum polynomial over ``values``, two at a time (1 for a valid bech32 string)."""
    chk = 1
    start = len(values) & 1
    if start:
        chk = _step(chk, values[0])
    table = _TWO_STEPS
    for high, low in zip(values[start::2], values[start + 1 :: 2], strict=True):
        chk = ((chk & 0xFFFFF) << 10) ^ table[chk >> 20] ^ (high << 5) ^ low
    return chk


# ─── BOLT #11 ───

# "ln" + currency; the amount starts at the first digit. Only the chains pylon can meet
# (the ones PyPI bolt11 knows): a reader "MUST fail" a prefix it does not understand.
_HRP = re.compile(r"ln([a-z]+)([0-9]*)([a-z]?)")
CURRENCIES = frozenset({"bc", "tb", "tbs", "bcrt"})
# Millisatoshis per unit of the amount (1 BTC = 10**11 msat); "p" (0.1 msat) is handled apart.
_MSATS_PER_UNIT = {"": 10**11, "m": 10**8, "u": 10**5, "n": 10**2}
_MAX_HRP_CHARS = 83  # BIP-173; BOLT #11 lifts only the 90-character limit on the whole string
_TIMESTAMP_U5 = 7  # 35 bits
_SIGNATURE_U5 = 104  # 520 bits: 64-byte R||S + 1-byte recovery id
_CHECKSUM_U5 = 6
# Field types (their bech32 character's value) and the lengths BOLT #11 fixes for some of them.
_P, _S, _D, _N, _H, _X, _C, _FEATURES = 1, 16, 13, 19, 23, 6, 24, 5
_FIXED_LENGTH = {_P: 52, _S: 52, _H: 52, _N: 53}
_FIXED_NAME = {_P: "p (payment hash)", _S: "s (payment secret)", _H: "h (description hash)", _N: "n (payee)"}
# Even ("required") feature bits a reader knows: BOLT #9's invoice (context 9) features plus the
# ASSUMED var_onion_optin and payment_secret that invoices still set. Any other even bit fails.
_KNOWN_EVEN_FEATURES = frozenset({8, 14, 16, 24, 36, 48})
_EVEN_BITS = int("01" * 2560, 2)  # bits 0, 2, 4, ... of a feature vector (1023 × 5 bits at most)
_KNOWN_EVEN_MASK = sum(1 << bit for bit in _KNOWN_EVEN_FEATURES)
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Bolt11:
    """A verified BOLT #11 invoice. Hashes, secrets and keys are lowercase hex; times are Unix seconds."""

    hrp_currency: str
    amount_msats: int | None
    timestamp: int
    payment_hash: str
    description: str | None
    description_hash: str | None
    expiry: int | None
    payee: str
    # Never None once read (a reader MUST fail an invoice without ``s``); typed optional as
    # older invoices had none.
    payment_secret: str | None
    min_final_cltv_expiry: int | None


def read_bolt11(text: str) -> Bolt11:
    """Decode and verify the BOLT #11 invoice ``text`` (no ``lightning:`` prefix, no whitespace).

    The caller bounds the length (the checksum reads every character; ``decode_invoice`` takes
    at most 4096). The ``h`` field is returned, not checked: the described text is not here.

    Raises :class:`MalformedEvent` if it is not a valid invoice: bad bech32 or checksum, an
    unknown currency, a bad amount, malformed or missing fields, or a signature that does
    not verify.
    """
    if not isinstance(text, str) or not text.isascii():
        raise MalformedEvent("Not an ASCII string, so not a bech32 invoice")
    lower = text.lower()
    if lower != text and text.upper() != text:
        raise MalformedEvent("Mixed upper and lower case (bech32 allows one or the other)")
    separator = lower.rfind("1")
    if separator < 1:
        raise MalformedEvent("No bech32 separator '1' after a human-readable part")
    hrp, data_text = lower[:separator], lower[separator + 1 :]
    currency, amount_msats = _read_hrp(hrp)

    values = data_text.encode("ascii").translate(_VALUES)
    if b"\xff" in values:
        raise MalformedEvent("A character of the data part is not in the bech32 alphabet")
    if len(values) < _CHECKSUM_U5 + _TIMESTAMP_U5 + _SIGNATURE_U5:
        raise MalformedEvent("Too short for a timestamp, a signature and a checksum")
    expanded = bytes([ord(c) >> 5 for c in hrp]) + b"\0" + bytes([ord(c) & 31 for c in hrp])
    if _polymod(expanded + values) != _BECH32_CONST:
        raise MalformedEvent("The bech32 checksum does not match (a character is wrong, missing or extra)")

    # The data part without checksum as one integer, first 5-bit group most significant.
    body_u5 = len(values) - _CHECKSUM_U5 - _SIGNATURE_U5
    data = int(data_text.translate(_DIGITS), 32) >> (5 * _CHECKSUM_U5)
    signature = (data & ((1 << 8 * 65) - 1)).to_bytes(65, "big")
    body = data >> (8 * 65)  # the timestamp and the tagged fields: what is signed
    fields = _read_fields(values, body, body_u5)

    # Signed: the hrp's bytes and the body, padded with 0 bits to a whole number of bytes.
    pad = -5 * body_u5 % 8
    message = hrp.encode() + (body << pad).to_bytes((5 * body_u5 + pad) // 8, "big")
    payee = _check_signature(signature, hashlib.sha256(message).digest(), fields.raw.get(_N))
    description_hash = fields.raw.get(_H)
    return Bolt11(
        hrp_currency=currency,
        amount_msats=amount_msats,
        timestamp=body >> (5 * (body_u5 - _TIMESTAMP_U5)),
        payment_hash=fields.raw[_P].hex(),
        description=fields.description,
        description_hash=None if description_hash is None else description_hash.hex(),
        expiry=fields.expiry,
        payee=payee,
        payment_secret=fields.raw[_S].hex(),
        min_final_cltv_expiry=fields.cltv,
    )


def _read_hrp(hrp: str) -> tuple[str, int | None]:
    """The currency and the amount in millisatoshis (None when the invoice names none)."""
    match = _HRP.fullmatch(hrp) if len(hrp) <= _MAX_HRP_CHARS else None
    if match is None:
        raise MalformedEvent("The human-readable part is not 'ln' + currency + optional amount")
    currency, digits, multiplier = match.groups()
    if currency not in CURRENCIES:
        raise MalformedEvent(f"Unknown currency prefix 'ln{currency[:8]}'")
    if not digits:  # (a letter after the currency would have been read as part of it)
        return currency, None
    if multiplier not in _MSATS_PER_UNIT and multiplier != "p":
        raise MalformedEvent(f"Unknown amount multiplier {multiplier!r} (m, u, n or p)")
    if int(digits) == 0:
        raise MalformedEvent("The amount is zero")
    if digits[0] == "0":  # writers MUST NOT; an odd spelling of an amount is not to be trusted
        raise MalformedEvent("The amount has leading zeros")
    if multiplier == "p":
        if digits[-1] != "0":  # BOLT #11: MUST fail (a fraction of a millisatoshi)
            raise MalformedEvent("The amount is not a whole number of millisatoshis")
        return currency, int(digits) // 10
    return currency, int(digits) * _MSATS_PER_UNIT[multiplier]


@dataclass
class _Fields:
    """The tagged fields a payer reads: the first of each kind (BOLT #11: writers put the preferred first)."""

    raw: dict[int, bytes]  # p, s, h, n: fixed-length byte strings, by field type
    description: str | None = None
    expiry: int | None = None
    cltv: int | None = None


def _read_fields(values: bytes, body: int, body_u5: int) -> _Fields:
    """The tagged fields after the timestamp. ``values`` holds the 5-bit groups (for the 15-bit
    headers), ``body`` the same bits as one integer (for the data). Other fields (``f``, ``r``,
    ``m``, unknown types) are skipped.
    """
    fields = _Fields(raw={})
    pos = _TIMESTAMP_U5
    while pos < body_u5:
        if body_u5 - pos < 3:
            raise MalformedEvent("A tagged field is cut short before its length")
        kind, length = values[pos], values[pos + 1] << 5 | values[pos + 2]
        pos += 3
        if pos + length > body_u5:
            raise MalformedEvent("A tagged field runs into the signature")
        bits = 5 * length
        value = (body >> (5 * (body_u5 - pos) - bits)) & ((1 << bits) - 1)
        minimal = length > 0 and values[pos] != 0  # a leading 0 group means a non-minimal length
        pos += length
        if kind in _FIXED_LENGTH:
            if length != _FIXED_LENGTH[kind]:  # BOLT #11 (2025): MUST fail, no longer skip
                raise MalformedEvent(f"Field {_FIXED_NAME[kind]} has length {length}, not {_FIXED_LENGTH[kind]}")
            fields.raw.setdefault(kind, _to_bytes(value, bits))
        elif kind == _D:
            if fields.description is None:
                try:
                    fields.description = _to_bytes(value, bits).decode("utf-8")
                except UnicodeDecodeError:
                    raise MalformedEvent("The description (d field) is not UTF-8") from None
        elif kind in (_X, _C):
            if not minimal:  # BOLT #11: SHOULD treat a non-minimal length as invalid
                raise MalformedEvent(f"Field {CHARSET[kind]} is empty or not minimally encoded")
            if kind == _X and fields.expiry is None:
                fields.expiry = value
            elif kind == _C and fields.cltv is None:
                fields.cltv = value
        elif kind == _FEATURES:
            if length and not minimal:
                raise MalformedEvent("The features (9 field) are not minimally encoded")
            unknown = value & _EVEN_BITS & ~_KNOWN_EVEN_MASK
            if unknown:  # BOLT #11: unknown even ("required") bits MUST fail the payment
                raise MalformedEvent(f"The invoice requires unknown feature bit {unknown.bit_length() - 1}")
    if _P not in fields.raw:
        raise MalformedEvent("No payment hash (p field)")
    if _S not in fields.raw:
        raise MalformedEvent("No payment secret (s field)")
    if (fields.description is None) == (_H not in fields.raw):
        raise MalformedEvent("Needs exactly one of a description (d) and a description hash (h)")
    return fields


def _check_signature(signature: bytes, digest: bytes, payee_field: bytes | None) -> str:
    """The payee's compressed public key (hex): the ``n`` field once checked, else the recovered key."""
    if signature[64] > 3:
        raise MalformedEvent("Signature recovery id is not 0 to 3")
    if payee_field is not None:
        # BOLT #11: with an ``n`` field, verify against it instead of recovering, and fail a
        # high-S signature (libsecp256k1's verify refuses those too; this says why).
        if int.from_bytes(signature[32:64], "big") > _CURVE_ORDER // 2:
            raise MalformedEvent("Signature is not low-S, which an invoice with an n field must be")
        try:
            key = coincurve.PublicKey(payee_field)
            verified = key.verify(cdata_to_der(deserialize_compact(signature[:64])), digest, hasher=None)
        except ValueError:
            raise MalformedEvent("Signature or n field (payee) is not a valid secp256k1 value") from None
        if not verified:
            raise MalformedEvent("Signature does not verify against the n field (payee)")
        return payee_field.hex()
    try:
        # Recovery accepts high-S and low-S signatures alike, as BOLT #11 requires.
        key = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except ValueError:
        raise MalformedEvent("Signature does not recover a public key") from None
    return str(key.format(compressed=True).hex())


def _to_bytes(value: int, bits: int) -> bytes:
    """A field's data as bytes, dropping the 0 to 4 padding bits of its last 5-bit group."""
    size = bits // 8
    return (value >> (bits - 8 * size)).to_bytes(size, "big")
