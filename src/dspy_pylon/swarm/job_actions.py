"""What the customer's job machine asks its driver to do (:mod:`dspy_pylon.swarm.lifecycle`).

Plain frozen dataclasses: :meth:`~dspy_pylon.swarm.lifecycle.CustomerJob.receive` returns a
list of them, and :class:`~dspy_pylon.swarm.customer.SwarmCustomer` performs each in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from dspy_pylon.errors import PaymentRequired, PylonError
from dspy_pylon.nostr.nip90 import JobResult
from dspy_pylon.pay.invoice import Bill

__all__ = ["Action", "Blame", "Cancel", "Close", "Credit", "Deliver", "Ignore", "Note", "Pay", "Raise", "Suspend"]


@dataclass(frozen=True)
class Pay:
    """Check ``bill`` and pay it; feed back the outcome (PaymentSettled, PaymentStopped, ...)."""

    bill: Bill
    approved: bool = False


@dataclass(frozen=True)
class Note:
    """Add an observation to the job's ledger row (for people: nothing reads it back)."""

    text: str


@dataclass(frozen=True)
class Ignore:
    """An event was dropped; count it under ``why``."""

    why: str


@dataclass(frozen=True)
class Credit:
    """``provider`` answered in ``latency_ms``."""

    provider: str
    latency_ms: float


@dataclass(frozen=True)
class Blame:
    """``provider`` failed the job: ``"error"`` (a bad answer or an error status) or ``"timeout"``."""

    provider: str
    kind: str


@dataclass(frozen=True)
class Cancel:
    """Publish a NIP-09 deletion of the job request (best effort); in the ``background``, not
    holding up the call, when the job is answered and only the others' work is to stop."""

    why: str
    background: bool = False


@dataclass(frozen=True)
class Close:
    """The job is over: record it and give back the unspent reservation. Emitted exactly once.

    ``unconfirmed_msats`` is a payment whose outcome is unknown: it counts as spent until
    the ledger learns otherwise, so a budget can never be exceeded by it.
    """

    answered: bool
    reason: str = ""
    unconfirmed_msats: int = 0
    provider: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None


@dataclass(frozen=True)
class Deliver:
    """Return ``result`` to the caller."""

    result: JobResult
    relay: str
    latency_ms: float
    cost_msats: int


@dataclass(frozen=True)
class Raise:
    """Raise ``error`` to the caller."""

    error: PylonError


@dataclass(frozen=True)
class Suspend:
    """Park the job until the user approves its bill; release its reservation meanwhile; raise ``error``."""

    error: PaymentRequired


Action = Pay | Note | Ignore | Credit | Blame | Cancel | Close | Deliver | Raise | Suspend
