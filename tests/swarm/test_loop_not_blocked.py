"""A ledger locked by another process never stalls the Nostr loop that every LM shares.

One process holds SQLite's write lock on LM A's ledger for 5 s (as a busy ``pylon spend``
or a second program sharing the global budget would). Meanwhile LM B — other home, same
process, same Nostr loop — gets its answer from a provider and its timeout fires on time.
LM A's own call waits for the lock (in a worker thread), then completes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.nostr.nip90 import JobRequest, JobResult
from tests.helpers import pylon_cause
from tests.swarm.test_hostile import ScriptedProvider, scripted  # noqa: F401 - fixture

HOLD_S = 5.0

_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_a_locked_ledger_does_not_stall_other_calls(
    scripted: Any,  # noqa: F811 - the imported fixture
    swarm_lm: Any,
    tmp_path: Path,
) -> None:
    keys = nostr_sdk.Keys.generate()

    def answer(job: JobRequest) -> list[Any]:
        return [JobResult(job.id, job.customer, "answer", encrypted=job.encrypted).to_event(keys)]

    provider: ScriptedProvider = scripted(keys, answer)
    target = (keys.public_key().to_hex(),)
    silent = (nostr_sdk.Keys.generate().public_key().to_hex(),)
    lm_a = swarm_lm(providers=target, timeout=30.0, home=tmp_path / "home-a")
    lm_b = swarm_lm(providers=target, timeout=30.0, home=tmp_path / "home-b")
    lm_b_silent = swarm_lm(providers=silent, timeout=1.0, home=tmp_path / "home-b")
    # Both connected and subscribed, and A's ledger opened, before the lock is taken.
    assert lm_a("warm up A") == ["answer"] and lm_b("warm up B") == ["answer"]

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path / "home-a" / "ledger.sqlite"), str(HOLD_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        a_result: list[Any] = []
        a_call = threading.Thread(target=lambda: a_result.append(lm_a("held up by the lock")))
        a_call.start()
        time.sleep(0.3)  # LM A is now waiting for the lock

        assert lm_b("while A waits") == ["answer"]
        answered_at = time.monotonic()
        with pytest.raises(dspy_errors.LMTimeoutError) as caught:
            lm_b_silent("nobody answers this")
        timed_out_at = time.monotonic()
        pylon_cause(caught.value, pylon.SwarmTimeout)

        # Both happened while the lock was still held: nothing on the loop waited for it.
        assert answered_at - locked_at < HOLD_S - 1.5
        assert timed_out_at - locked_at < HOLD_S - 0.5
        assert a_call.is_alive()  # A is still waiting for its ledger

        a_call.join(timeout=60)
        assert a_result == [["answer"]]
        assert time.monotonic() - locked_at >= HOLD_S - 0.1
    finally:
        holder.kill()
        holder.wait()
    assert len(provider.jobs) == 4


def test_a_call_cancelled_while_its_ledger_is_locked_leaves_nothing_open(swarm_lm: Any, tmp_path: Path) -> None:
    """Cancelled while the ledger (locked by another process) records its job: once the record
    is written, the job is closed and its reservation given back."""
    import asyncio

    from dspy_pylon.pay.ledger import SpendLedger

    home = tmp_path / "home"
    SpendLedger(home / "ledger.sqlite").close()
    silent = (nostr_sdk.Keys.generate().public_key().to_hex(),)
    lm = swarm_lm(providers=silent, timeout=30.0, home=home, budget_sats=10, bid_msats=2_000)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(home / "ledger.sqlite"), "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

        async def cancel_at_the_ledger() -> None:
            call = asyncio.ensure_future(lm.acall("cancelled while the ledger is locked"))
            # The bid is reserved in memory right before the (blocked) ledger write: cancel
            # then, however long a loaded machine took to get the call that far.
            deadline = time.monotonic() + 10
            while lm.runtime.budget.reserved_msats == 0:
                assert not call.done() and time.monotonic() < deadline, "the call never reached its ledger write"
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

        asyncio.run(cancel_at_the_ledger())
        assert holder.poll() is None, "the lock was released before the call was cancelled"
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    ledger = SpendLedger(home / "ledger.sqlite")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (ledger.entries() and ledger.entries()[0].state == "failed"):
        time.sleep(0.05)
    [entry] = ledger.entries()
    assert entry.state == "failed" and "cancelled" in entry.reason
    assert lm.runtime.budget.reserved_msats == 0 and lm.remaining_budget_msats() == 10_000
    ledger.close()
