"""The development wallet's accounts, balances, invoices and handled requests (SQLite)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dspy_pylon.errors import ConfigError
from dspy_pylon.pay import nip47
from dspy_pylon.pay.dev_wallet.issuer import issue_invoice
from dspy_pylon.pay.dev_wallet.records import (
    DEFAULT_EXPIRY_S,
    DEV_WALLET_LABEL,
    DevAccount,
    DevInvoice,
    DevPayment,
    DevWalletTotals,
    _check_msats,
    _check_name,
    _payment_hash,
    _refuse,
)
from dspy_pylon.pay.dev_wallet.schema import ACCOUNT_COLUMNS, INVOICE_COLUMNS, META_SCHEMA, SCHEMA
from dspy_pylon.sqlite_store import OffLoop, open_store


class DevWalletStore(OffLoop):
    """Accounts, balances, invoices and handled requests of the development wallet (SQLite, WAL).

    Thread-safe: one lock serialises the connection. Money moves only inside
    ``BEGIN IMMEDIATE`` transactions, so concurrent payers (threads or processes) can never
    spend the same millisatoshi twice; ``CHECK (balance_msats >= 0)`` backs that up.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = open_store(self.path, META_SCHEMA)
        for statement in SCHEMA:
            self._db.execute(statement)
        self._restrict_permissions()
        with self._transaction():
            self._service_secret = self._meta_secret("service_secret", _new_nostr_secret)
            self._node_secret = self._meta_secret("node_secret", lambda: secrets.token_hex(32))

    def _restrict_permissions(self) -> None:
        # The file holds every secret of the wallet.
        for suffix in ("", "-wal", "-shm"):
            candidate = self.path.with_name(self.path.name + suffix)
            if candidate.exists():
                os.chmod(candidate, 0o600)

    def _meta_secret(self, key: str, make: Callable[[], str]) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
        value = str(make())
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value

    def __repr__(self) -> str:
        return f"DevWalletStore({str(self.path)!r}) [{DEV_WALLET_LABEL}]"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Keys.

    def service_keys(self) -> Any:
        """The wallet service's nostr-sdk ``Keys`` (persisted: URIs stay valid across restarts)."""
        import nostr_sdk

        return nostr_sdk.Keys.parse(self._service_secret)

    @property
    def service_pubkey(self) -> str:
        """The wallet service's public key (hex): the ``p`` of every request."""
        return str(self.service_keys().public_key().to_hex())

    @property
    def node_pubkey(self) -> str:
        """The invoice-signing node's public key (33-byte compressed, hex): the payee of every invoice."""
        import coincurve

        return str(coincurve.PrivateKey(bytes.fromhex(self._node_secret)).public_key.format().hex())

    # Accounts.

    def create_account(self, name: str, fund_msats: int = 0) -> DevAccount:
        """Create account ``name`` with ``fund_msats``; an existing one keeps its keys and is funded."""
        import nostr_sdk

        _check_name(name)
        _check_msats(fund_msats, "fund_msats", allow_zero=True)
        with self._transaction() as db:
            if self._account_row(db, name) is None:
                keys = nostr_sdk.Keys.generate()
                db.execute(
                    "INSERT INTO accounts (name, client_secret, client_pubkey, balance_msats, created_at) "
                    "VALUES (?, ?, ?, 0, ?)",
                    (name, keys.secret_key().to_hex(), keys.public_key().to_hex(), int(time.time())),
                )
            self._credit(db, name, fund_msats)
            account = self._account_row(db, name)
        assert account is not None
        return account

    def fund(self, name: str, msats: int) -> int:
        """Add ``msats`` to account ``name`` (development money); returns the new balance."""
        _check_msats(msats, "msats", allow_zero=True)
        with self._transaction() as db:
            self._require_account(db, name)
            return self._credit(db, name, msats)

    def balance(self, name: str) -> int:
        """Account ``name``'s balance in millisatoshis."""
        with self._lock:
            return self._require_account(self._db, name).balance_msats

    def account(self, name: str) -> DevAccount | None:
        """Account ``name``, or None."""
        with self._lock:
            return self._account_row(self._db, name)

    def accounts(self) -> list[DevAccount]:
        """Every account, by name."""
        with self._lock:
            rows = self._db.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name").fetchall()
        return [DevAccount(*row) for row in rows]

    def account_for_pubkey(self, pubkey_hex: str) -> str | None:
        """The name of the account whose client key is ``pubkey_hex``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT name FROM accounts WHERE client_pubkey = ?", (pubkey_hex.lower(),)
            ).fetchone()
        return None if row is None else str(row[0])

    def nwc_uri(self, name: str, relays: Sequence[str]) -> str:
        """Account ``name``'s NWC URI (holds its client secret: treat it as a password)."""
        import nostr_sdk

        if not relays:
            raise ConfigError("an NWC URI needs at least one relay URL")
        with self._lock:
            account = self._require_account(self._db, name)
        try:
            urls = [nostr_sdk.RelayUrl.parse(url) for url in relays]
        except Exception as exc:  # nostr-sdk's own error type for a bad URL
            raise ConfigError(f"relay URL is invalid: {exc}") from None
        uri = nostr_sdk.NostrWalletConnectUri(
            self.service_keys().public_key(), urls, nostr_sdk.SecretKey.parse(account.client_secret), None
        )
        return str(uri)

    def _account_row(self, db: sqlite3.Connection, name: str) -> DevAccount | None:
        row = db.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,)).fetchone()
        return None if row is None else DevAccount(*row)

    def _require_account(self, db: sqlite3.Connection, name: str) -> DevAccount:
        account = self._account_row(db, name)
        if account is None:
            raise _refuse(nip47.UNAUTHORIZED, f"no account named {name!r} ({DEV_WALLET_LABEL})")
        return account

    def _credit(self, db: sqlite3.Connection, name: str, msats: int) -> int:
        balance = self._require_account(db, name).balance_msats + msats
        if balance > nip47.MAX_AMOUNT_MSATS:
            raise _refuse(nip47.OTHER, f"account {name!r} would hold more than 21 million bitcoin")
        db.execute("UPDATE accounts SET balance_msats = ? WHERE name = ?", (balance, name))
        return balance

    # Invoices.

    def make_invoice(
        self,
        account: str,
        amount_msats: int,
        description: str | None = None,
        expiry_s: int = DEFAULT_EXPIRY_S,
        now: float | None = None,
        *,
        description_hash: str | None = None,
    ) -> DevInvoice:
        """Issue a regtest BOLT11 invoice paying ``amount_msats`` to ``account``.

        With ``description_hash`` (64 hex digits) the invoice commits to that hash instead of
        carrying the description text.
        """
        invoice, payment_hash, preimage, created_at = issue_invoice(
            self._node_secret, amount_msats, description, expiry_s, now, description_hash=description_hash
        )
        record = DevInvoice(
            payment_hash=payment_hash,
            bolt11=invoice,
            payee=account,
            amount_msats=amount_msats,
            description=description,
            description_hash=description_hash,
            preimage=preimage.hex(),
            created_at=created_at,
            expires_at=created_at + expiry_s,
            state=nip47.PENDING,
            settled_at=None,
            payer=None,
            fees_paid_msats=0,
        )
        with self._transaction() as db:
            self._require_account(db, account)
            db.execute(
                f"INSERT INTO invoices ({INVOICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.payment_hash,
                    record.bolt11,
                    record.payee,
                    record.amount_msats,
                    record.description,
                    record.description_hash,
                    record.preimage,
                    record.created_at,
                    record.expires_at,
                    record.state,
                    record.settled_at,
                    record.payer,
                    record.fees_paid_msats,
                ),
            )
        return record

    def pay_invoice(
        self, payer: str, invoice: str, now: float | None = None, amount_msats: int | None = None
    ) -> DevPayment:
        """Pay ``invoice`` from ``payer``'s balance to its payee, in one transaction; fees are 0.

        Raises :class:`DevWalletRefusal` (nothing moved) for a malformed invoice, one this wallet
        did not issue, one expired or already paid, an ``amount_msats`` that differs from the
        invoice's, a payment to oneself, or a balance that does not cover the amount.
        """
        moment = time.time() if now is None else now
        # An invoice issued here is found by its exact text, without the ~4 ms decode; only an
        # unknown string is decoded (to tell a malformed invoice from a foreign one).
        with self._lock:
            row = self._db.execute("SELECT payment_hash FROM invoices WHERE bolt11 = ?", (invoice.strip(),)).fetchone()
        payment_hash = str(row[0]) if row else _payment_hash(invoice)
        with self._transaction() as db:
            payer_account = self._require_account(db, payer)
            found = self._invoice_row(db, payment_hash)
            # The whole string must match: a forged invoice reusing a known payment hash pays nothing.
            if found is None or found.bolt11.lower() != invoice.strip().lower():
                raise _refuse(
                    nip47.NOT_IMPLEMENTED,
                    "the development wallet pays only invoices it issued itself; no real money moves",
                )
            if amount_msats is not None and amount_msats != found.amount_msats:
                raise _refuse(
                    nip47.OTHER,
                    f"amount {amount_msats} msats differs from the invoice's {found.amount_msats} msats",
                )
            if found.state == nip47.SETTLED:
                raise _refuse(nip47.PAYMENT_FAILED, "invoice already paid")
            if moment >= found.expires_at:
                raise _refuse(nip47.PAYMENT_FAILED, "invoice expired")
            if found.payee == payer:
                raise _refuse(nip47.PAYMENT_FAILED, "an account cannot pay its own invoice")
            if payer_account.balance_msats < found.amount_msats:
                raise _refuse(
                    nip47.INSUFFICIENT_BALANCE,
                    f"insufficient balance: {payer_account.balance_msats} msats, invoice needs "
                    f"{found.amount_msats} msats ({DEV_WALLET_LABEL})",
                )
            db.execute(
                "UPDATE accounts SET balance_msats = balance_msats - ? WHERE name = ?", (found.amount_msats, payer)
            )
            self._credit(db, found.payee, found.amount_msats)
            settled_at = int(moment)
            db.execute(
                "UPDATE invoices SET state = 'settled', settled_at = ?, payer = ?, fees_paid_msats = 0 "
                "WHERE payment_hash = ?",
                (settled_at, payer, payment_hash),
            )
            settled = self._invoice_row(db, payment_hash)
        assert settled is not None
        return DevPayment(preimage=settled.preimage, fees_paid_msats=0, invoice=settled)

    def lookup(
        self, account: str, payment_hash: str | None = None, bolt11: str | None = None, now: float | None = None
    ) -> nip47.Transaction:
        """The transaction for an invoice ``account`` issued (incoming) or paid (outgoing).

        Identify it by ``payment_hash`` or ``bolt11``. Any other invoice is ``NOT_FOUND``.
        """
        if payment_hash is None and bolt11 is None:
            raise _refuse(nip47.OTHER, "lookup needs a payment_hash or an invoice")
        if payment_hash is None:
            assert bolt11 is not None
            payment_hash = _payment_hash(bolt11)
        moment = time.time() if now is None else now
        with self._lock:
            self._require_account(self._db, account)
            found = self._invoice_row(self._db, payment_hash.lower())
        if found is not None and found.payee == account:
            return found.transaction(nip47.INCOMING, moment)
        if found is not None and found.payer == account:
            return found.transaction(nip47.OUTGOING, moment)
        raise _refuse(nip47.NOT_FOUND, f"no invoice with payment hash {payment_hash[:16]}… for this account")

    def invoice(self, payment_hash: str) -> DevInvoice | None:
        """The invoice with ``payment_hash``, whoever issued it (inspection), or None."""
        with self._lock:
            return self._invoice_row(self._db, payment_hash.lower())

    def transactions(self) -> list[DevInvoice]:
        """Every invoice, oldest first (inspection)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {INVOICE_COLUMNS} FROM invoices ORDER BY created_at, rowid").fetchall()
        return [DevInvoice(*row) for row in rows]

    def totals(self) -> DevWalletTotals:
        """Money held and invoices by state (inspection)."""
        with self._lock:
            accounts, balance = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(balance_msats), 0) FROM accounts"
            ).fetchone()
            pending, settled, settled_msats = self._db.execute(
                "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'settled'), 0), "
                "COALESCE(SUM(CASE WHEN state = 'settled' THEN amount_msats END), 0) FROM invoices"
            ).fetchone()
        return DevWalletTotals(int(accounts), int(balance), int(pending), int(settled), int(settled_msats))

    def _invoice_row(self, db: sqlite3.Connection, payment_hash: str) -> DevInvoice | None:
        row = db.execute(f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?", (payment_hash,)).fetchone()
        return None if row is None else DevInvoice(*row)

    # Handled requests.

    def claim_request(self, event_id: str, client_pubkey: str, now: float | None = None) -> tuple[bool, str | None]:
        """Claim request ``event_id`` before running it: ``(True, None)`` the first time.

        Later: ``(False, response_event_json)`` once answered, ``(False, None)`` while the first
        delivery is still running (or was cut short by a crash: it is not run again).
        """
        with self._transaction() as db:
            row = db.execute("SELECT response_event FROM handled_requests WHERE event_id = ?", (event_id,)).fetchone()
            if row is not None:
                return False, row[0]
            db.execute(
                "INSERT INTO handled_requests (event_id, client_pubkey, received_at) VALUES (?, ?, ?)",
                (event_id, client_pubkey, int(time.time() if now is None else now)),
            )
        return True, None

    def record_response(self, event_id: str, response_event_json: str) -> None:
        """Store the signed response to ``event_id``, re-sent when the request comes again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE handled_requests SET response_event = ? WHERE event_id = ?", (response_event_json, event_id)
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
        self._stop_writer()


def _new_nostr_secret() -> str:
    import nostr_sdk

    return str(nostr_sdk.Keys.generate().secret_key().to_hex())
