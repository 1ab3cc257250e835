"""The BOLT #11 writer, checked against PyPI ``bolt11``, against ``read_bolt11`` and against the specification.

``write_bolt11`` replaces ``bolt11.encode`` in the development wallet: what it writes must read back,
with both readers, as exactly the fields it was given; it must write byte for byte what ``bolt11``
writes wherever ``bolt11`` is right; and it must reproduce the specification's examples.
"""

from __future__ import annotations

import hashlib
from typing import Any

import bolt11
import coincurve
import pytest
from bech32 import CHARSET, bech32_encode
from bolt11.models.tags import Tag, TagChar, Tags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_pylon.pay import nip47
from dspy_pylon.pay.bolt11_reader import Bolt11, read_bolt11
from dspy_pylon.pay.bolt11_writer import MAX_AMOUNT_MSATS, MAX_DESCRIPTION_BYTES, write_bolt11
from dspy_pylon.pay.dev_wallet import DevWalletRefusal, issue_invoice
from tests.pay.test_bolt11_reader import (
    CAKE_HASH,
    COFFEE,
    DONATION,
    HASHED,
    NONSENSE,
    SPEC_HASH,
    SPEC_SECRET,
    SPEC_TIME,
    _library_view,
)

# ─── helpers ───

_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SIGNATURE_AND_CHECKSUM = 104 + 6  # characters at the end of the data part


def _payee(secret: str) -> str:
    return str(coincurve.PrivateKey.from_hex(secret).public_key.format(compressed=True).hex())


def _expected(fields: dict[str, Any]) -> Bolt11:
    """The invoice ``write_bolt11(**fields)`` describes, as a reader must return it."""
    return Bolt11(
        hrp_currency=fields["currency"],
        amount_msats=fields["amount_msats"],
        timestamp=fields["timestamp"],
        payment_hash=fields["payment_hash"].lower(),
        description=fields.get("description"),
        description_hash=None if fields.get("description_hash") is None else fields["description_hash"].lower(),
        expiry=fields.get("expiry"),
        payee=_payee(fields["node_secret"]),
        payment_secret=fields["payment_secret"].lower(),
        min_final_cltv_expiry=fields.get("min_final_cltv_expiry"),
    )


def _split(text: str) -> tuple[str, str]:
    """The human-readable part and the data part without signature and checksum."""
    separator = text.rfind("1")
    return text[:separator], text[separator + 1 : -_SIGNATURE_AND_CHECKSUM]


def _message(hrp: str, body: str) -> bytes:
    """What BOLT #11 signs: the hrp's bytes and the body's bits, padded with 0s to whole bytes."""
    bits = "".join(f"{CHARSET.index(c):05b}" for c in body)
    bits += "0" * (-len(bits) % 8)
    return hrp.encode() + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _signed(hrp: str, body: str, secret: str) -> str:
    """An invoice made the slow, obvious way: coincurve signs (RFC 6979), the ``bech32`` package encodes."""
    signature = coincurve.PrivateKey.from_hex(secret).sign_recoverable(_message(hrp, body))
    bits = "".join(f"{byte:08b}" for byte in signature)
    values = [CHARSET.index(c) for c in body] + [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]
    return str(bech32_encode(hrp, values))


def _library_encode(fields: dict[str, Any]) -> str:
    """``bolt11.encode`` with the same fields, given in the writer's order (s, p, d or h, x, c)."""
    tags = [Tag(TagChar.payment_secret, fields["payment_secret"]), Tag(TagChar.payment_hash, fields["payment_hash"])]
    if fields.get("description") is not None:
        tags.append(Tag(TagChar.description, fields["description"]))
    else:
        tags.append(Tag(TagChar.description_hash, fields["description_hash"]))
    if fields.get("expiry") is not None:
        tags.append(Tag(TagChar.expire_time, fields["expiry"]))
    if fields.get("min_final_cltv_expiry") is not None:
        tags.append(Tag(TagChar.min_final_cltv_expiry, fields["min_final_cltv_expiry"]))
    amount = fields["amount_msats"]
    invoice = bolt11.Bolt11(
        currency=fields["currency"],
        date=fields["timestamp"],
        tags=Tags(tags),
        amount_msat=None if amount is None else bolt11.MilliSatoshi(amount),
    )
    return str(bolt11.encode(invoice, fields["node_secret"]))


