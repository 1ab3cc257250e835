"""Paid swarm jobs end to end: a priced provider, the development wallet over NIP-47, a real relay.

Customer and provider each have a dev-wallet account; money moves only through the NWC
protocol (nostr-sdk's client against the development wallet service).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.identity import pylon_home
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.usage import pylon_data
from tests.helpers import pylon_cause
from tests.swarm.conftest import eventually

PRICE = 1_234


def test_priced_job_moves_exactly_the_price(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"))
    customer_uri = dev_wallet.account("customer", 100_000)
    lm = swarm_lm(providers=(provider.pubkey,), nwc_uri=customer_uri, auto_pay=True, bid_msats=5_000)

    out = lm("Say hi", max_tokens=8)

    assert out and isinstance(out[0], str)
    assert dev_wallet.balance("customer") == 100_000 - PRICE
    assert dev_wallet.balance("provider") == PRICE
    entry = lm.history[-1]
    assert entry["cost"] == PRICE
    data = pylon_data(entry["response"].provider_data)
    assert data["cost_msats"] == PRICE and data["provider"] == provider.pubkey
    assert lm.total_spent_msats() == PRICE
    ledger = SpendLedger(pylon_home() / "ledger.sqlite")
    [row] = ledger.entries("spent")
    assert (row.state, row.paid_msats, row.invoice_msats, row.bid_msats) == ("done", PRICE, PRICE, 5_000)
    assert row.preimage and row.payment_hash and row.job_id == data["job_id"]
    import hashlib

    assert hashlib.sha256(bytes.fromhex(row.preimage)).hexdigest() == row.payment_hash
    eventually(lambda: provider.node.ledger.entry(row.job_id, "earned") is not None)
    eventually(lambda: provider.node.ledger.entry(row.job_id, "earned").state == "done")  # type: ignore[union-attr]
    assert provider.node.ledger.total_paid_msats("earned") == PRICE
    # The wallet notifies twice (NIP-04 and NIP-44 kinds); the provider keeps neither afterwards.
    wallet = provider.node.wallet
    assert wallet is not None
    time.sleep(0.3)
    assert wallet.tracked_payments == 0


def test_auto_pay_off_raises_payment_required_then_pay_delivers(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"))
    lm = swarm_lm(providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)

    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("Say hi", max_tokens=8)
    error = pylon_cause(caught.value, pylon.PaymentRequired)
    assert (error.amount_msats, error.provider) == (PRICE, provider.pubkey)
    assert dev_wallet.balance("customer") == 10_000  # nothing paid without approval

    response = pylon.pay(error.job_id, lm=lm)
    assert response.text
    assert dev_wallet.balance("customer") == 10_000 - PRICE
    assert lm.total_spent_msats() == PRICE


def test_budget_exceeded_before_publishing(swarm_lm: Any, dev_wallet: LocalSwarm) -> None:
    lm = swarm_lm(nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000, auto_pay=True, budget_sats=1)
    with pytest.raises(dspy_errors.LMBillingError, match="nothing was published") as caught:
        lm.forward(prompt="hi")
    pylon_cause(caught.value, pylon.BudgetExceeded)
    assert SpendLedger(pylon_home() / "ledger.sqlite").entries("spent") == []
    assert lm.remaining_budget_msats() == 1_000


def test_bid_below_the_price_fails_at_once_without_paying(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"))
    lm = swarm_lm(
        providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), auto_pay=True, bid_msats=1_000
    )
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("Say hi", max_tokens=8)
    assert f"bid below price of {PRICE} msats" in str(pylon_cause(caught.value, pylon.JobFailed))
    assert dev_wallet.balance("customer") == 10_000 and dev_wallet.balance("provider") == 0
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.state == "failed" and row.paid_msats == 0


def test_per_model_price(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, tiny_server: Any) -> None:
    import httpx

    model = httpx.get(f"{tiny_server.url}/v1/models").json()["data"][0]["id"]
    # The TOML [prices] table: this model's own price beats the default.
    provider = start_provider(price_msats=PRICE, prices={model.upper(): 2_222}, wallet=dev_wallet.wallet("provider"))
    assert provider.node.models[0] == model
    lm = swarm_lm(
        providers=(provider.pubkey,),
        nwc_uri=dev_wallet.account("customer", 10_000),
        auto_pay=True,
        bid_msats=3_000,
        model=model,
    )
    lm("Say hi", max_tokens=8)
    assert lm.history[-1]["cost"] == 2_222
    assert dev_wallet.balance("provider") == 2_222


def test_unpaid_invoice_expires_and_the_job_is_dropped(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), invoice_expiry_s=2)
    lm = swarm_lm(providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("Say hi", max_tokens=8)
    job_id = pylon_cause(caught.value, pylon.PaymentRequired).job_id
    eventually(lambda: provider.node.jobs.status(job_id) == "expired", timeout=15)
    earned = provider.node.ledger.entry(job_id, "earned")
    assert earned is not None and earned.state == "expired" and earned.paid_msats == 0
    # Approving too late: the invoice is checked again and refused; nothing is paid.
    with pytest.raises(pylon.PaymentRefused, match="expired"):
        pylon.pay(job_id, lm=lm)
    assert dev_wallet.balance("customer") == 10_000
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.state == "refused" and "expired" in row.reason
    assert provider.node.stats.done == 0
    # Bills left unapproved until they expire are forgotten (not kept in memory for ever).
    customer = lm.runtime.swarm().customer
    with pytest.raises(dspy_errors.LMBillingError):
        lm("Say hi again", max_tokens=8)
    time.sleep(2.5)
    with pytest.raises(dspy_errors.LMBillingError):
        lm("and once more", max_tokens=8)
    assert len(customer.awaiting_approval) == 1
    states = sorted(entry.state for entry in SpendLedger(pylon_home() / "ledger.sqlite").entries("spent"))
    assert states == ["approval", "failed", "refused"]


def test_global_budget_holds_across_lms(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm) -> None:
    """Two LMs with their own (unlimited) budgets share the global one in $PYLON_HOME's ledger."""
    from concurrent.futures import ThreadPoolExecutor

    from dspy_pylon.pay.budget_file import save_global_budget

    save_global_budget(pylon_home(), 10)  # 10,000 msats for everyone
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), concurrency=4)
    uri = dev_wallet.account("customer", 100_000)
    lms = [swarm_lm(providers=(provider.pubkey,), nwc_uri=uri, auto_pay=True, bid_msats=2_000) for _ in range(2)]

    def call(i: int) -> str:
        try:
            lms[i % 2](f"question {i}", max_tokens=4)
            return "ok"
        except dspy_errors.LMBillingError as exc:
            assert "global budget" in str(pylon_cause(exc, pylon.BudgetExceeded))
            return "budget"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(12)))
    paid = 100_000 - dev_wallet.balance("customer")
    assert paid <= 10_000 and outcomes.count("ok") * PRICE == paid
    assert outcomes.count("budget") >= 12 - 10_000 // PRICE
    assert sum(lm.total_spent_msats() for lm in lms) == paid
    # Once the jobs closed, the ledger shows what remains: another bid fits only if 2,000 msats are left.
    assert SpendLedger(pylon_home() / "ledger.sqlite").committed_msats() == paid


