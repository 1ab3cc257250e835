"""The provider's job store and the customer's reputation store survive restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspy_pylon.swarm.jobs_db import JobsDB
from dspy_pylon.swarm.reputation import Reputation


def test_a_claimed_job_stays_claimed_after_reopening(tmp_path: Path) -> None:
    db = JobsDB(tmp_path / "state" / "jobs.sqlite")
    assert db.claim("a" * 64, "c", 5050) is True
    assert db.claim("a" * 64, "c", 5050) is False
    db.finish("a" * 64, "done")
    db.close()
    again = JobsDB(tmp_path / "state" / "jobs.sqlite")
    assert again.claim("a" * 64, "c", 5050) is False
    assert again.status("a" * 64) == "done" and again.counts() == {"done": 1}
    assert again.status("b" * 64) is None


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
