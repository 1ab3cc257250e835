"""A BOLT #11 invoice writer: amount, tagged fields, signature, bech32 checksum (pure).

Hand-written on purpose. PyPI ``bolt11`` (2.2.0) takes ~3.4 ms to write an invoice, most of it in
``bit_utils.bitarray_to_u5`` (one ``bitstring`` read per 5-bit group), and the development wallet
writes one for every paid job; it also writes amounts that are multiples of 1000 BTC with no
multiplier, i.e. 1000 times too small. This writer does the job with ints and bytes (the fields are
shifted into one big Python int, which ``base64.b32encode`` turns into 5-bit groups) and is checked
against ``bolt11``, against :func:`~dspy_pylon.pay.bolt11_reader.read_bolt11` and against the
specification's examples in ``tests/pay/test_bolt11_writer.py``.

It follows the writer requirements of BOLT #11 as of 2026 (lightning/bolts ``11-payment-encoding.md``):
the amount in its shortest exact form, ``s``, ``p`` and exactly one of ``d``/``h``, ``x`` and ``c``
with no leading zero groups, and no ``9`` field, because the feature vector it would carry is empty
(what ``bolt11.encode`` wrote for the wallet, too): ``var_onion_optin`` and ``payment_secret`` are
ASSUMED by BOLT #9, and a writer "MUST omit the ``9`` field altogether" when it has no bit to set.
Bad input raises :class:`ValueError` whose text never repeats a hash or a key.
"""

from __future__ import annotations

import base64
import hashlib
import re

import coincurve

from dspy_pylon.pay.bolt11_reader import (
    _BECH32_CONST,
    _C,
    _D,
    _H,
    _MSATS_PER_UNIT,
    _P,
    _S,
    _TIMESTAMP_U5,
    _X,
    CHARSET,
    CURRENCIES,
    _polymod,
)

# ``base64.b32encode`` writes 5-bit groups with RFC 4648's alphabet: these map its characters to
# bech32's, and to the groups' values (for the checksum).
_RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_BECH32 = bytes.maketrans(_RFC4648, CHARSET.encode("ascii"))
_TO_VALUES = bytes.maketrans(_RFC4648, bytes(range(32)))

# Largest multiplier first: the first that divides the amount gives the shortest spelling (each
# step up drops three zeros and keeps one letter, the last drops the letter too).
_UNITS = sorted(_MSATS_PER_UNIT.items(), key=lambda item: -item[1])
# No amount can be more than the 21 million bitcoin there will ever be; a larger one is a mistake.
MAX_AMOUNT_MSATS = 21_000_000 * _MSATS_PER_UNIT[""]
_MAX_FIELD_U5 = 1023  # data_length has 10 bits
MAX_DESCRIPTION_BYTES = _MAX_FIELD_U5 * 5 // 8  # 639
# ``x`` and ``c`` are 64-bit in the implementations that read them (CLN, LND, LDK).
_MAX_FIELD_INT = 2**64 - 1
_SIGNATURE_U5 = 104  # 520 bits: 64-byte R||S + 1-byte recovery id
_HEX32 = re.compile(r"[0-9a-fA-F]{64}")  # (not bytes.fromhex alone: it skips whitespace)


def write_bolt11(
    *,
    currency: str,
    amount_msats: int | None,
    timestamp: int,
    payment_hash: str,
    payment_secret: str,
    node_secret: str,
    description: str | None = None,
    description_hash: str | None = None,
    expiry: int | None = None,
    min_final_cltv_expiry: int | None = None,
) -> str:
    """The BOLT #11 invoice (lower case) for these fields, signed by ``node_secret``.

    ``currency`` is the prefix after ``ln`` (``bc``, ``tb``, ``tbs``, ``bcrt``); ``amount_msats``
    None writes an invoice for any amount. Hashes, the secret and the node's secret key are 64 hex
    digits; ``timestamp`` is Unix seconds. Exactly one of ``description`` (UTF-8, at most 639
    bytes, may be empty) and ``description_hash`` is given. ``expiry`` and ``min_final_cltv_expiry``
    (seconds, blocks) are written only when given. The fields go in the specification examples'
    order: ``s``, ``p``, ``d`` or ``h``, ``x``, ``c``. The signature is deterministic (RFC 6979).

    Raises :class:`ValueError` for an unknown currency, an amount that is not 1 msat to 21 million
    BTC, a timestamp outside 35 bits, malformed hex, both or neither of the descriptions, a
    description too long for a field, an ``x`` or ``c`` outside 1 to 2**64-1, or a node secret
    that is not a secp256k1 secret key.
    """
    if currency not in CURRENCIES:
        raise ValueError(f"Unknown currency {currency!r}: expected one of {sorted(CURRENCIES)}")
    if not _is_int(timestamp) or not 0 <= timestamp < 1 << 5 * _TIMESTAMP_U5:
        raise ValueError("timestamp must be an integer from 0 to 2**35-1 (Unix seconds)")
    hrp = "ln" + currency + ("" if amount_msats is None else _amount(amount_msats))

    fields = [
        _bytes_field(_S, _hex32(payment_secret, "payment_secret")),
        _bytes_field(_P, _hex32(payment_hash, "payment_hash")),
    ]
    if (description is None) == (description_hash is None):
        raise ValueError("Give exactly one of description and description_hash")
    if description is not None:
        fields.append(_bytes_field(_D, _utf8(description)))
    else:
        assert description_hash is not None  # (for mypy: checked just above)
        fields.append(_bytes_field(_H, _hex32(description_hash, "description_hash")))
    if expiry is not None:
        fields.append(_int_field(_X, expiry, "expiry"))
    if min_final_cltv_expiry is not None:
        fields.append(_int_field(_C, min_final_cltv_expiry, "min_final_cltv_expiry"))
    return _encode(hrp, timestamp, fields, _private_key(node_secret))


