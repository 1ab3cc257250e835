"""The spend ledger: exactly-once payment intent (threads and processes), state transitions, totals."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from dspy_pylon.pay.ledger import Claim, SpendLedger
from dspy_pylon.pay.refusals import RefusalCode

PROVIDER = "a1" * 32
OTHER_PROVIDER = "b2" * 32
CUSTOMER = "c3" * 32


def _job(n: int | str) -> str:
    return f"{n}".rjust(64, "0")


def _hash(n: int | str) -> str:
    return f"{n}".rjust(64, "f")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SpendLedger]:
    spend = SpendLedger(tmp_path / "ledger.sqlite")
    yield spend
    spend.close()


def _open(ledger: SpendLedger, job: str, *, bid: int = 5000, provider: str = PROVIDER, model: str = "m1") -> None:
    ledger.open_job(job, provider=provider, model=model, bid_msats=bid)


def _begin(ledger: SpendLedger, job: str, payment_hash: str, amount: int = 1000) -> Claim:
    return ledger.begin_payment(
        job, provider=PROVIDER, invoice_msats=amount, bolt11=f"lnbcrt-{payment_hash}", payment_hash=payment_hash
    )


def _state(ledger: SpendLedger, job: str) -> str:
    entry = ledger.entry(job)
    assert entry is not None
    return entry.state


# ─── exactly-once payment intent ───


def test_one_of_32_threads_wins_the_payment(ledger: SpendLedger) -> None:
    for round_ in range(10):
        job = _job(f"race{round_}")
        _open(ledger, job)
        start = threading.Barrier(32)
        outcomes: list[Claim] = []

        def pay(job: str = job, start: threading.Barrier = start, outcomes: list[Claim] = outcomes) -> None:
            start.wait()
            outcomes.append(_begin(ledger, job, _hash(job[-8:])))

        threads = [threading.Thread(target=pay) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(o.value for o in outcomes) == ["mine"] + ["taken"] * 31
        assert _state(ledger, job) == "paying"


def test_two_ledger_objects_on_one_file_let_one_thread_win(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    first, second = SpendLedger(path), SpendLedger(path)
    try:
        _open(first, _job(1))
        start = threading.Barrier(16)
        wins: list[bool] = []

        def pay(spend: SpendLedger) -> None:
            start.wait()
            wins.append(_begin(spend, _job(1), _hash(1)) is Claim.MINE)

        threads = [threading.Thread(target=pay, args=(first if i % 2 else second,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wins.count(True) == 1 and len(wins) == 16
    finally:
        first.close()
        second.close()


_RACER = """
import json, sys, time
from pathlib import Path
from dspy_pylon.pay.ledger import SpendLedger

path, go, role, jobs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ledger = SpendLedger(Path(path))
print("ready", flush=True)
while not go.exists():
    time.sleep(0.0005)
won, reasons = [], set()
for i in range(jobs):
    # The same job raced by both processes; then this process's own job, billed with an invoice
    # (payment hash) the other process offers for its own job too: one job only may use it.
    for job, payment_hash in ((f"race{i}", f"{i}".rjust(64, "e")), (f"hash{role}{i}", f"{i}".rjust(64, "d"))):
        job = job.rjust(64, "0")
        claim = ledger.begin_payment(job, provider="p", invoice_msats=1, bolt11="ln", payment_hash=payment_hash)
        if claim.value == "mine":
            won.append(job)
        else:
            reasons.add(claim.value)
