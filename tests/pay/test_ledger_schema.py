"""The ledger's states, moves and upgrades: enum states under a CHECK, one transition rule,
an old ledger upgraded without losing a row, a process named by pid *and* start time."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_pylon.errors import PylonError, StoreError
from dspy_pylon.pay.ledger import Claim, SpendLedger
from dspy_pylon.pay.ledger_schema import EARNED_MOVES, SPENT_MOVES, VERSION, Earned, Spent, sources
from dspy_pylon.pay.liveness import alive, this_process
from dspy_pylon.pay.refusals import RefusalCode

#: Written by main's ledger code at commit afbef8f (schema 0, before user_version) with
#: tests/pay/data/make_legacy_ledger.py: eleven spent rows covering every state, five earned.
LEGACY = Path(__file__).parent / "data" / "ledger_main_afbef8f.sqlite"


def _job(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    shutil.copy(LEGACY, path)
    return path


def _rows(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT job_id, direction, provider, customer, model, bid_msats, invoice_msats, paid_msats, fees_msats,"
            " payment_hash, preimage, bolt11, state, reason, prompt_tokens, completion_tokens, latency_ms,"
            " created_at, updated_at, paid_at, pid FROM ledger ORDER BY job_id, direction"
        ).fetchall()
    finally:
        db.close()


# ─── upgrading a ledger written by main ───


def test_an_old_ledger_is_upgraded_without_losing_a_row(legacy: Path) -> None:
    before = _rows(legacy)
    assert len(before) == 16
    ledger = SpendLedger(legacy)
    try:
        assert _rows(legacy) == before  # every column of every row, unchanged
        db = sqlite3.connect(legacy)
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION
        db.close()
        spent = {entry.job_id: entry for entry in ledger.entries()}
        assert {job[-2:]: entry.state for job, entry in spent.items()} == {
            "01": Spent.PUBLISHED,
            "02": Spent.APPROVAL,
            "03": Spent.PAYING,
            "04": Spent.PAID,
            "05": Spent.DONE,
            "06": Spent.PAID_NO_RESULT,
            "07": Spent.PAID_NO_RESULT,
            "08": Spent.REFUSED,
            "09": Spent.PAYMENT_FAILED,
            "0a": Spent.FAILED,
            "0b": Spent.DONE,
        }
        # The recovery facts main kept in the reason text now have their own columns.
        assert spent[_job(6)].interrupted and spent[_job(6)].relays_checked_at is None
        assert spent[_job(7)].interrupted and spent[_job(7)].relays_checked_at is not None
        assert not spent[_job(4)].interrupted
        assert spent[_job(8)].refusal is RefusalCode.UNKNOWN
        assert [entry.job_id for entry in ledger.unlooked_interrupted()] == [_job(6)]
        assert ledger.total_paid_msats() == 3010 + 3000 + 3000 + 3000
        assert {entry.state for entry in ledger.entries("earned")} == set(Earned)
        assert ledger.total_paid_msats("earned") == 4000
    finally:
        ledger.close()


def test_the_upgraded_ledger_keeps_working(legacy: Path) -> None:
    ledger = SpendLedger(legacy)
    try:
        # The payment hash stays unique across the upgrade: job 4's invoice cannot pay job 1.
        assert (
            ledger.begin_payment(_job(1), provider="p", invoice_msats=1, bolt11="ln", payment_hash="c4" * 32)
            is Claim.INVOICE_USED
        )
        assert ledger.close_orphans() == 3  # jobs 1, 2 and 4 belong to processes that are gone
        assert ledger.entry(_job(4)).state is Spent.PAID_NO_RESULT  # type: ignore[union-attr]
        assert ledger.entry(_job(1)).state is Spent.FAILED  # type: ignore[union-attr]
        ledger.result_found_later(_job(6))
        assert ledger.entry(_job(6)).state is Spent.DONE  # type: ignore[union-attr]
    finally:
        ledger.close()
    again = SpendLedger(legacy)  # a second open does not upgrade twice
    try:
        assert len(again.entries()) == 11
    finally:
        again.close()


def test_a_ledger_without_the_pid_column_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    shutil.copy(LEGACY, path)
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE ledger DROP COLUMN pid")
    db.commit()
    db.close()
    ledger = SpendLedger(path)
    try:
        assert len(ledger.entries()) == 11 and len(ledger.entries("earned")) == 5
    finally:
        ledger.close()


def test_two_processes_upgrading_at_once_upgrade_once(legacy: Path) -> None:
    code = "import sys; from dspy_pylon.pay.ledger import SpendLedger; print(len(SpendLedger(sys.argv[1]).entries()))"
    racers = [subprocess.Popen([sys.executable, "-c", code, str(legacy)], stdout=subprocess.PIPE) for _ in range(2)]
    outs = [racer.communicate(timeout=60)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert outs == [b"11\n", b"11\n"]


def test_a_row_the_new_schema_cannot_hold_stops_the_upgrade_and_changes_nothing(legacy: Path) -> None:
    db = sqlite3.connect(legacy)
    db.execute("UPDATE ledger SET state = 'bogus' WHERE job_id = ?", (_job(5),))
    db.commit()
    db.close()
    before = _rows(legacy)
    with pytest.raises(StoreError, match="nothing was changed"):
        SpendLedger(legacy)
    assert _rows(legacy) == before
    db = sqlite3.connect(legacy)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    SpendLedger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer dspy-pylon"):
        SpendLedger(path)


@pytest.mark.parametrize(
    "content", [b"not a database at all, just text" * 100, b"SQLite format 3\x00" + b"\xff" * 4000]
)
def test_a_file_that_is_not_a_ledger_is_a_store_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        SpendLedger(path)
    assert isinstance(caught.value, PylonError) and str(path) in str(caught.value)
    assert path.read_bytes() == content


# ─── states and moves ───


def test_the_database_refuses_a_state_that_is_not_one(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    SpendLedger(path).close()
    db = sqlite3.connect(path)
    insert = "INSERT INTO ledger (job_id, direction, state, created_at, updated_at) VALUES"
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(f"{insert} ('j', 'spent', 'invoiced', 0, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(f"{insert} ('j', 'earned', 'paying', 0, 0)")
    db.close()


def test_final_states_have_no_way_out() -> None:
    for moves in (SPENT_MOVES, EARNED_MOVES):
        assert set(moves) == set(type(next(iter(moves))))
    assert {s for s, m in SPENT_MOVES.items() if not m} == {
        Spent.DONE,
        Spent.REFUSED,
        Spent.PAYMENT_FAILED,
        Spent.FAILED,
    }
    assert sources(Spent.PAYING) == (Spent.PUBLISHED, Spent.APPROVAL)
    assert sources(Spent.DONE, among=(Spent.PAID, Spent.REFUSED)) == (Spent.PAID,)


def test_transition_applies_only_allowed_moves(tmp_path: Path) -> None:
    ledger = SpendLedger(tmp_path / "ledger.sqlite")
    try:
        ledger.open_job(_job(1), provider="", model="m", bid_msats=10)
        assert not ledger.transition(_job(1), "spent", Spent.PAID)  # published → paid skips paying
        assert ledger.transition(_job(1), "spent", Spent.PAYING, provider="p", note="first")
        assert not ledger.transition(_job(1), "spent", Spent.PAYING)  # only one caller moves it
        assert ledger.transition(_job(1), "spent", Spent.PAID, paid_msats=9)
        assert not ledger.transition(_job(1), "spent", Spent.REFUSED)
        assert not ledger.transition(_job(2), "spent", Spent.PAYING)  # no such job
        entry = ledger.entry(_job(1))
        assert entry is not None and (entry.state, entry.provider, entry.paid_msats, entry.reason) == (
            Spent.PAID,
            "p",
            9,
            "first",
        )
        with pytest.raises(AssertionError, match="not a ledger column"):
            ledger.transition(_job(1), "spent", Spent.DONE, state="done")
    finally:
        ledger.close()


# ─── process liveness ───


def test_this_process_is_alive_and_a_reused_pid_is_not() -> None:
    pid, started = this_process()
    assert alive(pid, started)
    assert alive(pid, None)  # rows written before start times were recorded: the pid decides
    assert not alive(pid, started - 3600)  # same pid, another process (a reboot, a wrap-around)
    assert not alive(0, None) and not alive(-1, started)


def test_a_dead_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not alive(child.pid, None)


def test_jobs_of_a_reused_pid_are_closed_as_orphans(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SpendLedger(path)
    try:
        ledger.open_job(_job(1), provider="", model="m", bid_msats=10)
        ledger.open_job(_job(2), provider="", model="m", bid_msats=10)
        db = sqlite3.connect(path)
        # Job 1 was opened by an earlier process that had our pid; job 2 is ours.
        db.execute("UPDATE ledger SET pid_started = pid_started - 3600 WHERE job_id = ?", (_job(1),))
        db.commit()
        db.close()
        assert ledger.close_orphans() == 1
        closed, ours = ledger.entry(_job(1)), ledger.entry(_job(2))
        assert closed is not None and (closed.state, closed.interrupted) == (Spent.FAILED, True)
        assert ours is not None and ours.state is Spent.PUBLISHED
    finally:
        ledger.close()