def _amount(msats: int) -> str:
    """``amount`` and ``multiplier`` of the human-readable part: the shortest exact spelling."""
    if not _is_int(msats) or not 1 <= msats <= MAX_AMOUNT_MSATS:
        raise ValueError(f"amount_msats must be None or an integer from 1 to {MAX_AMOUNT_MSATS}")
    for letter, unit in _UNITS:
        if msats % unit == 0:
            return f"{msats // unit}{letter}"
    # Tenths of a millisatoshi: the last digit is then 0, as BOLT #11 requires of ``p``.
    return f"{msats * 10}p"


def _encode(hrp: str, timestamp: int, fields: list[tuple[int, int]], key: coincurve.PrivateKey) -> str:
    """Sign ``timestamp`` + ``fields`` (each ``(bits, u5 count)``) under ``hrp`` and write it in bech32."""
    body, body_u5 = timestamp, _TIMESTAMP_U5
    for bits, count in fields:
        body, body_u5 = body << 5 * count | bits, body_u5 + count
    # Signed: the hrp's bytes and the body, padded with 0 bits to a whole number of bytes.
    pad = -5 * body_u5 % 8
    message = hrp.encode("ascii") + (body << pad).to_bytes((5 * body_u5 + pad) // 8, "big")
    # coincurve returns R || S || recovery id (65 bytes), the order BOLT #11 writes them in.
    signature = key.sign_recoverable(hashlib.sha256(message).digest(), hasher=None)
    data = body << 8 * len(signature) | int.from_bytes(signature, "big")
    data_u5 = body_u5 + _SIGNATURE_U5

    # Base 32 in 40-bit blocks: pad with 0 groups to a whole block, then drop what they became.
    spare = -data_u5 % 8
    groups = base64.b32encode((data << 5 * spare).to_bytes((data_u5 + spare) * 5 // 8, "big"))[:data_u5]
    expanded = bytes([ord(c) >> 5 for c in hrp]) + b"\0" + bytes([ord(c) & 31 for c in hrp])
    checksum = _polymod(expanded + groups.translate(_TO_VALUES) + bytes(6)) ^ _BECH32_CONST
    tail = "".join(CHARSET[checksum >> 5 * (5 - i) & 31] for i in range(6))
    return f"{hrp}1{groups.translate(_TO_BECH32).decode('ascii')}{tail}"


def _bytes_field(kind: int, data: bytes) -> tuple[int, int]:
    """A tagged field holding ``data``, padded with 0 bits to a whole number of 5-bit groups."""
    pad = -8 * len(data) % 5
    count = (8 * len(data) + pad) // 5
    if count > _MAX_FIELD_U5:
        raise ValueError(f"Field {CHARSET[kind]} is longer than {MAX_DESCRIPTION_BYTES} bytes")
    return _tagged(kind, int.from_bytes(data, "big") << pad, count)


def _int_field(kind: int, value: int, name: str) -> tuple[int, int]:
    """A tagged field holding a number with no leading 0 groups (BOLT #11's minimal length)."""
    if not _is_int(value) or not 1 <= value <= _MAX_FIELD_INT:
        # 0 has no minimal encoding a reader accepts (an empty field), and means nothing here.
        raise ValueError(f"{name} must be None or an integer from 1 to 2**64-1")
    return _tagged(kind, value, -(-value.bit_length() // 5))


def _tagged(kind: int, bits: int, count: int) -> tuple[int, int]:
    """Type (5 bits), data_length (10 bits) and data, as one int and its number of 5-bit groups."""
    return (kind << 10 | count) << 5 * count | bits, 3 + count


def _hex32(value: str, name: str) -> bytes:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise ValueError(f"{name} must be 64 hex digits")
    return bytes.fromhex(value)


def _utf8(description: str) -> bytes:
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, not {type(description).__name__}")
    try:
        return description.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("description is not valid Unicode (it has a lone surrogate)") from None


def _private_key(node_secret: str) -> coincurve.PrivateKey:
    try:
        return coincurve.PrivateKey(_hex32(node_secret, "node_secret"))
    except ValueError:  # also 0 and the curve order or more; the message never shows the secret
        raise ValueError("node_secret must be a secp256k1 secret key: 64 hex digits, 1 to n-1") from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