ledger.close()
print(json.dumps({"won": won, "reasons": sorted(reasons)}), flush=True)
"""


def test_two_processes_never_both_pay_a_job_or_an_invoice(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    go = tmp_path / "go"
    jobs = 250
    setup = SpendLedger(path)
    for i in range(jobs):
        _open(setup, f"race{i}".rjust(64, "0"))
        for role in "ab":
            _open(setup, f"hash{role}{i}".rjust(64, "0"))
    setup.close()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), str(go), role, str(jobs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in "ab"
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready", racer.stderr.read() if racer.stderr else ""
        go.touch()
        results = []
        for racer in racers:
            out, err = racer.communicate(timeout=60)
            assert racer.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    won_a, won_b = (set(result["won"]) for result in results)
    assert not won_a & won_b
    race_jobs = {f"race{i}".rjust(64, "0") for i in range(jobs)}
    # Every job was paid by exactly one process.
    assert (won_a | won_b) & race_jobs == race_jobs
    # Of two jobs offered the same invoice, exactly one may pay it.
    for i in range(jobs):
        pair = {f"hash{role}{i}".rjust(64, "0") for role in "ab"}
        assert len((won_a | won_b) & pair) == 1, i
    reasons = set(results[0]["reasons"]) | set(results[1]["reasons"])
    assert reasons <= {"taken", "invoice_used"}
    check = SpendLedger(path)
    try:
        assert len(check.entries("spent", "paying")) == 2 * jobs
        assert len(check.entries("spent", "published")) == jobs
    finally:
        check.close()


def test_an_invoice_paid_for_one_job_is_refused_for_another(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _open(ledger, _job(2))
    assert _begin(ledger, _job(1), _hash(1)) is Claim.MINE
    ledger.payment_succeeded(_job(1), preimage="00" * 32, paid_msats=1000)
    assert _begin(ledger, _job(2), _hash(1)) is Claim.INVOICE_USED
    assert _state(ledger, _job(2)) == "published"  # still payable with a proper invoice
    assert _begin(ledger, _job(2), _hash(2)) is Claim.MINE


def test_a_job_is_paid_at_most_once(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    assert _begin(ledger, _job(1), _hash(1)) is Claim.MINE
    ledger.payment_succeeded(_job(1), preimage="11" * 32, paid_msats=1000)
    # A repeated bill, even with a new invoice, is not paid again.
    assert _begin(ledger, _job(1), _hash(2)) is Claim.TAKEN
    ledger.finish(_job(1), answered=True)
    assert _begin(ledger, _job(1), _hash(3)) is Claim.TAKEN
    assert _begin(ledger, _job(404), _hash(4)) is Claim.UNKNOWN_JOB
    assert ledger.total_paid_msats() == 1000


# ─── customer transitions ───


def test_paid_and_answered_is_done(ledger: SpendLedger) -> None:
    _open(ledger, _job(1), bid=5000)
    assert _begin(ledger, _job(1), _hash(1), 3000) is Claim.MINE
    ledger.payment_succeeded(_job(1), preimage="aa" * 32, paid_msats=3007, fees_msats=7)
    paid = ledger.entry(_job(1))
    assert paid is not None
    assert (paid.state, paid.paid_msats, paid.fees_msats, paid.preimage) == ("paid", 3007, 7, "aa" * 32)
    assert paid.paid_at is not None and paid.invoice_msats == 3000 and paid.payment_hash == _hash(1)
    ledger.finish(
        _job(1),
        answered=True,
        provider=OTHER_PROVIDER,
        model="served-model",
        prompt_tokens=12,
        completion_tokens=34,
        latency_ms=56.5,
    )
    done = ledger.entry(_job(1))
    assert done is not None
    assert (done.state, done.provider, done.model, done.prompt_tokens, done.completion_tokens, done.latency_ms) == (
        "done",
        OTHER_PROVIDER,
        "served-model",
        12,
        34,
        56.5,
    )
    assert done.paid_msats == 3007 and done.bid_msats == 5000


def test_a_free_answer_is_done_with_nothing_paid(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    ledger.finish(_job(1), answered=True, prompt_tokens=1, completion_tokens=2)
    entry = ledger.entry(_job(1))
    assert entry is not None and (entry.state, entry.paid_msats, entry.payment_hash) == ("done", 0, None)


def test_paid_without_a_result_is_recorded_as_such(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _begin(ledger, _job(1), _hash(1))
    ledger.payment_succeeded(_job(1), preimage="bb" * 32, paid_msats=1000)
    ledger.finish(_job(1), answered=False, reason="no result within 10 s")
    entry = ledger.entry(_job(1))
    assert entry is not None
    assert (entry.state, entry.paid_msats, entry.reason) == ("paid_no_result", 1000, "no result within 10 s")
    assert ledger.total_paid_msats() == 1000


@pytest.mark.parametrize("first", ["published", "approval"])
def test_unanswered_and_unpaid_is_failed(ledger: SpendLedger, first: str) -> None:
    _open(ledger, _job(1))
    if first == "approval":
        ledger.await_approval(_job(1), provider=PROVIDER, invoice_msats=900, bolt11="lnbcrt")
        assert _state(ledger, _job(1)) == "approval"
    ledger.finish(_job(1), answered=False, reason="timed out")
    entry = ledger.entry(_job(1))
    assert entry is not None and (entry.state, entry.paid_msats) == ("failed", 0)
    assert _begin(ledger, _job(1), _hash(1)) is Claim.TAKEN


def test_an_approved_bill_can_be_paid(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    ledger.await_approval(_job(1), provider=PROVIDER, invoice_msats=900, bolt11="lnbcrt")
    entry = ledger.entry(_job(1))
    assert entry is not None and entry.payment_hash is None  # not reserved until paid
    assert _begin(ledger, _job(1), _hash(1), 900) is Claim.MINE


def test_a_refused_bill_pays_nothing_and_stays_refused(ledger: SpendLedger) -> None:
    _open(ledger, _job(1), provider="")
    ledger.refuse(
        _job(1), RefusalCode.EXPIRED, "the invoice expired 3 s ago", provider=OTHER_PROVIDER, invoice_msats=7777
    )
    assert _begin(ledger, _job(1), _hash(1)) is Claim.TAKEN
    ledger.payment_succeeded(_job(1), preimage="cc" * 32, paid_msats=7777)  # no intent: ignored
    ledger.finish(_job(1), answered=False, reason="cancelled")
    ledger.finish(_job(1), answered=True)
    entry = ledger.entry(_job(1))
    assert entry is not None
    assert (entry.state, entry.paid_msats, entry.invoice_msats, entry.provider) == ("refused", 0, 7777, OTHER_PROVIDER)
    assert entry.refusal is RefusalCode.EXPIRED
    assert entry.reason.startswith("the invoice expired 3 s ago")
    assert ledger.total_paid_msats() == 0


def test_a_failed_payment_is_never_retried(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _begin(ledger, _job(1), _hash(1))
    ledger.payment_failed(_job(1), "INSUFFICIENT_BALANCE: 5 msats")
    ledger.finish(_job(1), answered=False, reason="payment failed")
    entry = ledger.entry(_job(1))
    assert entry is not None
    assert (entry.state, entry.paid_msats) == ("payment_failed", 0)
    assert "INSUFFICIENT_BALANCE" in entry.reason
    assert _begin(ledger, _job(1), _hash(2)) is Claim.TAKEN


def test_notes_accumulate(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    ledger.note(_job(1), "ignored a repeated bill")
    ledger.note(_job(1), "bill without an invoice")
    assert ledger.entry(_job(1)).reason == "ignored a repeated bill; bill without an invoice"  # type: ignore[union-attr]


# ─── resolving a crash mid-payment ───


def test_a_crash_mid_payment_is_resolved_as_paid_from_the_wallet(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    before = SpendLedger(path)
    _open(before, _job(1))
    _begin(before, _job(1), _hash(1), 2500)
    before.close()  # the process dies between the intent and the wallet's answer

    after = SpendLedger(path)
    try:
        assert [entry.job_id for entry in after.entries("spent", "paying")] == [_job(1)]
        after.resolve(_job(1), settled=True, preimage="dd" * 32, fees_msats=3)
        entry = after.entry(_job(1))
        assert entry is not None
        assert (entry.state, entry.paid_msats, entry.fees_msats, entry.preimage) == (
            "paid_no_result",
            2503,
            3,
            "dd" * 32,
        )
        assert entry.interrupted and entry.relays_checked_at is None
        # Resolving again (a second restart) changes nothing.
        after.resolve(_job(1), settled=True, preimage="ee" * 32, fees_msats=100)
        after.resolve(_job(1), settled=False)
        again = after.entry(_job(1))
        assert again is not None and (again.paid_msats, again.preimage, again.state) == (2503, "dd" * 32, entry.state)
        assert after.total_paid_msats() == 2503
    finally:
        after.close()


def test_a_crash_mid_payment_is_resolved_as_unpaid_from_the_wallet(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _begin(ledger, _job(1), _hash(1), 2500)
    ledger.resolve(_job(1), settled=False)
    entry = ledger.entry(_job(1))
    assert entry is not None
    assert (entry.state, entry.paid_msats, entry.preimage) == ("payment_failed", 0, None)
    assert entry.interrupted
    assert _begin(ledger, _job(1), _hash(1)) is Claim.TAKEN


def test_resolve_never_touches_a_job_that_is_not_paying(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _begin(ledger, _job(1), _hash(1), 1000)
    ledger.payment_succeeded(_job(1), preimage="11" * 32, paid_msats=1000)
    ledger.resolve(_job(1), settled=True, preimage="22" * 32, fees_msats=50)
    _open(ledger, _job(2))
    ledger.resolve(_job(2), settled=True, preimage="33" * 32)
    assert _state(ledger, _job(1)) == "paid" and _state(ledger, _job(2)) == "published"
    assert ledger.total_paid_msats() == 1000


def test_a_job_answered_while_its_payment_is_in_flight_stays_paying(ledger: SpendLedger) -> None:
    _open(ledger, _job(1))
    _begin(ledger, _job(1), _hash(1))
    ledger.finish(_job(1), answered=True, prompt_tokens=5, completion_tokens=6)
    ledger.finish(_job(1), answered=False, reason="late")
    entry = ledger.entry(_job(1))
    assert entry is not None and entry.state == "paying" and entry.completion_tokens == 6


# ─── provider side ───


def test_earnings_follow_the_invoice(ledger: SpendLedger) -> None:
    for n, customer in ((1, CUSTOMER), (2, CUSTOMER), (3, "d4" * 32)):
        ledger.record_invoice(
            _job(n),
            customer=customer,
            model="m1",
            bid_msats=5000,
            invoice_msats=1000 * n,
            bolt11=f"lnbcrt{n}",
            payment_hash=_hash(n),
        )
    # Recording again (a re-delivered request) changes nothing.
    ledger.record_invoice(
        _job(1), customer="x", model="x", bid_msats=1, invoice_msats=1, bolt11="x", payment_hash=_hash(9)
    )
    ledger.earning_settled(_job(1), preimage="11" * 32)
    ledger.earning_finished(_job(1), "done", prompt_tokens=7, completion_tokens=8)
    ledger.earning_settled(_job(2), preimage="22" * 32)
    ledger.earning_finished(_job(2), "failed", "result too large")
    ledger.earning_finished(_job(3), "expired", "invoice expired unpaid")
    ledger.earning_settled(_job(3), preimage="33" * 32)  # too late: it expired
    earned = {entry.job_id: entry for entry in ledger.entries("earned")}
    assert {job: (e.state, e.paid_msats) for job, e in earned.items()} == {
        _job(1): ("done", 1000),
        _job(2): ("failed", 2000),
        _job(3): ("expired", 0),
    }
    assert (earned[_job(1)].customer, earned[_job(1)].prompt_tokens, earned[_job(1)].completion_tokens) == (
        CUSTOMER,
        7,
        8,
    )
    assert earned[_job(1)].preimage == "11" * 32 and earned[_job(1)].paid_at is not None
    assert earned[_job(2)].reason == "result too large"
    assert ledger.total_paid_msats("earned") == 3000
    assert ledger.total_paid_msats("spent") == 0
    assert ledger.entries("spent") == []


def test_spent_and_earned_rows_of_one_job_are_separate(ledger: SpendLedger) -> None:
    # A node may buy a job from itself: the same job id and invoice on both sides.
    _open(ledger, _job(1))
    ledger.record_invoice(
        _job(1), customer=CUSTOMER, model="m1", bid_msats=5000, invoice_msats=1000, bolt11="ln", payment_hash=_hash(1)
    )
    assert _begin(ledger, _job(1), _hash(1)) is Claim.MINE
    ledger.payment_succeeded(_job(1), preimage="11" * 32, paid_msats=1000)
    ledger.earning_settled(_job(1), preimage="11" * 32)
    assert ledger.total_paid_msats("spent") == ledger.total_paid_msats("earned") == 1000
    assert ledger.entry(_job(1), "spent").direction == "spent"  # type: ignore[union-attr]
    assert ledger.entry(_job(1), "earned").direction == "earned"  # type: ignore[union-attr]


# ─── summaries and persistence ───


def _fill(ledger: SpendLedger) -> None:
    """Four spent jobs (done, refused, paid without result, paying) and one earned."""
    _open(ledger, _job(1), provider=PROVIDER, model="m1")
    _begin(ledger, _job(1), _hash(1), 3000)
    ledger.payment_succeeded(_job(1), preimage="11" * 32, paid_msats=3010, fees_msats=10)
    ledger.finish(_job(1), answered=True, prompt_tokens=11, completion_tokens=7)
    _open(ledger, _job(2), provider=OTHER_PROVIDER, model="m2")
    ledger.refuse(_job(2), RefusalCode.OVER_BID, "too expensive", provider=OTHER_PROVIDER, invoice_msats=9000)
    _open(ledger, _job(3), provider=PROVIDER, model="m1")
    _begin(ledger, _job(3), _hash(3), 2000)
    ledger.payment_succeeded(_job(3), preimage="33" * 32, paid_msats=2000)
    ledger.finish(_job(3), answered=False, reason="timeout")
    _open(ledger, _job(4), provider=OTHER_PROVIDER, model="m2")
    ledger.begin_payment(_job(4), provider=OTHER_PROVIDER, invoice_msats=1000, bolt11="ln4", payment_hash=_hash(4))
    ledger.record_invoice(
        _job(5), customer=CUSTOMER, model="m1", bid_msats=4000, invoice_msats=4000, bolt11="ln5", payment_hash=_hash(5)
    )
    ledger.earning_settled(_job(5), preimage="55" * 32)
    ledger.earning_finished(_job(5), "done", prompt_tokens=3, completion_tokens=4)


def test_summaries_add_up(ledger: SpendLedger) -> None:
    _fill(ledger)
    rows = {by: [astuple(row) for row in ledger.summary(by)] for by in ("provider", "model")}  # type: ignore[arg-type]
    #       key, jobs, paid jobs, paid msats, paid no result, refused, tokens in, tokens out
    assert rows["provider"] == [(PROVIDER, 2, 2, 5010, 1, 0, 11, 7), (OTHER_PROVIDER, 2, 0, 0, 0, 1, 0, 0)]
    assert rows["model"] == [("m1", 2, 2, 5010, 1, 0, 11, 7), ("m2", 2, 0, 0, 0, 1, 0, 0)]
    days = {
        datetime.datetime.fromtimestamp(entry.created_at, datetime.UTC).date().isoformat() for entry in ledger.entries()
    }
    by_day = ledger.summary("day")
    assert {row.key for row in by_day} == days
    assert sum(row.jobs for row in by_day) == 4 and sum(row.paid_msats for row in by_day) == 5010
    assert sum(row.refused_jobs for row in by_day) == 1 and sum(row.unanswered_paid_jobs for row in by_day) == 1
    earned = ledger.summary("provider", "earned")
    assert [(row.key, row.jobs, row.paid_jobs, row.paid_msats, row.prompt_tokens) for row in earned] == [
        (CUSTOMER, 1, 1, 4000, 3)
    ]
    assert ledger.total_paid_msats() == 5010
    assert ledger.total_paid_msats("earned") == 4000
    assert [entry.job_id for entry in ledger.entries("spent", "paying")] == [_job(4)]
    assert [entry.job_id for entry in ledger.entries()] == [_job(n) for n in range(1, 5)]


def test_an_empty_ledger_sums_to_zero(ledger: SpendLedger) -> None:
    assert ledger.summary("day") == [] and ledger.summary("provider", "earned") == []
    assert ledger.total_paid_msats() == 0 and ledger.total_paid_msats("earned") == 0
    assert ledger.entry(_job(1)) is None


def test_a_model_left_blank_is_summed_under_a_dash(ledger: SpendLedger) -> None:
    _open(ledger, _job(1), model="")
    assert [row.key for row in ledger.summary("model")] == ["-"]


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = SpendLedger(path)
    _fill(first)
    before = (first.entries(), first.entries("earned"), first.summary("provider"), first.total_paid_msats())
    first.close()
    second = SpendLedger(path)
    try:
        after = (second.entries(), second.entries("earned"), second.summary("provider"), second.total_paid_msats())
        assert after == before
        # The uniqueness of the payment hash survives too.
        _open(second, _job(9))
        assert _begin(second, _job(9), _hash(1)) is Claim.INVOICE_USED
    finally:
        second.close()


def test_two_ledgers_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    customer, provider = SpendLedger(path), SpendLedger(path)
    try:
        _open(customer, _job(1))
        assert provider.entry(_job(1)) is not None
        assert _begin(provider, _job(1), _hash(1)) is Claim.MINE
        assert _begin(customer, _job(1), _hash(1)) is Claim.TAKEN
        provider.payment_succeeded(_job(1), preimage="11" * 32, paid_msats=1000)
        assert customer.total_paid_msats() == 1000
        customer.finish(_job(1), answered=True)
        assert _state(provider, _job(1)) == "done"
    finally:
        customer.close()
        provider.close()