def test_deep_copies_share_one_budget(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm) -> None:
    import copy

    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"))
    lm = swarm_lm(
        providers=(provider.pubkey,),
        nwc_uri=dev_wallet.account("customer", 100_000),
        auto_pay=True,
        bid_msats=2_000,
        budget_sats=4,  # room for two 2,000 msat bids, whoever makes them
    )
    clone = copy.deepcopy(lm)  # what optimizers and Refine do
    lm("first", max_tokens=4)
    clone("second", max_tokens=4)
    assert lm.total_spent_msats() == clone.total_spent_msats() == 2 * PRICE
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        clone("third", max_tokens=4)
    pylon_cause(caught.value, pylon.BudgetExceeded)
    assert lm.remaining_budget_msats() == 4_000 - 2 * PRICE


def test_provider_restart_keeps_waiting_for_an_invoice(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, tmp_path: Any
) -> None:
    """Billed, then the provider restarts before the customer approves: the new process waits for
    the same invoice (the job is read back from the relay) and runs the job once it is paid."""
    state = tmp_path / "restarting-provider"
    first, lm, job_id = _billed_then_stopped(start_provider, swarm_lm, dev_wallet, state)

    second = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), state_dir=state, keys=first.keys)
    response = pylon.pay(job_id, lm=lm)
    assert response.text is not None
    assert dev_wallet.balance("provider") == PRICE
    eventually(lambda: second.node.ledger.entry(job_id, "earned").state == "done")  # type: ignore[union-attr]


