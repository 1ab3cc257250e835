"""Reading the spend ledger: one job's row, all rows, totals and summaries.

A base of :class:`~dspy_pylon.pay.ledger.SpendLedger`, which owns the connection and the
lock; reads take the lock like writes (one connection, shared by threads).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Literal

from dspy_pylon.pay.ledger_rows import LedgerEntry, SpendRow
from dspy_pylon.pay.ledger_schema import COLUMNS

Direction = Literal["spent", "earned"]


class LedgerReads:
    """The ledger's queries; nothing here writes."""

    _db: sqlite3.Connection
    _lock: threading.Lock

    def entry(self, job_id: str, direction: Direction = "spent") -> LedgerEntry | None:
        """One job's row, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM ledger WHERE job_id = ? AND direction = ?", (job_id, direction)
            ).fetchone()
        return None if row is None else LedgerEntry._from_row(row)

    def entries(self, direction: Direction = "spent", state: str | None = None) -> list[LedgerEntry]:
        """All rows of one direction (optionally in one state), oldest first."""
        sql = f"SELECT {COLUMNS} FROM ledger WHERE direction = ?"
        args: tuple[object, ...] = (direction,)
        if state is not None:
            sql += " AND state = ?"
            args += (str(state),)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at, job_id", args).fetchall()
        return [LedgerEntry._from_row(row) for row in rows]

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
