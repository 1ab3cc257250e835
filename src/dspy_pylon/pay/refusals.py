"""Why a bill was not paid, as a code (kept apart from :mod:`dspy_pylon.pay.invoice`, whose
imports reach DSPy, so the ledger and ``pylon spend`` stay light)."""

from __future__ import annotations

import enum

__all__ = ["RefusalCode"]


class RefusalCode(enum.StrEnum):
    """Why a bill was not paid: what the ledger records and code may act on (the reason text is for people)."""

    WRONG_JOB = "wrong_job"
    NOT_TARGETED = "not_targeted"
    BAD_INVOICE = "bad_invoice"
    NO_AMOUNT = "no_amount"
    NO_AMOUNT_TAG = "no_amount_tag"
    AMOUNT_MISMATCH = "amount_mismatch"
    OVER_BID = "over_bid"
    OVER_BUDGET = "over_budget"
    EXPIRED = "expired"
    OTHER_JOB = "other_job"
    #: The invoice was already paid, for another job (this process saw it, or the ledger has it).
    ALREADY_PAID = "already_paid"
    #: The ``approve`` callback said no.
    DECLINED = "declined"
    #: Refused by a ledger version that did not record why (rows upgraded from schema 0).
    UNKNOWN = "unknown"
