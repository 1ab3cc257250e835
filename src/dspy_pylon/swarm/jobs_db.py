"""A provider's job lifecycle, durable: each job claimed once, moved only along :data:`MOVES`.

A job seen on two relays, or again after a restart, runs once: :meth:`JobsDB.claim`
inserts the job id and reports whether this call was the first. From then on the job's
state changes only by :meth:`JobsDB.move`, along the table below; the database refuses
any other state name (``CHECK``). SQLite under the node's state directory.

Calls block on SQLite: the node makes them from worker threads, never on its event loop.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from pathlib import Path

from dspy_pylon.plain_errors import StoreError
from dspy_pylon.sqlite_store import OffLoop, has_table, migrate, open_store


class JobStatus(enum.StrEnum):
    """Where a provider's job is. The last four are final."""

    #: Claimed by this node: being checked, queued or run.
    RUNNING = "running"
    #: Billed; waiting for the customer to pay the invoice.
    AWAITING_PAYMENT = "awaiting_payment"
    DONE = "done"
    #: Ran, but the result could not be delivered.
    ERROR = "error"
    #: Answered with ``error`` feedback (malformed, not servable, busy, inference failed).
    REFUSED = "refused"
    #: The invoice expired unpaid.
    EXPIRED = "expired"


J = JobStatus
MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    J.RUNNING: frozenset({J.AWAITING_PAYMENT, J.DONE, J.ERROR, J.REFUSED}),
    J.AWAITING_PAYMENT: frozenset({J.RUNNING, J.EXPIRED, J.REFUSED}),
    J.DONE: frozenset(),
    J.ERROR: frozenset(),
    J.REFUSED: frozenset(),
    J.EXPIRED: frozenset(),
}

_TABLE = f"""
CREATE TABLE {{name}} (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    kind INTEGER NOT NULL,
    received_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in JobStatus)})),
    detail TEXT NOT NULL DEFAULT ''
)
"""


def _to_v1(db: sqlite3.Connection) -> None:
    db.execute(_TABLE.format(name="jobs_v1"))
    if has_table(db, "jobs"):  # schema 0: the same columns without the CHECK
        db.execute("INSERT INTO jobs_v1 SELECT id, customer, kind, received_at, status, detail FROM jobs")
        db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v1 RENAME TO jobs")


class JobsDB(OffLoop):
    """Jobs a provider has taken, by event id. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = open_store(self.path)
            migrate(self._db, "provider jobs database", {0: _to_v1})
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path} is not a readable provider jobs database: {exc}") from None

    def claim(self, job_id: str, customer: str, kind: int) -> bool:
        """Record a job as taken; False if it was taken before (then it must not run again)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs (id, customer, kind, received_at, status) VALUES (?, ?, ?, ?, ?)",
                (job_id, customer, kind, time.time(), J.RUNNING.value),
            )
            return cursor.rowcount == 1

    def move(self, job_id: str, to: JobStatus, detail: str = "") -> bool:
        """Move a job to ``to`` from any state allowed to (False, and no change, otherwise)."""
        sources = [state.value for state, targets in MOVES.items() if to in targets]
        marks = ", ".join("?" for _ in sources)
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE jobs SET status = ?, detail = ? WHERE id = ? AND status IN ({marks})",
                (to.value, detail[:500], job_id, *sources),
            )
            return cursor.rowcount == 1

    def status(self, job_id: str) -> JobStatus | None:
        """The recorded status of a job, or None if never seen."""
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobStatus(row[0])

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {JobStatus(status): int(count) for status, count in rows}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
        self._stop_writer()
