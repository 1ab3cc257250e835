"""Regtest BOLT11 invoices signed by the development wallet's node key (pure: no I/O)."""

from __future__ import annotations

import hashlib
import os
import time

from dspy_pylon.pay import nip47
from dspy_pylon.pay.dev_wallet.records import (
    _READ_BACK_FROM_MSATS,
    CURRENCY,
    MAX_DESCRIPTION_BYTES,
    MAX_EXPIRY_S,
    _check_msats,
    _refuse,
)


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
    carrying the description text. Bad amounts, expiries and descriptions are refused with
    the NIP-47 code the wallet sends back.
    """
    import bolt11
    from bolt11.models.tags import Tag, TagChar, Tags

    _check_msats(amount_msats, "amount_msats", allow_zero=False)
    if isinstance(expiry_s, bool) or not isinstance(expiry_s, int) or not 1 <= expiry_s <= MAX_EXPIRY_S:
        raise _refuse(nip47.OTHER, f"expiry must be 1 to {MAX_EXPIRY_S} seconds, got {expiry_s!r}")
    if description is not None and len(description.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        raise _refuse(nip47.OTHER, f"description is longer than {MAX_DESCRIPTION_BYTES} bytes")
    created_at = int(time.time() if now is None else now)
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).hexdigest()
    purpose = (
        Tag(TagChar.description_hash, description_hash)
        if description_hash is not None
        else Tag(TagChar.description, description or "")
    )
    tags = Tags(
        [
            Tag(TagChar.payment_hash, payment_hash),
            purpose,
            Tag(TagChar.expire_time, expiry_s),
            Tag(TagChar.payment_secret, os.urandom(32).hex()),
        ]
    )
    invoice = bolt11.encode(
        bolt11.Bolt11(currency=CURRENCY, date=created_at, tags=tags, amount_msat=bolt11.MilliSatoshi(amount_msats)),
        node_secret,
    )
    # bolt11 2.2.0 mis-encodes some amounts of 1000 BTC and more (whole-bitcoin multiples):
    # refuse an invoice whose amount would not read back exactly. Decoding costs ~4 ms, so
    # only amounts of a bitcoin or more, far above any job price, are read back.
    if amount_msats >= _READ_BACK_FROM_MSATS:
        encoded_amount = bolt11.decode(invoice).amount_msat
        if encoded_amount is None or int(encoded_amount) != amount_msats:
            raise _refuse(nip47.OTHER, f"{amount_msats} msats cannot be encoded exactly in a BOLT11 invoice")
    return invoice, payment_hash, preimage, created_at
