"""Per-provider statistics and a reputation score in [0, 1] (SQLite under ``$PYLON_HOME``).

The score is the Laplace-smoothed share of jobs a provider answered correctly: a new
provider starts at 0.5, ten successes give ~0.92, and one timeout weighs like one error.
Manifests use it later (``min_provider_reputation``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from dspy_pylon.sqlite_store import OffLoop, open_store


@dataclass(frozen=True)
class ProviderStats:
    """What one provider did for us."""

    pubkey: str
    successes: int = 0
    errors: int = 0
    timeouts: int = 0
    total_latency_ms: float = 0.0

    @property
    def jobs(self) -> int:
        """All jobs with an outcome."""
        return self.successes + self.errors + self.timeouts

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean latency of successful jobs, or None before the first."""
        return self.total_latency_ms / self.successes if self.successes else None

    @property
    def score(self) -> float:
        """Reputation in [0, 1]: (successes + 1) / (jobs + 2)."""
        return (self.successes + 1) / (self.jobs + 2)


class Reputation(OffLoop):
    """Statistics of every provider this machine used. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = open_store(
            self.path,
            "CREATE TABLE IF NOT EXISTS providers (pubkey TEXT PRIMARY KEY, successes INTEGER NOT NULL DEFAULT 0,"
            " errors INTEGER NOT NULL DEFAULT 0, timeouts INTEGER NOT NULL DEFAULT 0,"
            " total_latency_ms REAL NOT NULL DEFAULT 0)",
        )

    def _add(self, pubkey: str, column: str, latency_ms: float = 0.0) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO providers (pubkey) VALUES (?)", (pubkey,))
            self._db.execute(
                f"UPDATE providers SET {column} = {column} + 1, total_latency_ms = total_latency_ms + ?"
                " WHERE pubkey = ?",
                (latency_ms, pubkey),
            )

    def record_success(self, pubkey: str, latency_ms: float) -> None:
        """A valid result arrived."""
        self._add(pubkey, "successes", latency_ms)

    def record_error(self, pubkey: str) -> None:
        """The provider answered with ``error`` feedback (or an invalid result)."""
        self._add(pubkey, "errors")

    def record_timeout(self, pubkey: str) -> None:
        """The provider took the job (or was targeted) and no result came in time."""
        self._add(pubkey, "timeouts")

    def stats(self, pubkey: str) -> ProviderStats:
        """The statistics of one provider (zeros if never seen)."""
        with self._lock:
            row = self._db.execute(
                "SELECT successes, errors, timeouts, total_latency_ms FROM providers WHERE pubkey = ?", (pubkey,)
            ).fetchone()
        return ProviderStats(pubkey) if row is None else ProviderStats(pubkey, *row)

    def score(self, pubkey: str) -> float:
        """The reputation of one provider in [0, 1] (0.5 when unknown)."""
        return self.stats(pubkey).score

    def all(self) -> list[ProviderStats]:
        """Every provider seen, best first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT pubkey, successes, errors, timeouts, total_latency_ms FROM providers"
            ).fetchall()
        return sorted((ProviderStats(*row) for row in rows), key=lambda s: s.score, reverse=True)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
        self._stop_writer()
