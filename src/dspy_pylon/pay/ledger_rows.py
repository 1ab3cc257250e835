"""The rows the spend ledger returns, and what :meth:`~dspy_pylon.pay.ledger.SpendLedger.begin_payment` found."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dspy_pylon.pay.ledger_schema import Earned, Spent, State
from dspy_pylon.pay.refusals import RefusalCode


class Claim(enum.Enum):
    """What :meth:`SpendLedger.begin_payment` found."""

    #: The intent is written: this caller must pay now.
    MINE = "mine"
    #: The job is being paid, paid or over already (a duplicate bill, another thread): do not pay.
    TAKEN = "taken"
    #: This invoice was already used for another job: refuse it.
    INVOICE_USED = "invoice_used"
    #: The job is not in the ledger.
    UNKNOWN_JOB = "unknown_job"


@dataclass(frozen=True)
class LedgerEntry:
    """One job's row. Amounts are millisatoshis; times are Unix seconds."""

    job_id: str
    direction: str
    provider: str
    customer: str
    model: str
    bid_msats: int
    invoice_msats: int | None
    paid_msats: int
    fees_msats: int
    payment_hash: str | None
    preimage: str | None
    bolt11: str | None
    state: State
    reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float | None
    created_at: float
    updated_at: float
    paid_at: float | None
    refusal: RefusalCode | None = None
    interrupted: bool = False
    relays_checked_at: float | None = None

    @classmethod
    def _from_row(cls, row: tuple[object, ...]) -> LedgerEntry:
        values = list(row)
        values[12] = (Spent if values[1] == "spent" else Earned)(str(values[12]))
        values[20] = RefusalCode(str(values[20])) if values[20] else None
        values[21] = bool(values[21])
        return cls(*values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SpendRow:
    """A line of the ``pylon spend`` table: totals for one day, provider or model."""

    key: str
    jobs: int
    paid_jobs: int
    paid_msats: int
    unanswered_paid_jobs: int
    refused_jobs: int
    prompt_tokens: int
    completion_tokens: int
