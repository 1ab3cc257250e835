"""Opening the small SQLite stores under ``$PYLON_HOME`` the same way everywhere (the I/O edge)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_store(path: Path, schema: str | None = None) -> sqlite3.Connection:
    """Open (creating folders, and ``schema`` when given) a WAL-mode database shared by threads.

    Callers serialise access with their own lock. WAL with ``synchronous=NORMAL`` stays
    consistent across crashes and skips an fsync per commit (~0.2 ms each); a power loss
    can only lose the last commit.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if schema is not None:
        db.execute(schema)
    return db
