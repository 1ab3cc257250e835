"""Writes tests/pay/data/ledger_main_afbef8f.sqlite with main's ledger code (commit afbef8f)."""

import sqlite3
import sys

from dspy_pylon.pay.ledger import SpendLedger

path = sys.argv[1]
L = SpendLedger(path)


def h(n: int) -> str:
    return f"{n:064x}"


# spent rows, one per state
L.open_job(h(1), provider="aa" * 32, model="m", bid_msats=5000)  # published (our pid: alive)
L.open_job(h(2), provider="aa" * 32, model="m", bid_msats=5000)
L.await_approval(h(2), provider="aa" * 32, invoice_msats=4000, bolt11="lnbc-approval")  # approval
L.open_job(h(3), provider="", model="m", bid_msats=5000)
L.begin_payment(h(3), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc3", payment_hash="c3" * 32)  # paying
L.open_job(h(4), provider="", model="m", bid_msats=5000)
L.begin_payment(h(4), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc4", payment_hash="c4" * 32)
L.payment_succeeded(h(4), preimage="d4" * 32, paid_msats=3010, fees_msats=10)  # paid
L.open_job(h(5), provider="", model="m", bid_msats=5000)
L.begin_payment(h(5), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc5", payment_hash="c5" * 32)
L.payment_succeeded(h(5), preimage="d5" * 32, paid_msats=3000)
L.finish(
    h(5), answered=True, provider="bb" * 32, model="m", prompt_tokens=7, completion_tokens=9, latency_ms=12.5
)  # done
L.open_job(h(6), provider="", model="m", bid_msats=5000)
L.begin_payment(h(6), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc6", payment_hash="c6" * 32)
L.payment_succeeded(h(6), preimage="d6" * 32, paid_msats=3000)
L.finish(h(6), answered=False, reason="interrupted: the process making the call stopped")  # paid_no_result, interrupted
L.open_job(h(7), provider="", model="m", bid_msats=5000)
L.begin_payment(h(7), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc7", payment_hash="c7" * 32)
L.resolve(h(7), settled=True, preimage="d7" * 32, fees_msats=0)  # paid_no_result, restart
L.note(h(7), "no result on the relays at the next start")  # looked on relays
L.open_job(h(8), provider="", model="m", bid_msats=5000)
L.refuse(
    h(8), "the invoice asks 9000 msats, above the bid of 5000 msats", provider="bb" * 32, invoice_msats=9000
)  # refused
L.open_job(h(9), provider="", model="m", bid_msats=5000)
L.begin_payment(h(9), provider="bb" * 32, invoice_msats=3000, bolt11="lnbc9", payment_hash="c9" * 32)
L.payment_failed(h(9), "wallet said no")  # payment_failed
L.open_job(h(10), provider="", model="m", bid_msats=5000)
L.finish(h(10), answered=False, reason="no result within 5 s")  # failed
L.open_job(h(11), provider="", model="m", bid_msats=5000)
L.finish(
    h(11), answered=True, provider="ee" * 32, model="m2", prompt_tokens=1, completion_tokens=2, latency_ms=3.0
)  # done, free
# earned rows
for n, st in ((21, "invoiced"), (22, "paid"), (23, "done"), (24, "expired"), (25, "failed")):
    L.record_invoice(
        h(n),
        customer="ff" * 32,
        model="m",
        bid_msats=5000,
        invoice_msats=2000,
        bolt11=f"lnbc{n}",
        payment_hash=f"{n:02d}" * 32,
    )
    if st in ("paid", "done"):
        L.earning_settled(h(n), preimage="ab" * 32)
    if st in ("done", "expired", "failed"):
        L.earning_finished(h(n), st, reason=st, prompt_tokens=4, completion_tokens=5)
L.close()
db = sqlite3.connect(path)
# the published row belongs to a process that is gone (pid 0 is never alive)
db.execute("UPDATE ledger SET pid = 0 WHERE job_id = ?", (h(1),))
db.commit()
print(db.execute("select state, count(*) from ledger group by direction, state").fetchall())
print(db.execute("pragma user_version").fetchone())
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.execute("PRAGMA journal_mode=DELETE")
db.close()