def test_unpaid_invoices_are_capped(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), max_unpaid=1)
    lm = swarm_lm(providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)
    with pytest.raises(dspy_errors.LMBillingError):
        lm("first", max_tokens=4)  # billed; left unpaid (auto_pay off)
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("second", max_tokens=4)
    assert "too many unpaid invoices" in str(pylon_cause(caught.value, pylon.JobFailed))


@pytest.mark.parametrize("pool", [0, 2])
def test_invoices_made_ahead_or_per_job(start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, pool: int) -> None:
    from dspy_pylon.pay.invoice import decode_invoice

    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), invoice_pool=pool)
    if pool:
        eventually(lambda: provider.node.invoices.ready(PRICE) == pool)
    lm = swarm_lm(
        providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), auto_pay=True, bid_msats=2_000
    )
    lm("Say hi", max_tokens=4)
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    invoice = decode_invoice(row.bolt11 or "")
    # Made ahead: no job in the description (our signed payment-required binds it); else named.
    assert invoice.job_id == (None if pool else row.job_id)
    assert dev_wallet.balance("provider") == PRICE
    if pool:
        eventually(lambda: provider.node.invoices.ready(PRICE) == pool)  # refilled


def test_a_paid_job_waiting_for_a_queue_slot_still_runs_when_the_node_stops(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm
) -> None:
    """One worker, a queue of one: the third paid job waits for a slot. Stopping the node then
    must not drop it (the customer paid): every paid job is answered before the node stops."""
    from concurrent.futures import ThreadPoolExecutor

    provider = start_provider(
        price_msats=PRICE,
        wallet=dev_wallet.wallet("provider"),
        concurrency=1,
        queue_limit=1,
        max_tokens_cap=16_000,
    )
    lm = swarm_lm(
        providers=(provider.pubkey,),
        nwc_uri=dev_wallet.account("customer", 100_000),
        auto_pay=True,
        bid_msats=2_000,
        timeout=30,
    )
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(lm, f"paid job {i}", max_tokens=1_500) for i in range(3)]

        # Paid, and the node knows it (the ledger row moves off 'invoiced' once it does).
        def known_paid() -> int:
            return sum(entry.state != "invoiced" for entry in provider.node.ledger.entries("earned"))

        eventually(lambda: known_paid() == 3, timeout=20)
        assert provider.node.stats.done < 3, "all three ran before the stop: the test proves nothing"
        provider.stop()
        answers = [call.result(timeout=60) for call in calls]
    assert all(answer[0] for answer in answers)
    assert provider.node.stats.done == 3
    earned = SpendLedger(provider.node.settings.state_dir / "ledger.sqlite")  # the node closed its own
    assert [entry.state for entry in earned.entries("earned")] == ["done"] * 3
    earned.close()


