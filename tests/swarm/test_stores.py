"""The provider's job store and the customer's reputation store survive restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dspy_pylon.errors import StoreError
from dspy_pylon.swarm.jobs_db import MOVES, JobsDB, JobStatus
from dspy_pylon.swarm.reputation import Reputation


def test_a_claimed_job_stays_claimed_after_reopening(tmp_path: Path) -> None:
    db = JobsDB(tmp_path / "state" / "jobs.sqlite")
    assert db.claim("a" * 64, "c", 5050) is True
    assert db.claim("a" * 64, "c", 5050) is False
    assert db.move("a" * 64, JobStatus.DONE)
    db.close()
    again = JobsDB(tmp_path / "state" / "jobs.sqlite")
    assert again.claim("a" * 64, "c", 5050) is False
    assert again.status("a" * 64) is JobStatus.DONE and again.counts() == {JobStatus.DONE: 1}
    assert again.status("b" * 64) is None


def test_a_job_moves_only_along_the_table(tmp_path: Path) -> None:
    db = JobsDB(tmp_path / "jobs.sqlite")
    db.claim("a" * 64, "c", 5050)
    assert db.move("a" * 64, JobStatus.AWAITING_PAYMENT)
    assert not db.move("a" * 64, JobStatus.DONE)  # not paid: it cannot have run
    assert db.move("a" * 64, JobStatus.EXPIRED, "invoice expired unpaid")
    assert not db.move("a" * 64, JobStatus.RUNNING)  # final
    assert not db.move("b" * 64, JobStatus.DONE)  # never claimed
    assert db.status("a" * 64) is JobStatus.EXPIRED
    assert set(MOVES) == set(JobStatus)


def test_a_jobs_database_from_before_the_check_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    old = sqlite3.connect(path)
    # The schema main wrote (commit afbef8f), with a row in every status it used.
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, customer TEXT NOT NULL, kind INTEGER NOT NULL,"
        " received_at REAL NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '')"
    )
    statuses = ["running", "awaiting_payment", "done", "error", "refused", "expired"]
    for n, status in enumerate(statuses):
        old.execute("INSERT INTO jobs VALUES (?, 'c', 5050, ?, ?, 'why')", (f"{n}" * 64, float(n), status))
    old.commit()
    old.close()
    db = JobsDB(path)
    assert [db.status(f"{n}" * 64) for n in range(len(statuses))] == [JobStatus(s) for s in statuses]
    assert db.claim("0" * 64, "c", 5050) is False
    db.close()


def test_a_file_that_is_not_a_jobs_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError):
        JobsDB(path)


def test_reputation_score_and_persistence(tmp_path: Path) -> None:
    rep = Reputation(tmp_path / "rep.sqlite")
    assert rep.score("new") == 0.5
    for _ in range(10):
        rep.record_success("good", 20.0)
    rep.record_error("bad")
    rep.record_timeout("bad")
    rep.close()
    rep = Reputation(tmp_path / "rep.sqlite")
    good, bad = rep.stats("good"), rep.stats("bad")
    assert good.score == pytest.approx(11 / 12) and good.mean_latency_ms == pytest.approx(20.0)
    assert bad.score == pytest.approx(1 / 4) and bad.jobs == 2 and bad.mean_latency_ms is None
    assert [s.pubkey for s in rep.all()] == ["good", "bad"]
    assert all(0.0 <= s.score <= 1.0 for s in rep.all())
