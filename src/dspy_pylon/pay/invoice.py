"""BOLT11 invoices and the checks a customer makes before paying one (pure, no I/O).

A provider's bill arrives as ``payment-required`` feedback (or on a result) with an
``amount`` tag and a bolt11 invoice. :func:`check_bill` decides whether to pay it; the
caller does the paying. Decoding uses :func:`~dspy_pylon.pay.bolt11_reader.read_bolt11`
(checksum, amount, fields and signature checked; PyPI ``bolt11`` was 20–50 times slower).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.pay.refusals import RefusalCode

# Pylon providers describe their invoices like this; the job id binds the invoice to the job.
_JOB_DESCRIPTION = re.compile(r"\bpylon job ([0-9a-f]{64})\b")
# Invoices are short; a huge string is an attack on the decoder, not a bill.
MAX_INVOICE_CHARS = 4096


def invoice_description(job_id: str) -> str:
    """The description a pylon provider puts on the invoice for ``job_id``."""
    return f"pylon job {job_id}"


@dataclass(frozen=True)
class Invoice:
    """The parts of a decoded BOLT11 invoice a payer checks. Times are Unix seconds."""

    bolt11: str
    amount_msats: int | None
    payment_hash: str
    description: str
    created_at: int
    expires_at: int
    payee: str

    @property
    def job_id(self) -> str | None:
        """The job the description names (pylon providers name it), else None."""
        match = _JOB_DESCRIPTION.search(self.description)
        return match.group(1) if match else None

    def expired(self, now: float) -> bool:
        """Whether the invoice can no longer be paid at ``now``."""
        return now >= self.expires_at


def decode_invoice(bolt11: str) -> Invoice:
    """Decode and verify a BOLT11 string; :class:`MalformedEvent` if it is not a valid invoice.

    The reader refuses what BOLT11 says a reader must fail, including a zero amount and a
    sub-millisatoshi one (no wallet can pay 1234.1 msats; rounding it would pass every check).
    """
    from dspy_pylon.pay.bolt11_reader import read_bolt11  # coincurve: not for commands that never pay

    if not isinstance(bolt11, str) or not bolt11 or len(bolt11) > MAX_INVOICE_CHARS:
        raise MalformedEvent("no invoice, or one too long to be a BOLT11 invoice (pylon pays only BOLT11 invoices)")
    text = bolt11.strip()
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:") :]
    try:
        decoded = read_bolt11(text)
    except MalformedEvent as exc:
        raise MalformedEvent(f"not a valid BOLT11 invoice: {exc}"[:300]) from None
    expiry = decoded.expiry if decoded.expiry is not None else 3600
    return Invoice(
        bolt11=text,
        amount_msats=decoded.amount_msats,
        payment_hash=decoded.payment_hash,
        description=decoded.description or "",
        created_at=decoded.timestamp,
        expires_at=decoded.timestamp + expiry,
        payee=decoded.payee,
    )


@dataclass(frozen=True)
class Bill:
    """What a provider asked to be paid for a job: the ``amount`` tag and its invoice."""

    job_id: str
    provider: str
    amount_msats: int | None
    bolt11: str


@dataclass(frozen=True)
class BillCheck:
    """The verdict on a bill: ``ok`` with the invoice, or the reason (``code`` and text) it must not be paid."""

    ok: bool
    reason: str
    invoice: Invoice | None = None
    code: RefusalCode | None = None

    @property
    def amount_msats(self) -> int:
        """The invoice amount (0 when the bill was refused before decoding)."""
        return (self.invoice.amount_msats or 0) if self.invoice else 0


def _refuse(code: RefusalCode, reason: str, invoice: Invoice | None = None) -> BillCheck:
    return BillCheck(False, reason, invoice, code)


def check_bill(
    bill: Bill,
    *,
    job_id: str,
    providers: tuple[str, ...],
    bid_msats: int,
    budget_left_msats: int | None,
    now: float,
    paid_hashes: frozenset[str] = frozenset(),
) -> BillCheck:
    """Whether to pay ``bill`` for our job ``job_id`` — every rule a payer must apply.

    The invoice must decode and verify, carry an amount equal to the ``amount`` tag, not
    exceed the bid nor what the budget has left (``None`` = unlimited), not be expired,
    name no other job, and not be an invoice we already paid (``paid_hashes``). A bill
    from a provider the job did not target (when it targeted any) is refused too.
    """
    if bill.job_id != job_id:
        return _refuse(RefusalCode.WRONG_JOB, f"the bill is for job {bill.job_id[:12]}…, not ours ({job_id[:12]}…)")
    if providers and bill.provider not in providers:
        return _refuse(
            RefusalCode.NOT_TARGETED, f"the bill comes from {bill.provider[:12]}…, a provider this job did not target"
        )
    try:
        invoice = decode_invoice(bill.bolt11)
    except MalformedEvent as exc:
        return _refuse(RefusalCode.BAD_INVOICE, str(exc))
    return _check_invoice(bill, invoice, job_id, bid_msats, budget_left_msats, now, paid_hashes)


def _check_invoice(
    bill: Bill,
    invoice: Invoice,
    job_id: str,
    bid_msats: int,
    budget_left_msats: int | None,
    now: float,
    paid_hashes: frozenset[str],
) -> BillCheck:
    """The rules on a decoded invoice: its amount, the bid and budget, its expiry and its job."""
    if invoice.amount_msats is None:
        return _refuse(
            RefusalCode.NO_AMOUNT,
            "the invoice has no amount (an open amount invoice is never paid automatically)",
            invoice,
        )
    if bill.amount_msats is None:
        return _refuse(RefusalCode.NO_AMOUNT_TAG, "the bill has no amount tag to check the invoice against", invoice)
    if invoice.amount_msats != bill.amount_msats:
        return _refuse(
            RefusalCode.AMOUNT_MISMATCH,
            f"the invoice is for {invoice.amount_msats} msats but the amount tag says {bill.amount_msats} msats",
            invoice,
        )
    if invoice.amount_msats > bid_msats:
        return _refuse(
            RefusalCode.OVER_BID,
            f"the invoice asks {invoice.amount_msats} msats, above the bid of {bid_msats} msats",
            invoice,
        )
    if budget_left_msats is not None and invoice.amount_msats > budget_left_msats:
        return _refuse(
            RefusalCode.OVER_BUDGET,
            f"the invoice asks {invoice.amount_msats} msats, more than the {budget_left_msats} left in the budget",
            invoice,
        )
    if invoice.expired(now):
        return _refuse(RefusalCode.EXPIRED, f"the invoice expired {int(now - invoice.expires_at)} s ago", invoice)
    named = invoice.job_id
    if named is not None and named != job_id:
        return _refuse(RefusalCode.OTHER_JOB, f"the invoice is for another job ({named[:12]}…)", invoice)
    if invoice.payment_hash in paid_hashes:
        return _refuse(
            RefusalCode.ALREADY_PAID,
            "this invoice was already paid (for another job); paying it again would pay twice",
            invoice,
        )
    return BillCheck(True, "ok", invoice)