def test_a_cancelled_serve_leaves_no_task_behind_and_the_bill_resumable(
    swarm_lm: Any, dev_wallet: LocalSwarm, relay_url: str, tiny_server: Any, tmp_path: Any
) -> None:
    """serve cancelled (not stopped) while a job waits for its payment: the node cancels and
    awaits that wait before it closes its relay client and stores, so no task of it runs on,
    and the job stays 'invoiced' for the next start."""
    import asyncio

    import nostr_sdk

    from dspy_pylon.nostr.loop import NostrLoop
    from dspy_pylon.swarm.provider import ProviderNode, ProviderSettings

    loop = NostrLoop("test-cancelled-serve")
    settings = ProviderSettings(
        relays=(relay_url,),
        state_dir=tmp_path / "node",
        backend="llamacpp",
        backend_url=tiny_server.url,
        price_msats=PRICE,
    )
    node = ProviderNode(nostr_sdk.Keys.generate(), settings, wallet=dev_wallet.wallet("provider"))
    try:
        loop.run(node.start(), 60)
        serving = loop.submit(node.serve())
        lm = swarm_lm(providers=(node.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)
        with pytest.raises(dspy_errors.LMBillingError) as caught:
            lm("Say hi", max_tokens=8)  # not auto-paid: the node waits for a payment
        job_id = pylon_cause(caught.value, pylon.PaymentRequired).job_id

        serving.cancel()  # the future is done at once; the task's clean-up runs on after

        async def still_running() -> list[str]:
            me = asyncio.current_task()
            return [repr(task.get_coro()) for task in asyncio.all_tasks() if task is not me and not task.done()]

        deadline = time.monotonic() + 10
        while (left := loop.run(still_running(), 10)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert left == []
        ledger = SpendLedger(settings.state_dir / "ledger.sqlite")  # the node closed its own
        entry = ledger.entry(job_id, "earned")
        ledger.close()
        assert entry is not None and entry.state == "invoiced"
    finally:
        loop.stop()


def _billed_then_stopped(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, state: Any, **settings: Any
) -> tuple[Any, Any, str]:
    """A job billed by a provider that then stops before it is paid: (provider, lm, job id)."""
    first = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), state_dir=state, **settings)
    lm = swarm_lm(providers=(first.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("Say hi", max_tokens=4)
    job_id = pylon_cause(caught.value, pylon.PaymentRequired).job_id
    eventually(lambda: first.node.ledger.entry(job_id, "earned") is not None)
    first.stop()
    return first, lm, job_id


def test_an_invoice_paid_while_the_provider_was_down_is_honoured_after_it_expired(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, tmp_path: Any
) -> None:
    """Paid while the node was stopped; the invoice expires before it comes back. The node
    looks the invoice up (not just its date) and runs the job it was paid for."""
    from concurrent.futures import ThreadPoolExecutor

    from dspy_pylon.pay.invoice import decode_invoice

    state = tmp_path / "restarting-provider"
    # Invoices made per job (no pool of older ones), valid 5 s: paid in that window, expired after.
    first, lm, job_id = _billed_then_stopped(
        start_provider, swarm_lm, dev_wallet, state, invoice_expiry_s=5, invoice_pool=0
    )
    stopped = SpendLedger(state / "ledger.sqlite")  # the stopped node closed its own
    billed = stopped.entry(job_id, "earned")
    stopped.close()
    assert billed is not None and billed.bolt11
    expires_at = decode_invoice(billed.bolt11).expires_at
    with ThreadPoolExecutor(1) as pool:
        paying = pool.submit(pylon.pay, job_id, lm=lm, timeout=30)  # waits for the result
        eventually(lambda: dev_wallet.balance("provider") == PRICE)
        assert time.time() < expires_at, "paid after the invoice expired: the test proves nothing"
        time.sleep(max(0.0, expires_at - time.time()) + 0.2)
        second = start_provider(
            price_msats=PRICE, wallet=dev_wallet.wallet("provider"), state_dir=state, keys=first.keys
        )
        response = paying.result(timeout=40)
    assert response.text is not None
    eventually(lambda: second.node.ledger.entry(job_id, "earned").state == "done")  # type: ignore[union-attr]
    assert second.node.stats.done == 1


def test_a_restart_with_no_relay_reachable_keeps_the_invoiced_job(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, tmp_path: Any
) -> None:
    """The node restarts while its relays are down: it cannot read the job back, and must not
    give it up for that. The next start (relay up) waits for the payment and runs the job."""
    from dspy_pylon.local.embedded import free_port

    state = tmp_path / "restarting-provider"
    first, lm, job_id = _billed_then_stopped(start_provider, swarm_lm, dev_wallet, state)
    offline = start_provider(
        price_msats=PRICE,
        wallet=dev_wallet.wallet("provider"),
        state_dir=state,
        keys=first.keys,
        relays=(f"ws://127.0.0.1:{free_port()}",),
        announce=False,
    )
    assert offline.node.ledger.entry(job_id, "earned").state == "invoiced"  # type: ignore[union-attr]
    offline.stop()

    second = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), state_dir=state, keys=first.keys)
    response = pylon.pay(job_id, lm=lm)
    assert response.text is not None
    eventually(lambda: second.node.ledger.entry(job_id, "earned").state == "done")  # type: ignore[union-attr]
