"""BOLT11 decoding and the checks a customer makes before paying a provider's bill.

The invoices are real: issued and signed by the development wallet (regtest, ``lnbcrt...``), or
built with PyPI ``bolt11`` directly for the shapes the wallet refuses to issue (no amount, a
sub-millisatoshi amount, an explicit payee field).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import bolt11
import coincurve
import pytest
from bech32 import CHARSET, bech32_decode, bech32_encode
from bolt11.models.tags import Tag, TagChar, Tags
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.pay.dev_wallet import DevInvoice, DevWalletStore
from dspy_pylon.pay.invoice import MAX_INVOICE_CHARS, Bill, BillCheck, Invoice, check_bill, decode_invoice

JOB = "ab" * 32
OTHER_JOB = "cd" * 32
PROVIDER = "e1" * 32
OTHER_PROVIDER = "f2" * 32
NOW = 1_700_000_000
EXPIRY = 600
# A fixed node key for the invoices built with bolt11 directly.
NODE_KEY = hashlib.sha256(b"pylon test node").hexdigest()
NODE_PUBKEY = coincurve.PrivateKey(bytes.fromhex(NODE_KEY)).public_key.format().hex()


def _signed(
    amount_msats: int | None,
    *,
    description: str = f"pylon job {JOB}",
    expiry: int | None = EXPIRY,
    date: int = NOW,
    hrp: str | None = None,
    with_payee: bool = False,
) -> str:
    """A regtest invoice signed with NODE_KEY. ``hrp`` replaces the human-readable part (its amount)
    before signing, to write amounts ``bolt11.encode`` cannot; ``with_payee`` adds the ``n`` field."""
    tags = [
        Tag(TagChar.payment_hash, hashlib.sha256(os.urandom(32)).hexdigest()),
        Tag(TagChar.description, description),
        Tag(TagChar.payment_secret, os.urandom(32).hex()),
    ]
    if expiry is not None:
        tags.append(Tag(TagChar.expire_time, expiry))
    if with_payee:
        tags.append(Tag(TagChar.payee, NODE_PUBKEY))
    invoice = bolt11.Bolt11(
        currency="bcrt",
        date=date,
        tags=Tags(tags),
        amount_msat=None if amount_msats is None else bolt11.MilliSatoshi(amount_msats),
    )
    with pytest.MonkeyPatch.context() as patch:
        if hrp is not None:
            patch.setattr(sys.modules["bolt11.encode"], "_create_hrp", lambda currency, amount: hrp)
        return str(bolt11.encode(invoice, NODE_KEY, keep_payee=with_payee))


def _rechecksummed(invoice: str, hrp: str) -> str:
    """``invoice`` with its human-readable part replaced and a valid bech32 checksum (a forgery)."""
    _, data = bech32_decode(invoice)
    assert data is not None
    return str(bech32_encode(hrp, data))


# Built once: the property tests cannot use function-scoped fixtures.
SAMPLE = _signed(1234)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevWalletStore]:
    """A development wallet with a ``provider`` account that issues the invoices."""
    wallet = DevWalletStore(tmp_path_factory.mktemp("invoices") / "wallet.sqlite")
    wallet.create_account("provider")
    yield wallet
    wallet.close()


def _issue(
    store: DevWalletStore, amount_msats: int = 1234, job_id: str = JOB, expiry: int = EXPIRY, now: int = NOW
) -> DevInvoice:
    return store.make_invoice("provider", amount_msats, f"pylon job {job_id}", expiry, now=now)


# ─── decode_invoice ───


@pytest.mark.parametrize("amount", [1, 10, 1234, 100_000, 2_100_000_000, 21_000_000_000_000])
def test_decode_reads_a_real_invoice(store: DevWalletStore, amount: int) -> None:
    made = _issue(store, amount)
    invoice = decode_invoice(made.bolt11)
    assert invoice == Invoice(
        bolt11=made.bolt11,
        amount_msats=amount,
        payment_hash=made.payment_hash,
        description=f"pylon job {JOB}",
        created_at=NOW,
        expires_at=NOW + EXPIRY,
        payee=store.node_pubkey,
    )
    assert invoice.job_id == JOB
    assert made.bolt11.startswith("lnbcrt")


def test_prefix_case_and_whitespace_do_not_matter(store: DevWalletStore) -> None:
    made = _issue(store)
    forms = [
        f"lightning:{made.bolt11}",
        f"LIGHTNING:{made.bolt11}",
        f"Lightning:{made.bolt11.upper()}",
        f"  {made.bolt11}\n",
        f"\tlightning:{made.bolt11} ",
    ]
    for form in forms:
        invoice = decode_invoice(form)
        assert (invoice.payment_hash, invoice.amount_msats, invoice.job_id) == (made.payment_hash, 1234, JOB)
        assert invoice.bolt11.lower() == made.bolt11, "the prefix and the whitespace are not part of the invoice"


@pytest.mark.parametrize(
    ("description", "job_id"),
    [
        (f"pylon job {JOB}", JOB),
        (f"Pay for pylon job {OTHER_JOB} (thank you)", OTHER_JOB),
        ("", None),
        ("a coffee", None),
        (f"pylon job {JOB[:-1]}", None),  # 63 hex digits is not a job id
        (f"pylon job {JOB}0", None),  # nor are 65
        (f"pylon job {'g' * 64}", None),
        (f"pylonjob {JOB}", None),
    ],
)
def test_job_id_is_read_from_the_description(store: DevWalletStore, description: str, job_id: str | None) -> None:
    made = store.make_invoice("provider", 5, description, EXPIRY, now=NOW)
    invoice = decode_invoice(made.bolt11)
    assert invoice.description == description
    assert invoice.job_id == job_id


def test_a_description_hash_invoice_names_no_job(store: DevWalletStore) -> None:
    digest = hashlib.sha256(f"pylon job {JOB}".encode()).hexdigest()
    made = store.make_invoice("provider", 5, None, EXPIRY, now=NOW, description_hash=digest)
    invoice = decode_invoice(made.bolt11)
    assert (invoice.description, invoice.job_id) == ("", None)


def test_expiry_defaults_to_an_hour_and_ends_exactly_at_expires_at() -> None:
    invoice = decode_invoice(_signed(1000, expiry=None))
    assert invoice.expires_at == NOW + 3600
    assert not invoice.expired(NOW + 3599.999)
    assert invoice.expired(NOW + 3600)
    assert invoice.expired(NOW + 10**9)


def test_an_invoice_without_amount_decodes_with_none() -> None:
    invoice = decode_invoice(_signed(None))
    assert invoice.amount_msats is None
    assert invoice.payee == NODE_PUBKEY
    assert invoice.job_id == JOB


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "\n\t",
        "lightning:",
        "lightning: ",
        "lnbcrt",
        "lnbcrt1",
        "hello world",
        "lnbc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",
        SAMPLE[:-1],
        SAMPLE + "q",
        SAMPLE[:60],
        SAMPLE.replace("lnbcrt", "lnxyz", 1),
        f"lightning:lightning:{SAMPLE}",
        "x" * (MAX_INVOICE_CHARS + 1),
        "lnbcrt1" + "q" * 10_000_000,
        None,
        12345,
        SAMPLE.encode(),
        ["lnbcrt"],
    ],
    # The sample invoice is random past its first characters: ids stay the same in every process.
    ids=lambda value: repr(value)[:20],
)
def test_garbage_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedEvent):
        decode_invoice(value)


def test_a_valid_invoice_padded_past_the_limit_is_refused_before_decoding() -> None:
    padded = SAMPLE + " " * (MAX_INVOICE_CHARS + 1 - len(SAMPLE))
    with pytest.raises(MalformedEvent, match="too long"):
        decode_invoice(padded)


def test_every_single_character_change_is_refused() -> None:
    # The bech32 checksum catches any one substituted character, wherever it is.
    refused = 0
    for position, char in enumerate(SAMPLE):
        if char not in CHARSET:
            continue  # the "1" separating the human-readable part
        other = CHARSET[(CHARSET.index(char) + 7) % len(CHARSET)]
        tampered = SAMPLE[:position] + other + SAMPLE[position + 1 :]
        with pytest.raises(MalformedEvent, match="not a valid BOLT11 invoice"):
            decode_invoice(tampered)
        refused += 1
    assert refused > 300


def test_a_forged_amount_with_an_explicit_payee_fails_the_signature() -> None:
    genuine = _signed(1234, with_payee=True)
    assert decode_invoice(genuine).payee == NODE_PUBKEY
    forged = _rechecksummed(genuine, "lnbcrt99990p")
    with pytest.raises(MalformedEvent, match="Signature"):
        decode_invoice(forged)


def test_a_forged_amount_without_payee_recovers_another_node() -> None:
    # Without an ``n`` field the payee is recovered from the signature: a forged amount cannot
    # keep the real node as the payee, so no wallet would route the forged terms to it.
    genuine = decode_invoice(SAMPLE)
    forged = decode_invoice(_rechecksummed(SAMPLE, "lnbcrt99990p"))
    assert forged.amount_msats == 9999
    assert forged.payment_hash == genuine.payment_hash
    assert genuine.payee == NODE_PUBKEY
    assert forged.payee != NODE_PUBKEY


def test_a_sub_millisatoshi_amount_is_refused() -> None:
    # BOLT11: "if multiplier is `p` and the last decimal of `amount` is not 0: MUST fail the payment".
    # 12341p is 1234.1 msats: no wallet can pay it, and rounding it to 1234 would let it pass every check.
    invoice = _signed(1234, hrp="lnbcrt12341p")
    assert bolt11.decode(invoice).amount_msat == 1234  # the library silently truncates
    with pytest.raises(MalformedEvent):
        decode_invoice(invoice)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
@example("lightning:")
@example("lnbcrt1" + "0" * 4000)
@example("lnbc1" + "1" * 100)
def test_arbitrary_text_raises_only_malformed_event(text: str) -> None:
    try:
        invoice = decode_invoice(text)
    except MalformedEvent:
        return
    assert isinstance(invoice, Invoice)


_edits = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace", "truncate", "swapcase"]),
        st.integers(min_value=0, max_value=len(SAMPLE)),
        st.text(alphabet=CHARSET + "1lnbcrtLNBCRT: \x00é", min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_edits)
def test_edited_invoices_raise_only_malformed_event(edits: list[tuple[str, int, str]]) -> None:
    text = SAMPLE
    for op, position, fragment in edits:
        position = min(position, len(text))
        if op == "delete":
            text = text[:position] + text[position + len(fragment) :]
        elif op == "insert":
            text = text[:position] + fragment + text[position:]
        elif op == "replace":
            text = text[:position] + fragment + text[position + len(fragment) :]
        elif op == "truncate":
            text = text[:position]
        else:
            text = text[:position] + text[position:].swapcase()
    try:
        invoice = decode_invoice(text)
    except MalformedEvent:
        return
    # Only edits that leave the invoice intact (or change just its case) may decode, and then to the same invoice.
    assert invoice.bolt11.lower() == SAMPLE


# ─── check_bill ───


def _check(bill: Bill, **overrides: Any) -> BillCheck:
    arguments: dict[str, Any] = {
        "job_id": JOB,
        "providers": (PROVIDER,),
        "bid_msats": 5000,
        "budget_left_msats": 10_000,
        "now": NOW + 1,
        "paid_hashes": frozenset(),
    }
    arguments.update(overrides)
    return check_bill(bill, **arguments)


def _bill(bolt11_text: str, amount_msats: int | None = 1234, *, job_id: str = JOB, provider: str = PROVIDER) -> Bill:
    return Bill(job_id=job_id, provider=provider, amount_msats=amount_msats, bolt11=bolt11_text)


def _refused(verdict: BillCheck, fragment: str) -> None:
    assert not verdict.ok
    assert fragment in verdict.reason, verdict.reason


def test_a_bill_for_another_job_is_refused_before_decoding(store: DevWalletStore) -> None:
    made = _issue(store)
    verdict = _check(_bill(made.bolt11, job_id=OTHER_JOB))
    _refused(verdict, "not ours")
    assert verdict.invoice is None and verdict.amount_msats == 0


def test_a_bill_from_a_provider_the_job_did_not_target_is_refused(store: DevWalletStore) -> None:
    made = _issue(store)
    verdict = _check(_bill(made.bolt11, provider=OTHER_PROVIDER), providers=(PROVIDER,))
    _refused(verdict, "did not target")
    assert verdict.invoice is None
    # A broadcast job (no target) takes a bill from any provider.
    assert _check(_bill(made.bolt11, provider=OTHER_PROVIDER), providers=()).ok
    assert _check(_bill(made.bolt11, provider=OTHER_PROVIDER), providers=(PROVIDER, OTHER_PROVIDER)).ok


@pytest.mark.parametrize("text", ["", "lnbcrt1garbage", SAMPLE[:-1], "x" * 100_000])
def test_an_undecodable_invoice_is_refused(text: str) -> None:
    verdict = _check(_bill(text))
    _refused(verdict, "invoice")
    assert verdict.invoice is None and verdict.amount_msats == 0


def test_an_invoice_without_amount_is_never_paid_automatically() -> None:
    verdict = _check(_bill(_signed(None)))
    _refused(verdict, "no amount")
    assert verdict.invoice is not None and verdict.amount_msats == 0


def test_a_bill_without_amount_tag_is_refused(store: DevWalletStore) -> None:
    verdict = _check(_bill(_issue(store).bolt11, None))
    _refused(verdict, "no amount tag")
    assert verdict.amount_msats == 1234


@pytest.mark.parametrize("tag", [1233, 1235, 0, 1_234_000])
def test_the_invoice_amount_must_equal_the_amount_tag(store: DevWalletStore, tag: int) -> None:
    verdict = _check(_bill(_issue(store).bolt11, tag))
    _refused(verdict, f"the invoice is for 1234 msats but the amount tag says {tag} msats")
    assert verdict.amount_msats == 1234  # the ledger records what the invoice asked


def test_an_invoice_above_the_bid_is_refused(store: DevWalletStore) -> None:
    verdict = _check(_bill(_issue(store).bolt11), bid_msats=1233)
    _refused(verdict, "above the bid of 1233 msats")


def test_an_invoice_above_what_the_budget_has_left_is_refused(store: DevWalletStore) -> None:
    verdict = _check(_bill(_issue(store).bolt11), budget_left_msats=1233)
    _refused(verdict, "more than the 1233 left in the budget")
    _refused(_check(_bill(_issue(store).bolt11), budget_left_msats=0), "left in the budget")


def test_no_budget_means_no_limit_but_the_bid_still_applies(store: DevWalletStore) -> None:
    big = _issue(store, 2_100_000_000_000)
    assert _check(_bill(big.bolt11, 2_100_000_000_000), bid_msats=2_100_000_000_000, budget_left_msats=None).ok
    _refused(_check(_bill(big.bolt11, 2_100_000_000_000), budget_left_msats=None), "above the bid")


def test_an_expired_invoice_is_refused(store: DevWalletStore) -> None:
    made = _issue(store)
    assert _check(_bill(made.bolt11), now=NOW + EXPIRY - 1).ok
    _refused(_check(_bill(made.bolt11), now=NOW + EXPIRY), "expired 0 s ago")
    _refused(_check(_bill(made.bolt11), now=NOW + EXPIRY + 30), "expired 30 s ago")


def test_an_invoice_naming_another_job_is_refused(store: DevWalletStore) -> None:
    verdict = _check(_bill(_issue(store, job_id=OTHER_JOB).bolt11))
    _refused(verdict, "another job")
    assert OTHER_JOB[:12] in verdict.reason


def test_an_invoice_naming_no_job_may_be_paid(store: DevWalletStore) -> None:
    made = store.make_invoice("provider", 1234, "inference", EXPIRY, now=NOW)
    assert _check(_bill(made.bolt11)).ok


def test_an_invoice_already_paid_is_refused(store: DevWalletStore) -> None:
    made = _issue(store)
    verdict = _check(_bill(made.bolt11), paid_hashes=frozenset({made.payment_hash, "00" * 32}))
    _refused(verdict, "already paid")
    assert _check(_bill(made.bolt11), paid_hashes=frozenset({"00" * 32})).ok


def test_an_invoice_at_every_limit_at_once_is_paid(store: DevWalletStore) -> None:
    made = _issue(store, 5000)
    verdict = _check(
        _bill(f"lightning:{made.bolt11}", 5000),
        bid_msats=5000,
        budget_left_msats=5000,
        now=NOW + EXPIRY - 1,
        paid_hashes=frozenset({"00" * 32}),
    )
    assert verdict.ok and verdict.reason == "ok"
    assert verdict.invoice is not None
    assert verdict.invoice.payment_hash == made.payment_hash
    assert verdict.invoice.bolt11 == made.bolt11
    assert verdict.amount_msats == 5000
    # One millisatoshi less room anywhere and it is refused.
    assert not _check(_bill(made.bolt11, 5000), bid_msats=4999, budget_left_msats=5000).ok
    assert not _check(_bill(made.bolt11, 5000), bid_msats=5000, budget_left_msats=4999).ok


def test_a_sub_millisatoshi_invoice_is_not_paid() -> None:
    # 1234.1 msats rounded down to match the 1234 msats tag: a bill no wallet can honour.
    verdict = _check(_bill(_signed(1234, hrp="lnbcrt12341p"), 1234))
    assert not verdict.ok


def test_a_zero_amount_invoice_is_not_paid() -> None:
    # BOLT11 writers "MUST encode amount as a positive decimal integer"; wallets read 0 as "any amount".
    # Like an invoice with no amount, it must not pass as a bill of 0 msats.
    verdict = _check(_bill(_signed(1234, hrp="lnbcrt0p"), 0))
    assert not verdict.ok