# ─── the specification's examples (lightning/bolts 11-payment-encoding.md, March 2026) ───
# Every one has a ``9`` field (features 8 and 14, "qrsgq"), which the writer does not write (BOLT
# #9 ASSUMES both), so none is reproduced by ``write_bolt11`` alone: the test checks that the
# writer's data part is the example's without that field, and that adding it back and signing
# gives the example exactly.

SPEC_KEY = "e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734"
# The features field every specification example carries (bits 8 and 14; see the tests below).
SPEC_FEATURES = "9qrsgq"

_SPEC_FIELDS: dict[str, Any] = {
    "currency": "bc",
    "timestamp": SPEC_TIME,
    "payment_hash": SPEC_HASH,
    "payment_secret": SPEC_SECRET,
    "node_secret": SPEC_KEY,
}
# Each example, the fields it carries besides ``9``, and the spec's "hex of SHA256 of the preimage".
SPEC_EXAMPLES = {
    "donation": (
        DONATION,
        {"amount_msats": None, "description": "Please consider supporting this project"},
        "6daf4d488be41ce7cbb487cab1ef2975e5efcea879b20d421f0ef86b07cbb987",
    ),
    "coffee": (
        COFFEE,
        {"amount_msats": 250_000_000, "description": "1 cup coffee", "expiry": 60},
        "047e24bf270b25d42a56d57b2578faa3a10684641bab817c2851a871cb41dbc0",
    ),
    "nonsense": (
        NONSENSE,
        {"amount_msats": 250_000_000, "description": "ナンセンス 1杯", "expiry": 60},
        "f140d992ba419578ba9cfe1af85f92df90a76f442fb5e6e09b1f0582534ba87d",
    ),
    "hashed": (
        HASHED,
        {"amount_msats": 2_000_000_000, "description_hash": CAKE_HASH},
        "e2ffa444e2979edb639fbdaa384638683ba1a5240b14dd7a150e45a04eea261d",
    ),
}


@pytest.mark.parametrize(("example", "fields", "digest"), SPEC_EXAMPLES.values(), ids=SPEC_EXAMPLES.keys())
def test_the_specification_examples_are_written_as_the_specification_writes_them(
    example: str, fields: dict[str, Any], digest: str
) -> None:
    fields = {**_SPEC_FIELDS, **fields}
    written = write_bolt11(**fields)
    assert read_bolt11(written) == read_bolt11(example) == _expected(fields)
    assert _library_view(written) == _expected(fields)

    hrp, body = _split(written)
    example_hrp, example_body = _split(example)
    # Same hrp, timestamp and fields, in the same order, character for character: only ``9`` is missing.
    assert (hrp, body + SPEC_FEATURES) == (example_hrp, example_body)
    # With it put back, signing the spec's way (its digest is given) gives the example exactly...
    assert hashlib.sha256(_message(hrp, example_body)).hexdigest() == digest
    assert _signed(hrp, example_body, SPEC_KEY) == example
    # ...and the writer's own signature and checksum are the ones that way gives for its body.
    assert _signed(hrp, body, SPEC_KEY) == written


