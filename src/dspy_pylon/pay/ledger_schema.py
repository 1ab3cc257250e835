"""The spend ledger's states, their allowed moves, its SQL schema and its upgrades.

The states are enums, the moves a table (:data:`SPENT_MOVES`, :data:`EARNED_MOVES`), and
the database refuses any other state name (a ``CHECK`` constraint). The schema version
is SQLite's ``PRAGMA user_version``; :func:`upgrade` brings an older file up to date in one
transaction, keeping every row, or changes nothing and raises
:class:`~dspy_pylon.errors.StoreError`.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterable

from dspy_pylon.sqlite_store import has_table, migrate


class Spent(enum.StrEnum):
    """A customer job's state (``direction = 'spent'``)."""

    #: Published, its bid reserved, nothing owed yet.
    PUBLISHED = "published"
    #: Billed; the user must approve the payment (``auto_pay`` off).
    APPROVAL = "approval"
    #: The intent to pay is written; the wallet was (or is being) asked to pay.
    PAYING = "paying"
    #: Paid; the result is not in yet.
    PAID = "paid"
    #: Paid, and the result never came.
    PAID_NO_RESULT = "paid_no_result"
    #: The result arrived (paid or free).
    DONE = "done"
    #: The bill failed a check and was not paid (see ``refusal``).
    REFUSED = "refused"
    #: The wallet did not pay.
    PAYMENT_FAILED = "payment_failed"
    #: No result, nothing paid.
    FAILED = "failed"


class Earned(enum.StrEnum):
    """A provider job's state (``direction = 'earned'``)."""

    INVOICED = "invoiced"
    PAID = "paid"
    DONE = "done"
    EXPIRED = "expired"
    FAILED = "failed"


State = Spent | Earned

SPENT_MOVES: dict[Spent, frozenset[Spent]] = {
    Spent.PUBLISHED: frozenset({Spent.APPROVAL, Spent.PAYING, Spent.REFUSED, Spent.DONE, Spent.FAILED}),
    Spent.APPROVAL: frozenset({Spent.PAYING, Spent.REFUSED, Spent.FAILED}),
    # A payment of unknown outcome resolved after a restart goes straight to paid_no_result.
    Spent.PAYING: frozenset({Spent.PAID, Spent.PAYMENT_FAILED, Spent.PAID_NO_RESULT}),
    Spent.PAID: frozenset({Spent.DONE, Spent.PAID_NO_RESULT}),
    # The result of an interrupted call, found on a relay later.
    Spent.PAID_NO_RESULT: frozenset({Spent.DONE}),
    Spent.DONE: frozenset(),
    Spent.REFUSED: frozenset(),
    Spent.PAYMENT_FAILED: frozenset(),
    Spent.FAILED: frozenset(),
}
EARNED_MOVES: dict[Earned, frozenset[Earned]] = {
    Earned.INVOICED: frozenset({Earned.PAID, Earned.EXPIRED, Earned.FAILED}),
    Earned.PAID: frozenset({Earned.DONE, Earned.FAILED}),
    Earned.DONE: frozenset(),
    Earned.EXPIRED: frozenset(),
    Earned.FAILED: frozenset(),
}

#: Spent states that hold money (or may): their payment counts against budgets.
PAID_STATES = (Spent.PAID, Spent.PAID_NO_RESULT, Spent.DONE)
#: States a job can still be paid from.
PAYABLE_STATES = (Spent.PUBLISHED, Spent.APPROVAL)
#: States whose job may still cost up to its bid (or invoice).
OPEN_STATES = (Spent.PUBLISHED, Spent.APPROVAL, Spent.PAYING)


def sources(to: State, among: Iterable[State] | None = None) -> tuple[State, ...]:
    """The states that may move to ``to`` (restricted to ``among`` when given)."""
    moves: dict[State, frozenset[State]] = dict(SPENT_MOVES if isinstance(to, Spent) else EARNED_MOVES)  # type: ignore[arg-type]
    allowed = tuple(state for state, targets in moves.items() if to in targets)
    return allowed if among is None else tuple(state for state in among if state in allowed)


