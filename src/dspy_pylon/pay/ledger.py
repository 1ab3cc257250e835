"""The spend ledger: every paid (or earned) job, one row each (SQLite under ``$PYLON_HOME``).

It is also what makes payment exactly-once. The intent to pay a job is written
(:meth:`SpendLedger.begin_payment`, state ``paying``) *before* the wallet is called, and
only one caller can move a job into ``paying``; an invoice's payment hash is unique, so
the same invoice is never paid for two jobs. After a crash, a job left in ``paying`` is
resolved by asking the wallet (:meth:`SpendLedger.resolve`), never by paying again.

Customer states (``direction = 'spent'``):

* ``published`` — job out, its bid reserved, nothing owed yet;
* ``approval`` — the provider asked to be paid and the user must approve (``auto_pay`` off);
* ``paying`` — intent written, the wallet was (or is being) asked to pay;
* ``paid`` — paid, the result not yet in; ``paid_no_result`` — paid, and the result never came;
* ``done`` — result received (paid or free); ``refused`` — the bill failed a check;
* ``payment_failed`` — the wallet did not pay; ``failed`` — no result and nothing paid.

Provider states (``direction = 'earned'``): ``invoiced``, ``paid``, ``done``, ``expired``, ``failed``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dspy_pylon.sqlite_store import open_store

Direction = Literal["spent", "earned"]

#: Spent states that hold money (or may): their payment counts against budgets.
PAID_STATES = ("paid", "paid_no_result", "done")
#: States a job can still be paid from.
PAYABLE_STATES = ("published", "approval")

_COLUMNS = (
    "job_id, direction, provider, customer, model, bid_msats, invoice_msats, paid_msats, fees_msats, "
    "payment_hash, preimage, bolt11, state, reason, prompt_tokens, completion_tokens, latency_ms, "
    "created_at, updated_at, paid_at"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
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
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    paid_at REAL,
    pid INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, direction),
    UNIQUE (payment_hash, direction)
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    """One job's row. Amounts are millisatoshis; times are Unix seconds."""

    job_id: str
    direction: str
    provider: str
    customer: str
    model: str
    bid_msats: int
    invoice_msats: int | None
    paid_msats: int
    fees_msats: int
    payment_hash: str | None
    preimage: str | None
    bolt11: str | None
    state: str
    reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float | None
    created_at: float
    updated_at: float
    paid_at: float | None


