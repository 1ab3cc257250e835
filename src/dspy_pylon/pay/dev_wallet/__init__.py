"""The development wallet: a NIP-47 wallet service with fake Lightning settlement — no real money.

With it the whole payment protocol runs for real on one machine: a customer's nostr-sdk
``NostrWalletConnect`` client talks to it over a relay exactly as to a real NWC wallet.

* :class:`DevWalletStore` (SQLite) keeps accounts and balances in integer millisatoshis, issues
  real-format BOLT11 invoices for **regtest** (``lnbcrt...``: no mainnet wallet can ever pay them),
  signed by a node key of its own, and settles payments between its own accounts instantly, in
  one SQLite transaction. It pays only invoices it issued itself.
* :class:`DevWalletService` is the I/O edge: it answers NIP-47 requests (kind 23194) from the
  accounts' client keys on the relays, and publishes ``payment_received`` / ``payment_sent``
  notifications. One NWC URI per account (:meth:`DevWalletStore.nwc_uri`).

Every user-facing text carries :data:`DEV_WALLET_LABEL`. Secrets (the service key, the node key,
the accounts' client secrets, URIs) stay in the database file (mode 0600): never logged, never in
a ``repr``.

Modules: :mod:`~.records` (records, limits, checks), :mod:`~.issuer` (regtest BOLT11, pure),
:mod:`~.store` (SQLite) and :mod:`~.service` (NIP-47 on the relays). Not part of the top-level
``dspy_pylon`` namespace: it is a tool for development, tests and the demo.
"""

from dspy_pylon.pay.dev_wallet.issuer import issue_invoice
from dspy_pylon.pay.dev_wallet.records import (
    CURRENCY,
    DEV_WALLET_LABEL,
    NETWORK,
    DevAccount,
    DevInvoice,
    DevPayment,
    DevWalletRefusal,
    DevWalletTotals,
)
from dspy_pylon.pay.dev_wallet.service import DevWalletService
from dspy_pylon.pay.dev_wallet.store import DevWalletStore

__all__ = [
    "CURRENCY",
    "DEV_WALLET_LABEL",
    "NETWORK",
    "DevAccount",
    "DevInvoice",
    "DevPayment",
    "DevWalletRefusal",
    "DevWalletService",
    "DevWalletStore",
    "DevWalletTotals",
    "issue_invoice",
]