def _quoted(states: Iterable[str]) -> str:
    return ", ".join(f"'{state}'" for state in states)


#: The version :func:`upgrade` brings a ledger to.
VERSION = 1

COLUMNS = (
    "job_id, direction, provider, customer, model, bid_msats, invoice_msats, paid_msats, fees_msats, "
    "payment_hash, preimage, bolt11, state, reason, prompt_tokens, completion_tokens, latency_ms, "
    "created_at, updated_at, paid_at, refusal, interrupted, relays_checked_at"
)

_TABLE = f"""
CREATE TABLE {{name}} (
    job_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('spent', 'earned')),
    provider TEXT NOT NULL DEFAULT '',
    customer TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    bid_msats INTEGER NOT NULL DEFAULT 0,
    invoice_msats INTEGER,
    paid_msats INTEGER NOT NULL DEFAULT 0 CHECK (paid_msats >= 0),
    fees_msats INTEGER NOT NULL DEFAULT 0,
    payment_hash TEXT,
    preimage TEXT,
    bolt11 TEXT,
    state TEXT NOT NULL CHECK (
        (direction = 'spent' AND state IN ({_quoted(Spent)}))
        OR (direction = 'earned' AND state IN ({_quoted(Earned)}))
    ),
    reason TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    paid_at REAL,
    pid INTEGER NOT NULL DEFAULT 0,
    -- the process's start time (Unix s): a pid reused by another process is not the same process
    pid_started REAL,
    -- a RefusalCode when state = 'refused'
    refusal TEXT,
    -- the call that made the job stopped (a crash, a kill) before the job ended
    interrupted INTEGER NOT NULL DEFAULT 0 CHECK (interrupted IN (0, 1)),
    -- when the relays were asked for this job's late result (once is enough)
    relays_checked_at REAL,
    PRIMARY KEY (job_id, direction),
    UNIQUE (payment_hash, direction)
)
"""

# Version 0 (every ledger before user_version was set) kept recovery facts in the reason
# text; the upgrade reads them out of it once. These are the exact sentences that code wrote.
_V0_INTERRUPTED = "reason LIKE '%interrupted%' OR reason LIKE '%restart%'"
_V0_LOOKED = "reason LIKE '%no result on the relays at the next start%'"
_V0_COLUMNS = (
    "job_id, direction, provider, customer, model, bid_msats, invoice_msats, paid_msats, fees_msats, "
    "payment_hash, preimage, bolt11, state, reason, prompt_tokens, completion_tokens, latency_ms, "
    "created_at, updated_at, paid_at, pid"
)


def upgrade(db: sqlite3.Connection) -> None:
    """Create the ledger table, or upgrade an older one to :data:`VERSION`; every row is kept."""
    migrate(db, "ledger", {0: _to_v1})


def _to_v1(db: sqlite3.Connection) -> None:
    if has_table(db, "ledger"):
        _upgrade_from_v0(db)
    else:
        _create(db)


def _create(db: sqlite3.Connection) -> None:
    db.execute(_TABLE.format(name="ledger"))
    db.execute("CREATE INDEX ledger_state ON ledger (direction, state)")


def _upgrade_from_v0(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(ledger)")}
    if "pid" not in columns:  # ledgers written before jobs recorded their process
        db.execute("ALTER TABLE ledger ADD COLUMN pid INTEGER NOT NULL DEFAULT 0")
    db.execute(_TABLE.format(name="ledger_v1"))
    db.execute(
        f"INSERT INTO ledger_v1 ({_V0_COLUMNS}, refusal, interrupted, relays_checked_at)"
        f" SELECT {_V0_COLUMNS}, CASE WHEN state = 'refused' THEN 'unknown' END,"
        f" CASE WHEN {_V0_INTERRUPTED} THEN 1 ELSE 0 END, CASE WHEN {_V0_LOOKED} THEN updated_at END FROM ledger"
    )
    db.execute("DROP TABLE ledger")
    db.execute("ALTER TABLE ledger_v1 RENAME TO ledger")
    db.execute("CREATE INDEX ledger_state ON ledger (direction, state)")
