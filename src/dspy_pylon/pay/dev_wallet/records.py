"""The development wallet's records, limits and checks (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dspy_pylon.errors import ConfigError, MalformedEvent, WalletError
from dspy_pylon.pay import nip47
from dspy_pylon.pay.invoice import decode_invoice

DEV_WALLET_LABEL = "development wallet — no real money"
# Regtest invoices ("lnbcrt..."): a real (mainnet) wallet refuses them, so nothing issued here can
# ever be mistaken for, or paid as, a real invoice.
CURRENCY = "bcrt"
NETWORK = "regtest"
DEFAULT_EXPIRY_S = 3600
MAX_EXPIRY_S = 365 * 24 * 3600
# A BOLT11 tagged field holds at most 1023 five-bit groups: 639 bytes of description.
MAX_DESCRIPTION_BYTES = 639
METHODS = ("pay_invoice", "make_invoice", "lookup_invoice", "get_balance", "get_info")
NOTIFICATIONS = (nip47.PAYMENT_RECEIVED, nip47.PAYMENT_SENT)
ENCRYPTIONS = (nip47.NIP04, nip47.NIP44_V2)
# Kind 23194 is ephemeral and compliant relays do not keep it, but some do (PyPI nostr-relay):
# from those, requests sent up to a minute before the service (re)started are still answered, and
# the ones already handled are recognised in ``handled_requests``.
SUBSCRIBE_LOOKBACK_S = 60

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class DevWalletRefusal(WalletError):
    """The development wallet refused an operation: ``code`` is the NIP-47 error code sent back."""

    def __reduce__(self) -> Any:
        return (DevWalletRefusal, (str(self), self.code))


def _refuse(code: str, message: str) -> DevWalletRefusal:
    return DevWalletRefusal(message, code)


@dataclass(frozen=True)
class DevAccount:
    """An account of the development wallet. The client secret stays out of ``repr``."""

    name: str
    client_pubkey: str
    balance_msats: int
    created_at: int
    client_secret: str = field(repr=False, compare=False)


@dataclass(frozen=True)
class DevInvoice:
    """An invoice the development wallet issued (one row of ``invoices``)."""

    payment_hash: str
    bolt11: str
    payee: str
    amount_msats: int
    description: str | None
    description_hash: str | None
    preimage: str = field(repr=False)
    created_at: int
    expires_at: int
    state: str
    settled_at: int | None
    payer: str | None
    fees_paid_msats: int

    def state_at(self, now: float) -> str:
        """``settled``, ``expired`` (pending past its expiry) or ``pending``."""
        if self.state == nip47.SETTLED:
            return nip47.SETTLED
        return nip47.EXPIRED if now >= self.expires_at else nip47.PENDING

    def transaction(self, direction: str, now: float) -> nip47.Transaction:
        """The NIP-47 transaction object seen by the payee (``incoming``) or payer (``outgoing``).

        The preimage is shown only once settled: before that it is what the payer buys.
        """
        state = self.state_at(now)
        return nip47.Transaction(
            type=direction,
            state=state,
            invoice=self.bolt11,
            description=self.description,
            description_hash=self.description_hash,
            preimage=self.preimage if state == nip47.SETTLED else None,
            payment_hash=self.payment_hash,
            amount=self.amount_msats,
            fees_paid=self.fees_paid_msats if direction == nip47.OUTGOING else 0,
            created_at=self.created_at,
            expires_at=self.expires_at,
            settled_at=self.settled_at,
        )


@dataclass(frozen=True)
class DevPayment:
    """A settled payment: ``preimage`` (sha256 of it is the payment hash) and fees (always 0)."""

    preimage: str = field(repr=False)
    fees_paid_msats: int
    invoice: DevInvoice


@dataclass(frozen=True)
class DevWalletTotals:
    """Totals for inspection: money in accounts, and invoices by state."""

    accounts: int
    balance_msats: int
    invoices_pending: int
    invoices_settled: int
    settled_msats: int


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"account name {name!r} is invalid: use 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")
    return name


def _check_msats(msats: int, what: str, *, allow_zero: bool) -> int:
    if isinstance(msats, bool) or not isinstance(msats, int):
        raise ConfigError(f"{what} must be an integer number of millisatoshis, got {type(msats).__name__}")
    low = 0 if allow_zero else 1
    if not low <= msats <= nip47.MAX_AMOUNT_MSATS:
        raise ConfigError(f"{what} must be between {low} and {nip47.MAX_AMOUNT_MSATS} millisatoshis, got {msats}")
    return msats


def _payment_hash(invoice: str) -> str:
    try:
        return decode_invoice(invoice).payment_hash
    except MalformedEvent as exc:
        raise _refuse(nip47.OTHER, str(exc)) from None
