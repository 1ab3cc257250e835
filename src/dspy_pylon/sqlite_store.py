"""Opening the small SQLite stores under ``$PYLON_HOME`` the same way everywhere (the I/O edge)."""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from dspy_pylon.plain_errors import StoreError

P = ParamSpec("P")
T = TypeVar("T")


class OffLoop:
    """A store an event loop calls through :meth:`run`: on a writer thread of the store's own.

    Its calls block on SQLite (up to the busy timeout when another process holds the
    lock); one thread per store keeps them in order, off every loop, and a store locked
    elsewhere delays only its own callers, not another store's.
    """

    _writer: ThreadPoolExecutor | None = None
    _writer_lock = threading.Lock()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on this store's writer thread, awaited."""
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"pylon-{type(self).__name__}")
                writer = self._writer
        # Imported here: asyncio is loaded whenever this runs, and at module level it would cost
        # `pylon spend` (which reads the ledger without a loop) a sixth of its start-up.
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(writer, functools.partial(fn, *args, **kwargs))

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=False)


# How long a store waits for another process's lock before giving up.
_BUSY_S = 10.0

#: One upgrade step: brings a database from version ``n`` (its key) to ``n + 1``.
Step = Callable[[sqlite3.Connection], None]


def open_store(path: Path, schema: str | None = None) -> sqlite3.Connection:
    """Open (creating folders, and ``schema`` when given) a WAL-mode database shared by threads.

    Callers serialise access with their own lock. WAL with ``synchronous=NORMAL`` stays
    consistent across crashes and skips an fsync per commit (~0.2 ms each); a power loss
    can only lose the last commit.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=_BUSY_S)
    _wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    if schema is not None:
        db.execute(schema)
    return db


def _wal(db: sqlite3.Connection) -> None:
    # Switching a file to WAL needs an exclusive lock, and SQLite answers BUSY at once
    # (without its busy handler) when another process is opening the same file: retry.
    deadline = time.monotonic() + _BUSY_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def migrate(db: sqlite3.Connection, what: str, steps: Mapping[int, Step]) -> None:
    """Bring ``db`` to version ``len(steps)`` (SQLite's ``user_version``), one step at a time.

    All steps run in one ``BEGIN IMMEDIATE`` transaction that re-reads the version, so
    several processes opening an old file upgrade it once; a failing step rolls everything
    back and raises :class:`StoreError` (``what`` names the store). A file from a newer
    version is refused, never downgraded.
    """
    target = len(steps)
    if _version(db) == target:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)
        if version > target:
            raise StoreError(
                f"the {what} was written by a newer dspy-pylon (schema {version}, this one reads {target}); "
                "upgrade dspy-pylon to use it"
            )
        for step in range(version, target):
            steps[step](db)
        db.execute(f"PRAGMA user_version = {target}")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        raise StoreError(f"could not upgrade the {what} (nothing was changed): {exc}") from None
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether table ``name`` exists."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None
