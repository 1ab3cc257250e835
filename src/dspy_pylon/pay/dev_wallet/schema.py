"""The development wallet's SQLite schema: accounts, invoices and handled requests."""

from __future__ import annotations

META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS accounts (
        name TEXT PRIMARY KEY,
        client_secret TEXT NOT NULL,
        client_pubkey TEXT NOT NULL UNIQUE,
        balance_msats INTEGER NOT NULL CHECK (balance_msats >= 0),
        created_at INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS invoices (
        payment_hash TEXT PRIMARY KEY,
        bolt11 TEXT NOT NULL UNIQUE,
        payee TEXT NOT NULL REFERENCES accounts(name),
        amount_msats INTEGER NOT NULL CHECK (amount_msats > 0),
        description TEXT,
        description_hash TEXT,
        preimage TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'settled')),
        settled_at INTEGER,
        payer TEXT REFERENCES accounts(name),
        fees_paid_msats INTEGER NOT NULL DEFAULT 0
    )""",
    # One row per request event: claimed before it runs, so a re-delivered request is answered
    # with the stored response event and never executed twice.
    """CREATE TABLE IF NOT EXISTS handled_requests (
        event_id TEXT PRIMARY KEY,
        client_pubkey TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        response_event TEXT
    )""",
)


ACCOUNT_COLUMNS = "name, client_pubkey, balance_msats, created_at, client_secret"
INVOICE_COLUMNS = (
    "payment_hash, bolt11, payee, amount_msats, description, description_hash, preimage, "
    "created_at, expires_at, state, settled_at, payer, fees_paid_msats"
)