@pytest.mark.parametrize(
    ("msats", "hrp"),
    [
        (1, "lnbc10p"),
        (7, "lnbc70p"),
        (123, "lnbc1230p"),
        (100, "lnbc1n"),
        (1_500, "lnbc15n"),
        (100_000, "lnbc1u"),
        (250_000_000, "lnbc2500u"),  # the spec's coffee
        (2_000_000_000, "lnbc20m"),  # the spec's hashed list
        (967_878_534, "lnbc9678785340p"),  # the spec's pico-BTC example (which also has ``r``, ``c``)
        (100_000_000, "lnbc1m"),
        (100_000_000_000, "lnbc1"),  # 1 BTC: no multiplier beats "1000m"
        (150_000_000_000, "lnbc1500m"),
        (100_000_000_000_000, "lnbc1000"),  # 1000 BTC, which bolt11 2.2.0 writes as "lnbc1"
        (MAX_AMOUNT_MSATS, "lnbc21000000"),
        (MAX_AMOUNT_MSATS - 1, "lnbc20999999999999999990p"),
        (None, "lnbc"),
    ],
)
def test_amounts_take_the_largest_multiplier_that_is_exact(msats: int | None, hrp: str) -> None:
    written = write_bolt11(**{**_SPEC_FIELDS, "amount_msats": msats, "description": ""})
    assert _split(written)[0] == hrp
    assert read_bolt11(written).amount_msats == msats


@pytest.mark.parametrize(
    ("expiry", "field"),
    [
        (1, "xqpp"),
        (31, "xqpl"),
        (32, "xqzpq"),
        (60, "xqzpu"),
        (1023, "xqzll"),
        (1024, "xqrpqq"),
        (2**64 - 1, "xqd0" + "l" * 12),
    ],
)
def test_expiry_and_cltv_have_no_leading_zero_groups(expiry: int, field: str) -> None:
    body = _split(write_bolt11(**{**_SPEC_FIELDS, "amount_msats": None, "description": "", "expiry": expiry}))[1]
    assert body.endswith(field)
    body = _split(
        write_bolt11(**{**_SPEC_FIELDS, "amount_msats": None, "description": "", "min_final_cltv_expiry": expiry})
    )[1]
    assert body.endswith("c" + field[1:])


# ─── any fields: both readers read exactly what was written ───

