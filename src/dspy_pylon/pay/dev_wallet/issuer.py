"""Regtest BOLT11 invoices signed by the development wallet's node key (pure: no I/O)."""

from __future__ import annotations

import hashlib
import os
import re
import time

from dspy_pylon.pay import nip47
from dspy_pylon.pay.bolt11_writer import write_bolt11
from dspy_pylon.pay.dev_wallet.records import (
    CURRENCY,
    MAX_DESCRIPTION_BYTES,
    MAX_EXPIRY_S,
    _check_msats,
    _refuse,
)

_HEX32 = re.compile(r"[0-9a-fA-F]{64}")


def issue_invoice(
    node_secret: str,
    amount_msats: int,
    description: str | None,
    expiry_s: int,
    now: float | None = None,
    *,
    description_hash: str | None = None,
) -> tuple[str, str, bytes, int]:
    """A new invoice for ``amount_msats``: ``(bolt11, payment_hash, preimage, created_at)``.

    With ``description_hash`` (64 hex digits) the invoice commits to that hash instead of
    carrying the description text. Bad amounts, expiries, descriptions and description hashes
    are refused with the NIP-47 code the wallet sends back.
    """
    _check_msats(amount_msats, "amount_msats", allow_zero=False)
    if isinstance(expiry_s, bool) or not isinstance(expiry_s, int) or not 1 <= expiry_s <= MAX_EXPIRY_S:
        raise _refuse(nip47.OTHER, f"expiry must be 1 to {MAX_EXPIRY_S} seconds, got {expiry_s!r}")
    if description is not None and len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        raise _refuse(nip47.OTHER, f"description is longer than {MAX_DESCRIPTION_BYTES} bytes")
    if description_hash is not None and not _HEX32.fullmatch(description_hash):
        raise _refuse(nip47.OTHER, "description_hash must be 64 hex digits")
    created_at = int(time.time() if now is None else now)
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).hexdigest()
    invoice = write_bolt11(
        currency=CURRENCY,
        amount_msats=amount_msats,
        timestamp=created_at,
        payment_hash=payment_hash,
        payment_secret=os.urandom(32).hex(),
        node_secret=node_secret,
        # A description hash wins over a description given with it, as it always has here.
        description=(description or "") if description_hash is None else None,
        description_hash=description_hash,
        expiry=expiry_s,
    )
    return invoice, payment_hash, preimage, created_at
