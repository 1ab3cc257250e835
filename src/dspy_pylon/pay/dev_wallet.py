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
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy_pylon.errors import ConfigError, MalformedEvent, PylonError, WalletError
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.pay import nip47
from dspy_pylon.pay.invoice import decode_invoice
from dspy_pylon.sqlite_store import open_store

log = logging.getLogger("dspy_pylon.pay.dev_wallet")

DEV_WALLET_LABEL = "development wallet — no real money"
# Regtest invoices ("lnbcrt..."): a real (mainnet) wallet refuses them, so nothing issued here can
# ever be mistaken for, or paid as, a real invoice.
CURRENCY = "bcrt"
NETWORK = "regtest"
DEFAULT_EXPIRY_S = 3600
# Invoices of at least this much (1 BTC) are decoded again to catch bolt11's encoding bug.
_READ_BACK_FROM_MSATS = 100_000_000_000
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

_META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SCHEMA = (
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


_ACCOUNT_COLUMNS = "name, client_pubkey, balance_msats, created_at, client_secret"
_INVOICE_COLUMNS = (
    "payment_hash, bolt11, payee, amount_msats, description, description_hash, preimage, "
    "created_at, expires_at, state, settled_at, payer, fees_paid_msats"
)


class DevWalletStore:
    """Accounts, balances, invoices and handled requests of the development wallet (SQLite, WAL).

    Thread-safe: one lock serialises the connection. Money moves only inside
    ``BEGIN IMMEDIATE`` transactions, so concurrent payers (threads or processes) can never
    spend the same millisatoshi twice; ``CHECK (balance_msats >= 0)`` backs that up.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = open_store(self.path, _META_SCHEMA)
        for statement in _SCHEMA:
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
            rows = self._db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY name").fetchall()
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
        row = db.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,)).fetchone()
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
            self._node_secret,
        )
        # bolt11 2.2.0 mis-encodes some amounts of 1000 BTC and more (whole-bitcoin multiples):
        # refuse an invoice whose amount would not read back exactly. Decoding costs ~4 ms, so
        # only amounts of a bitcoin or more, far above any job price, are read back.
        if amount_msats >= _READ_BACK_FROM_MSATS:
            encoded_amount = bolt11.decode(invoice).amount_msat
            if encoded_amount is None or int(encoded_amount) != amount_msats:
                raise _refuse(nip47.OTHER, f"{amount_msats} msats cannot be encoded exactly in a BOLT11 invoice")
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
                f"INSERT INTO invoices ({_INVOICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            rows = self._db.execute(f"SELECT {_INVOICE_COLUMNS} FROM invoices ORDER BY created_at, rowid").fetchall()
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
        row = db.execute(f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?", (payment_hash,)).fetchone()
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


def _new_nostr_secret() -> str:
    import nostr_sdk

    return str(nostr_sdk.Keys.generate().secret_key().to_hex())


class DevWalletService:
    """Answers NIP-47 requests for the accounts of ``store`` on ``relays`` (the I/O edge).

    Start it on any running event loop (typically a :class:`~dspy_pylon.nostr.loop.NostrLoop`);
    each request is handled in a task of its own, so a slow relay never holds up the others.
    ``stats`` counts requests by outcome (and dropped ones by reason).
    """

    def __init__(self, store: DevWalletStore, relays: Sequence[str]) -> None:
        if not relays:
            raise ConfigError("the development wallet needs at least one relay URL")
        self.store = store
        self.relays = tuple(relays)
        self.stats: Counter[str] = Counter()
        self._keys = store.service_keys()
        self._service_pubkey = str(self._keys.public_key().to_hex())
        self._client: Any = None
        self._subscription: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"DevWalletService(pubkey={self._service_pubkey[:12]}…, relays={len(self.relays)}) [{DEV_WALLET_LABEL}]"

    @property
    def service_pubkey(self) -> str:
        """The service's public key (hex)."""
        return self._service_pubkey

    async def start(self) -> DevWalletService:
        """Connect, subscribe to requests, then publish the info event (kind 13194)."""
        import nostr_sdk

        from dspy_pylon.nostr.relay_client import RelayClient

        self._client = await RelayClient(self.relays).start()
        since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - SUBSCRIBE_LOOKBACK_S))
        requests = (
            nostr_sdk.Filter()
            .kind(nostr_sdk.Kind(nip47.REQUEST_KIND))
            .pubkey(nostr_sdk.PublicKey.parse(self._service_pubkey))
            .since(since)
        )
        self._subscription = await self._client.subscribe([requests], self._on_request)
        info = sign(
            nip47.INFO_KIND,
            nip47.info_content(METHODS, NOTIFICATIONS),
            nip47.info_tags(NOTIFICATIONS, ENCRYPTIONS),
            self._keys,
        )
        # Clients do not need the info event to pay: a relay that refused it is only logged.
        await self._publish(info, "info event")
        log.info("%s serving on %d relay(s) as %s", DEV_WALLET_LABEL, len(self.relays), self._service_pubkey)
        return self

    async def stop(self) -> None:
        """Stop answering: finish the requests in flight (up to 5 s), then disconnect."""
        client = self._client
        if client is None:
            return
        if self._subscription is not None:
            try:
                await client.unsubscribe(self._subscription)
            except Exception:  # the relays may already be gone; closing is all that is left
                log.debug("unsubscribe failed", exc_info=True)
            self._subscription = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._client = None
        await client.close()

    def _on_request(self, event: RawEvent, relay: str) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, event: RawEvent) -> None:
        """Answer one request event (signature already checked), as the subscription does for each.

        Drops what is not a request to this service, expired (NIP-40) or undecryptable; answers
        everything else, at most once per event id: a delivery of an event already handled gets
        the stored response again, one still running gets nothing. Never raises.
        """
        try:
            await self._handle_request(event)
        except Exception:  # one bad request must not take the service down
            self.stats["internal error"] += 1
            log.exception("request %s failed", event.id[:12])

    async def _handle_request(self, event: RawEvent) -> None:
        import nostr_sdk

        if event.kind != nip47.REQUEST_KIND or event.value("p") != self._service_pubkey:
            self.stats["dropped: not for us"] += 1
            return
        if nip47.is_expired(event.tags, time.time()):
            self.stats["dropped: expired"] += 1
            return
        scheme = nip47.request_encryption(event.tags)
        client_pubkey = nostr_sdk.PublicKey.parse(event.pubkey)
        if scheme not in ENCRYPTIONS:
            await self._respond(
                event, nip47.NIP04, "", None, (nip47.UNSUPPORTED_ENCRYPTION, f"encryption {scheme!r} is not supported")
            )
            return
        try:
            plaintext = self._decrypt(scheme, client_pubkey, event.content)
        except Exception:  # nostr-sdk raises its own error for bad ciphertext
            self.stats["dropped: undecryptable"] += 1
            return
        account = self.store.account_for_pubkey(event.pubkey)
        if account is None:
            # Anyone can encrypt to the service; answering costs nothing and tells a misconfigured
            # client why it gets no money. Not recorded: it has no effect to protect.
            self.stats["unauthorized"] += 1
            await self._respond(
                event,
                scheme,
                nip47.result_type_for(plaintext),
                None,
                (nip47.UNAUTHORIZED, f"this connection has no account ({DEV_WALLET_LABEL})"),
            )
            return
        first, stored = self.store.claim_request(event.id, event.pubkey)
        if not first:
            self.stats["duplicate"] += 1
            if stored is not None:
                await self._publish(nostr_sdk.Event.from_json(stored), "stored response")
            return
        paid: DevPayment | None = None
        result_type = nip47.result_type_for(plaintext)
        result: dict[str, Any] | None = None
        error: tuple[str, str] | None = None
        try:
            request = nip47.parse_request(plaintext)
            result_type = request.method
            # Invoice signing and SQLite take milliseconds: off the loop, so other requests and
            # anything else sharing the loop keep moving (the store is thread-safe).
            result, paid = await asyncio.to_thread(self._dispatch, account, request)
        except DevWalletRefusal as refusal:
            error = (refusal.code, str(refusal))
        except MalformedEvent as exc:
            error = (nip47.OTHER, str(exc))
        except Exception:
            log.exception("%s: request %s failed", DEV_WALLET_LABEL, event.id[:12])
            error = (nip47.INTERNAL, f"internal error ({DEV_WALLET_LABEL})")
        self.stats[f"{result_type or 'unknown'}: {error[0] if error else 'ok'}"] += 1
        log.info("%s: %s from %s -> %s", DEV_WALLET_LABEL, result_type or "?", account, error[0] if error else "ok")
        if paid is None:
            await self._respond(event, scheme, result_type, result, error, record=True)
        else:
            # The payee is told at the same time as the payer: a provider waiting for this
            # payment should not also wait for the relay's OK on the customer's answer.
            await asyncio.gather(
                self._respond(event, scheme, result_type, result, error, record=True), self._notify_payment(paid)
            )

    def _dispatch(self, account: str, request: nip47.NwcRequest) -> tuple[dict[str, Any], DevPayment | None]:
        params = request.params
        now = time.time()
        if request.method == "pay_invoice":
            invoice = nip47.param_str(params, "invoice", required=True, max_bytes=8192)
            assert invoice is not None
            amount = nip47.param_amount(params, required=False)
            paid = self.store.pay_invoice(account, invoice, now, amount)
            return {"preimage": paid.preimage, "fees_paid": paid.fees_paid_msats}, paid
        if request.method == "make_invoice":
            amount = nip47.param_amount(params)
            assert amount is not None
            description = nip47.param_str(params, "description", max_bytes=MAX_DESCRIPTION_BYTES)
            description_hash = nip47.param_hex32(params, "description_hash")
            expiry = nip47.param_int(params, "expiry", minimum=1, maximum=MAX_EXPIRY_S, default=DEFAULT_EXPIRY_S)
            assert expiry is not None
            made = self.store.make_invoice(account, amount, description, expiry, now, description_hash=description_hash)
            return made.transaction(nip47.INCOMING, now).to_dict(), None
        if request.method == "lookup_invoice":
            payment_hash = nip47.param_hex32(params, "payment_hash")
            invoice = nip47.param_str(params, "invoice", max_bytes=8192)
            if payment_hash is None and invoice is None:
                raise MalformedEvent("lookup_invoice needs 'payment_hash' or 'invoice'")
            return self.store.lookup(account, payment_hash, invoice, now).to_dict(), None
        if request.method == "get_balance":
            return {"balance": self.store.balance(account)}, None
        if request.method == "get_info":
            return {
                "alias": f"pylon {DEV_WALLET_LABEL}",
                "color": "#808080",
                "pubkey": self.store.node_pubkey,
                "network": NETWORK,
                "methods": list(METHODS),
                "notifications": list(NOTIFICATIONS),
            }, None
        raise _refuse(nip47.NOT_IMPLEMENTED, f"method {request.method[:40]!r} is not supported ({DEV_WALLET_LABEL})")

    def _decrypt(self, scheme: str, peer: Any, content: str) -> str:
        import nostr_sdk

        secret = self._keys.secret_key()
        if scheme == nip47.NIP44_V2:
            return str(nostr_sdk.nip44_decrypt(secret, peer, content))
        return str(nostr_sdk.nip04_decrypt(secret, peer, content))

    def _encrypt(self, scheme: str, peer: Any, plaintext: str) -> str:
        import nostr_sdk

        secret = self._keys.secret_key()
        if scheme == nip47.NIP44_V2:
            return str(nostr_sdk.nip44_encrypt(secret, peer, plaintext, nostr_sdk.Nip44Version.V2))
        return str(nostr_sdk.nip04_encrypt(secret, peer, plaintext))

    async def _respond(
        self,
        request: RawEvent,
        scheme: str,
        result_type: str,
        result: dict[str, Any] | None,
        error: tuple[str, str] | None,
        *,
        record: bool = False,
    ) -> None:
        import nostr_sdk

        plaintext = nip47.response_json(result_type, result, error)
        content = self._encrypt(scheme, nostr_sdk.PublicKey.parse(request.pubkey), plaintext)
        tags = [["p", request.pubkey], ["e", request.id]]
        if scheme == nip47.NIP44_V2:
            tags.append(["encryption", nip47.NIP44_V2])
        response = sign(nip47.RESPONSE_KIND, content, tags, self._keys)
        if record:
            # Stored before it is sent: a request delivered again after a crash gets this same answer.
            self.store.record_response(request.id, response.as_json())
        await self._publish(response, "response")

    async def _notify_payment(self, paid: DevPayment) -> None:
        now = time.time()
        invoice = paid.invoice
        sends = []
        for account_name, notification_type, direction in (
            (invoice.payee, nip47.PAYMENT_RECEIVED, nip47.INCOMING),
            (invoice.payer, nip47.PAYMENT_SENT, nip47.OUTGOING),
        ):
            account = self.store.account(account_name) if account_name else None
            if account is None:
                continue
            plaintext = nip47.notification_json(notification_type, invoice.transaction(direction, now).to_dict())
            sends.append(self._notify(account.client_pubkey, plaintext))
        await asyncio.gather(*sends)

    async def _notify(self, client_pubkey: str, plaintext: str) -> None:
        import nostr_sdk

        peer = nostr_sdk.PublicKey.parse(client_pubkey)
        # Both kinds: NIP-47 clients predating NIP-44 listen to 23196, newer ones to 23197.
        events = [
            sign(kind, self._encrypt(scheme, peer, plaintext), [["p", client_pubkey]], self._keys)
            for kind, scheme in (
                (nip47.NOTIFICATION_KIND_NIP04, nip47.NIP04),
                (nip47.NOTIFICATION_KIND_NIP44, nip47.NIP44_V2),
            )
        ]
        await asyncio.gather(*(self._publish(event, "notification") for event in events))

    async def _publish(self, event: Any, what: str) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(event)
        except PylonError as exc:  # RelayUnavailable, ResultTooLarge
            if "duplicate:" in str(exc):
                # NIP-01's prefix for "already have this event" (a re-sent response or info event):
                # the relay holds it, which is all publishing is for.
                return
            self.stats[f"unpublished {what}"] += 1
            log.warning("%s: %s not published: %s", DEV_WALLET_LABEL, what, exc)


__all__ = [
    "DEV_WALLET_LABEL",
    "DevAccount",
    "DevInvoice",
    "DevPayment",
    "DevWalletRefusal",
    "DevWalletService",
    "DevWalletStore",
    "DevWalletTotals",
]
