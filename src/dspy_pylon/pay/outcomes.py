"""What came of asking to pay a bill: the payer's answers, fed to a job's lifecycle (pure data)."""

from __future__ import annotations

from dataclasses import dataclass

from dspy_pylon.errors import PaymentRequired, PylonError


@dataclass(frozen=True)
class PaymentSettled:
    """The wallet paid ``msats`` (fees included) to ``provider``."""

    provider: str
    msats: int


@dataclass(frozen=True)
class PaymentUnconfirmed:
    """The wallet was asked to pay ``msats`` and did not say whether it did (a wallet timeout)."""

    provider: str
    msats: int
    error: PylonError


@dataclass(frozen=True)
class PaymentStopped:
    """The bill was refused (a check, the approve callback) or the wallet failed: nothing was paid."""

    error: PylonError


@dataclass(frozen=True)
class PaymentSkipped:
    """The ledger says this job is paid (or being paid) already, e.g. by another thread: nothing was paid now."""


@dataclass(frozen=True)
class ApprovalNeeded:
    """``auto_pay`` is off: the bill waits for :func:`dspy_pylon.pay` until ``expires_at`` (Unix s)."""

    error: PaymentRequired
    expires_at: float


PaymentOutcome = PaymentSettled | PaymentUnconfirmed | PaymentStopped | PaymentSkipped | ApprovalNeeded