@dataclass(frozen=True)
class SpendRow:
    """A line of the ``pylon spend`` table: totals for one day, provider or model."""

    key: str
    jobs: int
    paid_jobs: int
    paid_msats: int
    unanswered_paid_jobs: int
    refused_jobs: int
    prompt_tokens: int
    completion_tokens: int


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class SpendLedger:
    """The ledger at ``path`` (WAL SQLite). Thread-safe; several processes may share it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_store(self.path, _SCHEMA)
        self._db.execute("PRAGMA busy_timeout = 10000")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(ledger)")}
        if "pid" not in columns:  # ledgers written before jobs recorded their process
            self._db.execute("ALTER TABLE ledger ADD COLUMN pid INTEGER NOT NULL DEFAULT 0")
        self._db.execute("CREATE INDEX IF NOT EXISTS ledger_state ON ledger (direction, state)")

    def _update(self, sql: str, args: tuple[object, ...]) -> int:
        with self._lock:
            return int(self._db.execute(sql, args).rowcount)

    # ─── customer side ───

    def open_job(self, job_id: str, *, provider: str, model: str, bid_msats: int, global_limit_msats: int = 0) -> None:
        """Record a job about to be published (``published``).

        With ``global_limit_msats`` the job is recorded only if its bid fits in what every
        process sharing this ledger has paid or holds for open jobs; otherwise
        :class:`~dspy_pylon.errors.BudgetExceeded`. Check and insert are one transaction.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if global_limit_msats:
                    committed = self._committed_msats()
                    if committed + bid_msats > global_limit_msats:
                        from dspy_pylon.errors import BudgetExceeded

                        raise BudgetExceeded(
                            f"a bid of {bid_msats} msats does not fit in the global budget of {global_limit_msats} "
                            f"msats ($PYLON_HOME/budget.toml): {committed} msats are paid or held by open jobs; "
                            "nothing was published"
                        )
                self._db.execute(
                    "INSERT OR IGNORE INTO ledger (job_id, direction, provider, model, bid_msats, state, created_at,"
                    " updated_at, pid) VALUES (?, 'spent', ?, ?, ?, 'published', ?, ?, ?)",
                    (job_id, provider, model, bid_msats, now, now, os.getpid()),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _committed_msats(self) -> int:
        # Paid money, plus, for jobs still open, the most they may yet cost.
        row = self._db.execute(
            "SELECT COALESCE(SUM(CASE WHEN state IN ('published', 'approval', 'paying')"
            " THEN MAX(bid_msats, COALESCE(invoice_msats, 0), paid_msats) ELSE paid_msats END), 0)"
            " FROM ledger WHERE direction = 'spent'"
        ).fetchone()
        return int(row[0])

    def committed_msats(self) -> int:
        """What the global budget counts: everything paid plus what open jobs may still cost."""
        with self._lock:
            return self._committed_msats()

    def await_approval(self, job_id: str, *, provider: str, invoice_msats: int, bolt11: str) -> None:
        """The provider billed the job and the user has to approve the payment."""
        self._update(
            "UPDATE ledger SET state = 'approval', provider = ?, invoice_msats = ?, bolt11 = ?, updated_at = ?,"
            " reason = 'waiting for approval' WHERE job_id = ? AND direction = 'spent' AND state = 'published'",
            (provider, invoice_msats, bolt11, time.time(), job_id),
        )

    def begin_payment(
        self, job_id: str, *, provider: str, invoice_msats: int, bolt11: str, payment_hash: str
    ) -> tuple[bool, str]:
        """Write the intent to pay ``job_id``; ``(True, "")`` means *this* caller must pay now.

        False with a reason when the job is already being paid or paid (a duplicate bill,
        a retry, a second thread), when it is no longer payable, or when this invoice was
        already used for another job.
        """
        now = time.time()
        with self._lock:
            try:
                cursor = self._db.execute(
                    "UPDATE ledger SET state = 'paying', provider = ?, invoice_msats = ?, bolt11 = ?, payment_hash = ?,"
                    " updated_at = ?, reason = '' WHERE job_id = ? AND direction = 'spent' AND state IN (?, ?)",
                    (provider, invoice_msats, bolt11, payment_hash, now, job_id, *PAYABLE_STATES),
                )
            except sqlite3.IntegrityError:
                return False, "this invoice was already paid for another job"
            if cursor.rowcount == 1:
                return True, ""
            row = self._db.execute(
                "SELECT state FROM ledger WHERE job_id = ? AND direction = 'spent'", (job_id,)
            ).fetchone()
        if row is None:
            return False, "the job is not in the spend ledger"
        return False, f"the job is already {row[0]}"

    def payment_succeeded(self, job_id: str, *, preimage: str, paid_msats: int, fees_msats: int = 0) -> None:
        """The wallet paid: record the preimage (proof of payment) and the amount with fees."""
        now = time.time()
        self._update(
            "UPDATE ledger SET state = 'paid', preimage = ?, paid_msats = ?, fees_msats = ?, paid_at = ?,"
            " updated_at = ? WHERE job_id = ? AND direction = 'spent' AND state = 'paying'",
            (preimage, paid_msats, fees_msats, now, now, job_id),
        )

    def payment_failed(self, job_id: str, reason: str) -> None:
        """The wallet definitely did not pay."""
        self._update(
            "UPDATE ledger SET state = 'payment_failed', reason = ?, updated_at = ?"
            " WHERE job_id = ? AND direction = 'spent' AND state = 'paying'",
            (reason[:500], time.time(), job_id),
        )

    def refuse(self, job_id: str, reason: str, *, provider: str = "", invoice_msats: int | None = None) -> None:
        """A bill failed a check and was not paid."""
        self._update(
            "UPDATE ledger SET state = 'refused', reason = ?, provider = CASE WHEN ? = '' THEN provider ELSE ? END,"
            " invoice_msats = COALESCE(?, invoice_msats), updated_at = ?"
            " WHERE job_id = ? AND direction = 'spent' AND state IN (?, ?)",
            (reason[:500], provider, provider, invoice_msats, time.time(), job_id, *PAYABLE_STATES),
        )

    def note(self, job_id: str, reason: str) -> None:
        """Append an observation (a repeated bill, a late invoice) to a job's reason."""
        self._update(
            "UPDATE ledger SET reason = substr(CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END, 1, 1000),"
            " updated_at = ? WHERE job_id = ? AND direction = 'spent'",
            (reason, reason, time.time(), job_id),
        )

    def finish(
        self,
        job_id: str,
        *,
        answered: bool,
        reason: str = "",
        provider: str = "",
        model: str = "",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        latency_ms: float | None = None,
    ) -> None:
        """The job is over: answered (``done``) or not (``paid_no_result`` if paid, else ``failed``).

        A job in ``paying`` whose result arrived stays paying until the payment resolves;
        refused and failed payments keep their state.
        """
        now = time.time()
        with self._lock:
            if answered:
                self._db.execute(
                    "UPDATE ledger SET state = CASE WHEN state IN ('published', 'paid') THEN 'done' ELSE state END,"
                    " provider = CASE WHEN ? = '' THEN provider ELSE ? END, model = CASE WHEN ? = '' THEN model"
                    " ELSE ? END, prompt_tokens = ?, completion_tokens = ?, latency_ms = ?, updated_at = ?"
                    " WHERE job_id = ? AND direction = 'spent'",
                    (provider, provider, model, model, prompt_tokens, completion_tokens, latency_ms, now, job_id),
                )
            else:
                self._db.execute(
                    "UPDATE ledger SET state = CASE state WHEN 'paid' THEN 'paid_no_result' WHEN 'published' THEN"
                    " 'failed' WHEN 'approval' THEN 'failed' ELSE state END,"
                    " reason = CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END, updated_at = ?"
                    " WHERE job_id = ? AND direction = 'spent'",
                    (reason[:500], reason[:500], now, job_id),
                )

    def close_orphans(self) -> int:
        """Close jobs whose process died mid-call: unpaid ones become ``failed`` and paid ones
        ``paid_no_result``, with the reason "interrupted". Payments of unknown outcome
        (``paying``) are left for :meth:`resolve`.

        Jobs of live processes (several may share the ledger) are left alone.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, pid FROM ledger WHERE direction = 'spent' AND state IN (?, ?, 'paid')", PAYABLE_STATES
            ).fetchall()
        orphans = [job_id for job_id, pid in rows if pid != os.getpid() and not _alive(pid)]
        for job_id in orphans:
            self.finish(job_id, answered=False, reason="interrupted: the process making the call stopped")
        return len(orphans)

    def result_found_later(self, job_id: str) -> None:
        """A job recorded as paid without a result turned out to have been answered (found on a relay
        after the process that made the call had stopped)."""
        self._update(
            "UPDATE ledger SET state = 'done', reason = reason || '; the result was found on a relay later',"
            " updated_at = ? WHERE job_id = ? AND direction = 'spent' AND state = 'paid_no_result'",
            (time.time(), job_id),
        )

    def resolve(self, job_id: str, *, settled: bool, preimage: str | None = None, fees_msats: int = 0) -> None:
        """Settle a job left ``paying`` (a crash mid-payment) from what the wallet reports."""
        if settled:
            now = time.time()
            self._update(
                "UPDATE ledger SET state = 'paid_no_result', preimage = ?, paid_msats = invoice_msats + ?,"
                " fees_msats = ?, paid_at = ?, updated_at = ?, reason = 'paid before a restart; result not received'"
                " WHERE job_id = ? AND direction = 'spent' AND state = 'paying'",
                (preimage, fees_msats, fees_msats, now, now, job_id),
            )
        else:
            self.payment_failed(job_id, "not paid (looked up after a restart)")

    # ─── provider side ───

    def record_invoice(
        self,
        job_id: str,
        *,
        customer: str,
        model: str,
        bid_msats: int,
        invoice_msats: int,
        bolt11: str,
        payment_hash: str,
    ) -> None:
        """A provider billed ``job_id``."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO ledger (job_id, direction, customer, model, bid_msats, invoice_msats, bolt11,"
                " payment_hash, state, created_at, updated_at)"
                " VALUES (?, 'earned', ?, ?, ?, ?, ?, ?, 'invoiced', ?, ?)",
                (job_id, customer, model, bid_msats, invoice_msats, bolt11, payment_hash, now, now),
            )

    def earning_settled(self, job_id: str, *, preimage: str | None) -> None:
        """The customer paid the provider's invoice."""
        now = time.time()
        self._update(
            "UPDATE ledger SET state = 'paid', paid_msats = invoice_msats, preimage = ?, paid_at = ?, updated_at = ?"
            " WHERE job_id = ? AND direction = 'earned' AND state = 'invoiced'",
            (preimage, now, now, job_id),
        )

    def earning_finished(self, job_id: str, state: str, reason: str = "", **tokens: int) -> None:
        """How a billed job ended for the provider: ``done``, ``expired`` or ``failed``."""
        self._update(
            "UPDATE ledger SET state = ?, reason = ?, prompt_tokens = ?, completion_tokens = ?, updated_at = ?"
            " WHERE job_id = ? AND direction = 'earned'",
            (
                state,
                reason[:500],
                tokens.get("prompt_tokens", 0),
                tokens.get("completion_tokens", 0),
                time.time(),
                job_id,
            ),
        )

    # ─── reading ───

    def entry(self, job_id: str, direction: Direction = "spent") -> LedgerEntry | None:
        """One job's row, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM ledger WHERE job_id = ? AND direction = ?", (job_id, direction)
            ).fetchone()
        return None if row is None else LedgerEntry(*row)

    def entries(self, direction: Direction = "spent", state: str | None = None) -> list[LedgerEntry]:
        """All rows of one direction (optionally in one state), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM ledger WHERE direction = ?"
        args: tuple[object, ...] = (direction,)
        if state is not None:
            sql += " AND state = ?"
            args += (state,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, job_id", args).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def total_paid_msats(self, direction: Direction = "spent") -> int:
        """Everything paid (or earned) so far, fees included."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(paid_msats), 0) FROM ledger WHERE direction = ?", (direction,)
            ).fetchone()
        return int(row[0])

    def summary(self, by: Literal["day", "provider", "model"], direction: Direction = "spent") -> list[SpendRow]:
        """Totals per day (UTC), provider or model, largest spend first."""
        key = {
            "day": "date(created_at, 'unixepoch')",
            "provider": "CASE direction WHEN 'spent' THEN provider ELSE customer END",
            "model": "model",
        }[by]
        with self._lock:
            rows = self._db.execute(
                f"SELECT {key} AS k, COUNT(*), SUM(paid_msats > 0), COALESCE(SUM(paid_msats), 0),"
                " SUM(state = 'paid_no_result'), SUM(state = 'refused'), SUM(prompt_tokens), SUM(completion_tokens)"
                " FROM ledger WHERE direction = ? GROUP BY k ORDER BY 4 DESC, k",
                (direction,),
            ).fetchall()
        return [SpendRow(str(r[0] or "-"), *(int(x or 0) for x in r[1:])) for r in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
