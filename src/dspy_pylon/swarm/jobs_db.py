"""Durable job de-duplication for a provider (SQLite under ``$PYLON_HOME``).

A job seen on two relays, or again after a restart, runs once: :meth:`JobsDB.claim`
inserts the job id and reports whether this call was the first.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from dspy_pylon.sqlite_store import open_store


class JobsDB:
    """Jobs a provider has taken, by event id. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_store(
            self.path,
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, customer TEXT NOT NULL, kind INTEGER NOT NULL,"
            " received_at REAL NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')",
        )

    def claim(self, job_id: str, customer: str, kind: int) -> bool:
        """Record a job as taken; False if it was taken before (then it must not run again)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs (id, customer, kind, received_at, status) VALUES (?, ?, ?, ?, 'running')",
                (job_id, customer, kind, time.time()),
            )
            return cursor.rowcount == 1

    def finish(self, job_id: str, status: str, detail: str = "") -> None:
        """Record how a job ended (``done``, ``error``, ``refused``)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status = ?, detail = ? WHERE id = ?", (status, detail[:500], job_id))

    def status(self, job_id: str) -> str | None:
        """The recorded status of a job, or None if never seen."""
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self) -> dict[str, int]:
        """How many jobs ended in each status."""
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {str(status): int(count) for status, count in rows}

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
