"""Crash safety: a paying customer process is killed with SIGKILL at random moments and restarted
until 50 paid calls have completed. No job is paid twice, and the ledger explains every payment.

Real parts: the relay, a priced provider node on llama.cpp, the development wallet over NIP-47,
and a separate customer process with its own ``PYLON_HOME``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

from dspy_pylon.pay.ledger import PAID_STATES, SpendLedger
from dspy_pylon.testing import LocalSwarm

CALLS = 50
PRICE = 1_111
FUNDS = 1_000_000
REPO = Path(__file__).resolve().parents[2]


# The crash safety is the customer's (its ledger and restart recovery); one relay suffices, and the
# production-like one keeps every event across the customer's lives, as a real relay does.
@pytest.mark.parametrize("relay_url", ["nostr-relay"], indirect=True)
def test_sigkill_mid_payment_never_pays_twice(
    start_provider: Any, dev_wallet: LocalSwarm, relay_url: str, tmp_path: Path
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"))
    home = tmp_path / "customer-home"
    progress = tmp_path / "progress.txt"
    env = {
        **os.environ,
        "PYLON_HOME": str(home),
        "PYLON_NWC_URI": dev_wallet.account("customer", FUNDS),
        "PYLON_TEST_RELAY": relay_url,
        "PYLON_TEST_PROVIDER": provider.pubkey,
        "PYLON_TEST_KEY": nostr_sdk.Keys.generate().secret_key().to_hex(),
        "PYLON_TEST_PROGRESS": str(progress),
        "PYLON_TEST_CALLS": str(CALLS),
        # A pause between calls keeps a run to a few calls, so the kills spread over all 50.
        "PYLON_TEST_PAUSE": "0.2",
    }
    rng = random.Random(20261122)
    kills = 0

    def completed() -> int:
        return len(progress.read_text().splitlines()) if progress.exists() else 0

    deadline = time.monotonic() + 240
    while completed() < CALLS:
        assert time.monotonic() < deadline, f"only {completed()} of {CALLS} calls completed"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.swarm.paid_customer_process"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kills < 10:
            # Start-up (imports, connecting) takes most of a second; kill somewhere in the calls.
            time.sleep(rng.uniform(0.8, 2.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=180)
    assert kills >= 6

    ledger = SpendLedger(home / "ledger.sqlite")
    rows = {row.job_id: row for row in ledger.entries("spent")}
    # Every payment the wallet made for the customer is explained by exactly one ledger row.
    payments = [t for t in dev_wallet.wallet_store.transactions() if t.payer == "customer" and t.state == "settled"]
    by_hash = {row.payment_hash: row for row in rows.values() if row.payment_hash}
    for payment in payments:
        row = by_hash.get(payment.payment_hash)
        assert row is not None, f"payment {payment.payment_hash[:12]} is not in the ledger"
        assert row.state in PAID_STATES and row.paid_msats == payment.amount_msats == PRICE
        # The provider billed that very job with that invoice.
        billed = provider.node.ledger.entry(row.job_id, "earned")
        assert billed is not None and billed.payment_hash == payment.payment_hash
    # No job paid twice; nothing left with an unknown outcome; the money adds up.
    paid_jobs = Counter(by_hash[p.payment_hash].job_id for p in payments)
    assert paid_jobs and max(paid_jobs.values()) == 1
    assert not [row for row in rows.values() if row.state == "paying"]
    assert (
        sum(row.paid_msats for row in rows.values()) == len(payments) * PRICE == FUNDS - dev_wallet.balance("customer")
    )
    assert dev_wallet.balance("provider") == len(payments) * PRICE
    # The completed calls were answered. A killed call was paid without a result, closed
    # unpaid as interrupted, or - killed between writing the intent and the wallet paying -
    # found unpaid by the lookup at the next start (payment_failed).
    states = Counter(row.state for row in rows.values())
    # A process killed after its call finished but before it noted the progress repeats that call.
    assert CALLS <= states["done"] <= CALLS + kills
    assert set(states) <= {"done", "paid_no_result", "failed", "payment_failed"}, states

    assert all(row.reason for row in rows.values() if row.state != "done")
