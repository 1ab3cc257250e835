"""The spend ledger: every paid (or earned) job, one row each (SQLite under ``$PYLON_HOME``).

It is also what makes payment exactly-once. The intent to pay a job is written
(:meth:`SpendLedger.begin_payment`, state ``paying``) *before* the wallet is called, and
only one caller can move a job into ``paying``; an invoice's payment hash is unique, so
the same invoice is never paid for two jobs. After a crash, a job left in ``paying`` is
resolved by asking the wallet (:meth:`SpendLedger.resolve`), never by paying again.

States and their moves are in :mod:`dspy_pylon.pay.ledger_schema`; every change of state
goes through :meth:`SpendLedger.transition`, which applies only a move the table allows.
Recovery facts (``interrupted``, ``relays_checked_at``, ``refusal``) have their own
columns; ``reason`` is text for people and nothing reads it back.

Calls block on SQLite (up to 10 s when another process holds the write
lock): call them from a worker thread, never from an event loop's thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from dspy_pylon.pay.ledger_reads import Direction, LedgerReads
from dspy_pylon.pay.ledger_rows import Claim, LedgerEntry, SpendRow
from dspy_pylon.pay.ledger_schema import (
    COLUMNS,
    OPEN_STATES,
    PAID_STATES,
    PAYABLE_STATES,
    Earned,
    Spent,
    State,
    sources,
    upgrade,
)
from dspy_pylon.pay.liveness import alive, this_process
from dspy_pylon.pay.refusals import RefusalCode
from dspy_pylon.plain_errors import StoreError
from dspy_pylon.sqlite_store import OffLoop, open_store

__all__ = ["PAID_STATES", "PAYABLE_STATES", "Claim", "Earned", "LedgerEntry", "SpendLedger", "SpendRow", "Spent"]

# Columns a transition may set (names are spliced into SQL: only these).
_SETTABLE = frozenset(COLUMNS.split(", ")) - {
    "job_id",
    "direction",
    "bid_msats",
    "state",
    "reason",
    "created_at",
    "updated_at",
}
_REASON_CHARS = 1000


class SpendLedger(LedgerReads, OffLoop):
    """The ledger at ``path`` (WAL SQLite). Thread-safe; several processes may share it.

    Opening an older ledger upgrades it in place (every row kept); a file that is not a
    ledger, or one from a newer version, raises :class:`~dspy_pylon.errors.StoreError`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pid, self._started = this_process()
        try:
            self._db = open_store(self.path)
            upgrade(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a readable spend ledger: {exc}") from None

    def transition(
        self, job_id: str, direction: Direction, to: State, *, among: Iterable[State] | None = None, **columns: object
    ) -> bool:
        """Move a job to ``to`` from any state the table allows (``among`` narrows them), setting
        ``columns``; ``note=`` appends to the reason. False (nothing changed) when the job is in
        no such state."""
        with self._lock:
            return self._transition(job_id, direction, to, among, columns)

    def _transition(
        self, job_id: str, direction: Direction, to: State, among: Iterable[State] | None, columns: dict[str, object]
    ) -> bool:
        from_states = sources(to, among)
        if not from_states:
            return False
        note = str(columns.pop("note", "") or "")
        unknown = set(columns) - _SETTABLE
        if unknown:
            raise AssertionError(f"not a ledger column a transition sets: {sorted(unknown)}")
        sets = "".join(f", {name} = ?" for name in columns)
        if note:
            sets += ", reason = substr(CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END, 1, ?)"
        marks = ", ".join("?" for _ in from_states)
        args = (to.value, time.time(), *columns.values(), *((note, note, _REASON_CHARS) if note else ()))
        cursor = self._db.execute(
            f"UPDATE ledger SET state = ?, updated_at = ?{sets}"
            f" WHERE job_id = ? AND direction = ? AND state IN ({marks})",
            (*args, job_id, direction, *(state.value for state in from_states)),
        )
        return cursor.rowcount == 1

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
                    " updated_at, pid, pid_started) VALUES (?, 'spent', ?, ?, ?, 'published', ?, ?, ?, ?)",
                    (job_id, provider, model, bid_msats, now, now, self._pid, self._started),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _committed_msats(self) -> int:
        # Paid money, plus, for jobs still open, the most they may yet cost.
        marks = ", ".join("?" for _ in OPEN_STATES)
        row = self._db.execute(
            f"SELECT COALESCE(SUM(CASE WHEN state IN ({marks})"
            " THEN MAX(bid_msats, COALESCE(invoice_msats, 0), paid_msats) ELSE paid_msats END), 0)"
            " FROM ledger WHERE direction = 'spent'",
            tuple(OPEN_STATES),
        ).fetchone()
        return int(row[0])

    def committed_msats(self) -> int:
        """What the global budget counts: everything paid plus what open jobs may still cost."""
        with self._lock:
            return self._committed_msats()

    def await_approval(self, job_id: str, *, provider: str, invoice_msats: int, bolt11: str) -> None:
        """The provider billed the job and the user has to approve the payment."""
        self.transition(
            job_id,
            "spent",
            Spent.APPROVAL,
            provider=provider,
            invoice_msats=invoice_msats,
            bolt11=bolt11,
            note="waiting for approval",
        )

    def begin_payment(self, job_id: str, *, provider: str, invoice_msats: int, bolt11: str, payment_hash: str) -> Claim:
        """Write the intent to pay ``job_id``; :attr:`Claim.MINE` means *this* caller must pay now."""
        with self._lock:
            try:
                if self._transition(
                    job_id,
                    "spent",
                    Spent.PAYING,
                    None,
                    {
                        "provider": provider,
                        "invoice_msats": invoice_msats,
                        "bolt11": bolt11,
                        "payment_hash": payment_hash,
                    },
                ):
                    return Claim.MINE
            except sqlite3.IntegrityError:  # the unique payment hash
                return Claim.INVOICE_USED
            row = self._db.execute(
                "SELECT 1 FROM ledger WHERE job_id = ? AND direction = 'spent'", (job_id,)
            ).fetchone()
        return Claim.UNKNOWN_JOB if row is None else Claim.TAKEN

    def payment_succeeded(self, job_id: str, *, preimage: str, paid_msats: int, fees_msats: int = 0) -> None:
        """The wallet paid: record the preimage (proof of payment) and the amount with fees."""
        self.transition(
            job_id,
            "spent",
            Spent.PAID,
            preimage=preimage,
            paid_msats=paid_msats,
            fees_msats=fees_msats,
            paid_at=time.time(),
        )

    def payment_failed(self, job_id: str, reason: str) -> None:
        """The wallet definitely did not pay."""
        self.transition(job_id, "spent", Spent.PAYMENT_FAILED, note=reason[:500])

    def refuse(
        self, job_id: str, code: RefusalCode, reason: str, *, provider: str = "", invoice_msats: int | None = None
    ) -> None:
        """A bill failed a check (``code``) and was not paid."""
        columns: dict[str, object] = {"refusal": code.value}
        if provider:
            columns["provider"] = provider
        if invoice_msats is not None:
            columns["invoice_msats"] = invoice_msats
        columns["note"] = reason[:500]
        with self._lock:
            self._transition(job_id, "spent", Spent.REFUSED, None, columns)

    def note(self, job_id: str, reason: str) -> None:
        """Append an observation (a repeated bill, a late invoice) to a job's reason."""
        with self._lock:
            self._db.execute(
                "UPDATE ledger SET reason = substr(CASE WHEN reason = '' THEN ? ELSE reason || '; ' || ? END, 1, ?),"
                " updated_at = ? WHERE job_id = ? AND direction = 'spent'",
                (reason, reason, _REASON_CHARS, time.time(), job_id),
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

        A job in ``paying`` keeps that state until its payment resolves; refused and failed
        payments keep theirs.
        """
        with self._lock:
            if answered:
                details: dict[str, object] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
                details |= {"latency_ms": latency_ms} if latency_ms is not None else {}
                details |= {k: v for k, v in (("provider", provider), ("model", model)) if v}
                if not self._transition(job_id, "spent", Spent.DONE, (Spent.PUBLISHED, Spent.PAID), dict(details)):
                    sets = ", ".join(f"{name} = ?" for name in details)
                    self._db.execute(
                        f"UPDATE ledger SET {sets} WHERE job_id = ? AND direction = 'spent'",
                        (*details.values(), job_id),
                    )
                return
            note = {"note": reason[:500]} if reason else {}
            if not self._transition(job_id, "spent", Spent.PAID_NO_RESULT, (Spent.PAID,), dict(note)):
                self._transition(job_id, "spent", Spent.FAILED, PAYABLE_STATES, dict(note))

    def close_orphans(self) -> int:
        """Close jobs whose process died mid-call: unpaid ones become ``failed`` and paid ones
        ``paid_no_result``, marked ``interrupted``. Payments of unknown outcome (``paying``) are
        left for :meth:`resolve`. Jobs of live processes (several may share the ledger) are left alone.
        """
        marks = ", ".join("?" for _ in (*PAYABLE_STATES, Spent.PAID))
        with self._lock:
            rows = self._db.execute(
                f"SELECT job_id, pid, pid_started FROM ledger WHERE direction = 'spent' AND state IN ({marks})",
                (*PAYABLE_STATES, Spent.PAID),
            ).fetchall()
        mine = (self._pid, self._started)
        orphans = [job_id for job_id, pid, started in rows if (pid, started) != mine and not alive(pid, started)]
        why = {"note": "interrupted: the process making the call stopped", "interrupted": 1}
        with self._lock:
            for job_id in orphans:
                if not self._transition(job_id, "spent", Spent.PAID_NO_RESULT, (Spent.PAID,), dict(why)):
                    self._transition(job_id, "spent", Spent.FAILED, PAYABLE_STATES, dict(why))
        return len(orphans)

    def unlooked_interrupted(self, limit: int = 50) -> list[LedgerEntry]:
        """Paid jobs of interrupted calls whose result was never looked for on the relays (newest ``limit``)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM ledger WHERE direction = 'spent' AND state = ? AND interrupted = 1"
                " AND relays_checked_at IS NULL ORDER BY created_at DESC, job_id LIMIT ?",
                (Spent.PAID_NO_RESULT.value, limit),
            ).fetchall()
        return [LedgerEntry._from_row(row) for row in reversed(rows)]

    def relays_checked(self, job_id: str) -> None:
        """The relays were asked for this job's result (found or not): later starts need not ask again."""
        with self._lock:
            self._db.execute(
                "UPDATE ledger SET relays_checked_at = ?, updated_at = ? WHERE job_id = ? AND direction = 'spent'",
                (time.time(), time.time(), job_id),
            )

    def result_found_later(self, job_id: str) -> None:
        """A job recorded as paid without a result turned out to have been answered (found on a relay
        after the process that made the call had stopped)."""
        self.transition(
            job_id,
            "spent",
            Spent.DONE,
            among=(Spent.PAID_NO_RESULT,),
            relays_checked_at=time.time(),
            note="the result was found on a relay later",
        )

    def resolve(self, job_id: str, *, settled: bool, preimage: str | None = None, fees_msats: int = 0) -> None:
        """Settle a job left ``paying`` (a crash mid-payment) from what the wallet reports."""
        if not settled:
            self.transition(
                job_id, "spent", Spent.PAYMENT_FAILED, interrupted=1, note="not paid (looked up after a restart)"
            )
            return
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(invoice_msats, 0) FROM ledger WHERE job_id = ? AND direction = 'spent'", (job_id,)
            ).fetchone()
            if row is None:
                return
            self._transition(
                job_id,
                "spent",
                Spent.PAID_NO_RESULT,
                (Spent.PAYING,),
                {
                    "preimage": preimage,
                    "paid_msats": int(row[0]) + fees_msats,
                    "fees_msats": fees_msats,
                    "paid_at": time.time(),
                    "interrupted": 1,
                    "note": "paid before a restart; result not received",
                },
            )

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
        with self._lock:
            self._db.execute(
                "UPDATE ledger SET state = ?, paid_msats = invoice_msats, preimage = ?, paid_at = ?, updated_at = ?"
                " WHERE job_id = ? AND direction = 'earned' AND state = ?",
                (Earned.PAID.value, preimage, time.time(), time.time(), job_id, Earned.INVOICED.value),
            )

    def earning_finished(self, job_id: str, state: Earned, reason: str = "", **tokens: int) -> None:
        """How a billed job ended for the provider: ``done``, ``expired`` or ``failed``."""
        columns: dict[str, object] = {"note": reason[:500]} if reason else {}
        columns |= {name: tokens.get(name, 0) for name in ("prompt_tokens", "completion_tokens")}
        with self._lock:
            self._transition(job_id, "earned", Earned(state), None, columns)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
        self._stop_writer()