_SECRETS = st.integers(min_value=1, max_value=_ORDER - 1).map(lambda k: f"{k:064x}")
_HEX32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
_HEX32_ANY_CASE = st.one_of(_HEX32, _HEX32.map(str.upper))
# 1 msat to 21 million BTC, with multiples of every multiplier (n, u, m, 1 BTC) and of 1000 BTC,
# which bolt11 2.2.0 writes 1000 times too small.
_UNITS = (10**2, 10**5, 10**8, 10**11, 10**14, 10**17)
_AMOUNTS = st.one_of(
    st.none(),
    st.integers(1, 10**7),
    st.integers(1, MAX_AMOUNT_MSATS),
    st.sampled_from([1, MAX_AMOUNT_MSATS, MAX_AMOUNT_MSATS - 1, 10**14]),
    *(st.integers(1, MAX_AMOUNT_MSATS // unit).map(unit.__mul__) for unit in _UNITS),
)
_LONGEST = ["d" * MAX_DESCRIPTION_BYTES, "€" * (MAX_DESCRIPTION_BYTES // 3), "😀" * 159 + "abc"]
_DESCRIPTIONS = st.one_of(
    st.just(""),
    st.sampled_from(_LONGEST),
    st.text(st.characters(codec="utf-8"), max_size=MAX_DESCRIPTION_BYTES).filter(
        lambda text: len(text.encode("utf-8")) <= MAX_DESCRIPTION_BYTES
    ),
)


def _fields(draw: st.DrawFn, *, int_field_max: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "currency": draw(st.sampled_from(["bc", "tb", "tbs", "bcrt"])),
        "amount_msats": draw(_AMOUNTS),
        "timestamp": draw(st.one_of(st.integers(0, 2**35 - 1), st.sampled_from([0, 2**35 - 1]))),
        "payment_hash": draw(_HEX32_ANY_CASE),
        "payment_secret": draw(_HEX32_ANY_CASE),
        "node_secret": draw(_SECRETS),
        "expiry": draw(st.one_of(st.none(), st.integers(1, int_field_max))),
        "min_final_cltv_expiry": draw(st.one_of(st.none(), st.integers(1, int_field_max))),
    }
    if draw(st.booleans()):
        fields["description"] = draw(_DESCRIPTIONS)
    else:
        fields["description_hash"] = draw(_HEX32_ANY_CASE)
    return fields


@st.composite
def _any_fields(draw: st.DrawFn) -> dict[str, Any]:
    return _fields(draw, int_field_max=2**64 - 1)


@st.composite
def _library_fields(draw: st.DrawFn) -> dict[str, Any]:
    # bolt11 2.2.0 writes ``x`` and ``c`` from 60 bits (``pack("intbe:64", ...)[4:64]``).
    fields = _fields(draw, int_field_max=2**60 - 1)
    amount = fields["amount_msats"]
    if amount is not None and amount % 10**14 == 0:
        fields["amount_msats"] -= draw(st.integers(1, 10**14 - 1))  # what bolt11 writes wrong; see below
    return fields


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_any_fields())
def test_both_readers_read_exactly_the_fields_written(fields: dict[str, Any]) -> None:
    written = write_bolt11(**fields)
    assert written == written.lower()
    assert read_bolt11(written) == _expected(fields)
    assert _library_view(written) == _expected(fields)
    hrp, body = _split(written)
    assert _signed(hrp, body, fields["node_secret"]) == written


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_library_fields())
def test_byte_for_byte_what_bolt11_writes_where_it_is_right(fields: dict[str, Any]) -> None:
    assert write_bolt11(**fields) == _library_encode(fields)


@pytest.mark.parametrize("thousands", [1, 2, 7, 10, 21, 100, 999, 1_000, 1_001, 12_345, 20_999, 21_000])
def test_multiples_of_1000_btc_are_exact_where_bolt11_is_not(thousands: int) -> None:
    fields = {**_SPEC_FIELDS, "amount_msats": thousands * 10**14, "description": "big"}
    written = write_bolt11(**fields)
    assert read_bolt11(written).amount_msats == thousands * 10**14
    assert _library_view(written).amount_msats == thousands * 10**14  # bolt11 reads them right
    assert bolt11.decode(_library_encode(fields)).amount_msat == thousands * 10**11  # but writes them wrong


def test_every_large_amount_reads_back_exactly() -> None:
    # Each power of ten from 1 BTC up, times every leading digit, plus and minus 1 msat and 1 BTC.
    amounts = {
        amount + delta
        for exponent in range(11, 19)
        for digit in range(1, 10)
        for delta in (-(10**11), -1, 0, 1, 10**11)
        if 1 <= (amount := digit * 10**exponent) + delta <= MAX_AMOUNT_MSATS
    }
    assert len(amounts) > 300
    for amount in sorted(amounts):
        written = write_bolt11(**{**_SPEC_FIELDS, "amount_msats": amount, "description": ""})
        assert read_bolt11(written).amount_msats == amount


# ─── the development wallet's invoices ───


@pytest.mark.parametrize("amount", [10**11, 10**14 - 1, 10**14 + 10**11, 123 * 10**14 + 1, nip47.MAX_AMOUNT_MSATS - 1])
def test_the_wallet_issues_large_amounts_exactly(amount: int) -> None:
    text, payment_hash, preimage, created_at = issue_invoice("42" * 32, amount, "big", 600, now=1_700_000_000)
    invoice = read_bolt11(text)
    assert invoice == _library_view(text)
    assert (invoice.amount_msats, invoice.payment_hash, invoice.timestamp) == (amount, payment_hash, created_at)
    assert hashlib.sha256(preimage).hexdigest() == payment_hash
    assert (invoice.description, invoice.expiry, invoice.payee) == ("big", 600, _payee("42" * 32))


def test_the_wallet_writes_the_fields_it_wrote_with_bolt11() -> None:
    text, payment_hash, _, _ = issue_invoice("42" * 32, 5, None, 60, now=1_700_000_000, description_hash="AB" * 32)
    invoice = read_bolt11(text)
    assert (invoice.description, invoice.description_hash, invoice.payment_hash) == (None, "ab" * 32, payment_hash)
    assert (invoice.hrp_currency, invoice.expiry, invoice.min_final_cltv_expiry) == ("bcrt", 60, None)
    # A hash given with a description wins; no description at all is an empty one.
    both = read_bolt11(issue_invoice("42" * 32, 5, "text", 60, description_hash="cd" * 32)[0])
    assert (both.description, both.description_hash) == (None, "cd" * 32)
    assert read_bolt11(issue_invoice("42" * 32, 5, None, 60)[0]).description == ""


@pytest.mark.parametrize("description_hash", ["ab" * 31, "zz" * 32, " " + "a" * 63, "ab" * 33])
def test_the_wallet_refuses_a_malformed_description_hash(description_hash: str) -> None:
    with pytest.raises(DevWalletRefusal, match="description_hash") as refused:
        issue_invoice("42" * 32, 5, None, 60, description_hash=description_hash)
    assert refused.value.code == nip47.OTHER


# ─── bad input ───

_GOOD: dict[str, Any] = {**_SPEC_FIELDS, "amount_msats": 1_000, "description": "ok"}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"currency": "xx"}, "currency"),
        ({"currency": "BC"}, "currency"),
        ({"currency": ""}, "currency"),
        ({"amount_msats": 0}, "amount_msats"),
        ({"amount_msats": -5}, "amount_msats"),
        ({"amount_msats": MAX_AMOUNT_MSATS + 1}, "amount_msats"),
        ({"amount_msats": True}, "amount_msats"),
        ({"amount_msats": 1.5}, "amount_msats"),
        ({"timestamp": -1}, "timestamp"),
        ({"timestamp": 2**35}, "timestamp"),
        ({"timestamp": 1.0}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
        ({"payment_hash": "00" * 31}, "payment_hash"),
        ({"payment_hash": "00" * 33}, "payment_hash"),
        ({"payment_hash": "zz" * 32}, "payment_hash"),
        ({"payment_hash": " " + "0" * 63}, "payment_hash"),
        ({"payment_hash": b"\0" * 32}, "payment_hash"),
        ({"payment_secret": "0" * 63}, "payment_secret"),
        ({"payment_secret": None}, "payment_secret"),
        ({"description": None}, "exactly one"),
        ({"description_hash": CAKE_HASH}, "exactly one"),
        ({"description": "d" * (MAX_DESCRIPTION_BYTES + 1)}, "639 bytes"),
        ({"description": "€" * 214}, "639 bytes"),
        ({"description": b"bytes"}, "string"),
        ({"description": "\ud800"}, "surrogate"),
        ({"description": None, "description_hash": "ab" * 31}, "description_hash"),
        ({"description": None, "description_hash": "g" * 64}, "description_hash"),
        ({"expiry": 0}, "expiry"),
        ({"expiry": -1}, "expiry"),
        ({"expiry": 2**64}, "expiry"),
        ({"expiry": True}, "expiry"),
        ({"min_final_cltv_expiry": 0}, "min_final_cltv_expiry"),
        ({"min_final_cltv_expiry": 2**64}, "min_final_cltv_expiry"),
        ({"min_final_cltv_expiry": "18"}, "min_final_cltv_expiry"),
        ({"node_secret": "00" * 32}, "node_secret"),
        ({"node_secret": f"{_ORDER:064x}"}, "node_secret"),
        ({"node_secret": "ff" * 32}, "node_secret"),
        ({"node_secret": SPEC_KEY[:-1]}, "node_secret"),
        ({"node_secret": SPEC_KEY + "00"}, "node_secret"),
    ],
)
def test_bad_input_is_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        write_bolt11(**{**_GOOD, **changes})
    message = str(refused.value)
    for value in (SPEC_KEY, *(v for v in changes.values() if isinstance(v, str) and len(v) >= 32)):
        assert value[:32] not in message, "a refusal never repeats a key or a hash"
