"""A priced provider that works before it is paid (``work_before_payment``): the inference
overlaps the payment, the result is published only once paid, and unpaid work is thrown away.

Real relay, real development wallet over NIP-47, the tiny model on llama.cpp; the foreign
customer is the spec-built one of the interop tests (raw nostr-sdk).
"""

from __future__ import annotations

import time
from typing import Any

import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.testing import LocalSwarm
from tests.helpers import pylon_cause
from tests.interop.spec_peers import SpecCustomer
from tests.swarm.conftest import eventually

PRICE = 1_500


def inferences(node: Any) -> list[float]:
    """Times the node's backend was asked for a completion from now on (its client wrapped)."""
    resolved = node.router.cached()
    assert resolved is not None, "the node resolved its backend at start"
    client = resolved[1]
    calls: list[float] = []
    original = client.acomplete

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return await original(*args, **kwargs)

    client.acomplete = counted
    return calls


def results_on_relay(loop: NostrLoop, relay_url: str, job_id: str) -> list[Any]:
    async def fetch() -> list[Any]:
        client = await RelayClient((relay_url,)).start()
        try:
            wanted = nostr_sdk.Filter().kind(nostr_sdk.Kind(6050)).event(nostr_sdk.EventId.parse(job_id))
            return await client.fetch([wanted], 2.0)
        finally:
            await client.close()

    return loop.run(fetch(), 10)


def test_the_answer_worked_out_ahead_is_published_only_once_paid(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm, relay_loop: NostrLoop, relay_url: str
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), work_before_payment=True)
    calls = inferences(provider.node)
    lm = swarm_lm(providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), bid_msats=2_000)

    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("Say hi", max_tokens=4)
    job_id = pylon_cause(caught.value, pylon.PaymentRequired).job_id
    eventually(lambda: len(calls) == 1)  # working before the payment...
    time.sleep(0.3)
    assert results_on_relay(relay_loop, relay_url, job_id) == []  # ...but publishing nothing unpaid
    assert provider.node.jobs.status(job_id) == "awaiting_payment"

    response = pylon.pay(job_id, lm=lm)

    assert response.text
    assert len(calls) == 1  # the answer worked out ahead, not a second inference
    assert dev_wallet.balance("customer") == 10_000 - PRICE and dev_wallet.balance("provider") == PRICE
    assert lm.total_spent_msats() == PRICE
    eventually(lambda: provider.node.ledger.entry(job_id, "earned").state == "done")  # type: ignore[union-attr]
    assert provider.node.ledger.total_paid_msats("earned") == PRICE
    assert provider.node.jobs.status(job_id) == "done" and provider.node.stats.done == 1


def test_auto_paid_jobs_worked_ahead_cost_exactly_the_price(
    start_provider: Any, swarm_lm: Any, dev_wallet: LocalSwarm
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), work_before_payment=True)
    calls = inferences(provider.node)
    lm = swarm_lm(
        providers=(provider.pubkey,), nwc_uri=dev_wallet.account("customer", 10_000), auto_pay=True, bid_msats=2_000
    )
    answers = [lm(f"Say hi {n}", max_tokens=4)[0] for n in range(3)]
    assert all(answers) and len(calls) == 3
    assert dev_wallet.balance("customer") == 10_000 - 3 * PRICE
    assert dev_wallet.balance("provider") == 3 * PRICE == lm.total_spent_msats()


def test_work_ahead_for_an_invoice_left_unpaid_is_thrown_away(
    start_provider: Any, dev_wallet: LocalSwarm, relay_loop: NostrLoop, relay_url: str
) -> None:
    """A foreign customer (nostr-dvm's client sends no bid) is billed and never pays."""
    provider = start_provider(
        price_msats=PRICE, wallet=dev_wallet.wallet("provider"), work_before_payment=True, invoice_expiry_s=2
    )
    calls = inferences(provider.node)
    customer = SpecCustomer(relay_loop, relay_url)
    try:
        job_id = customer.request("Say hi", provider=provider.pubkey, max_tokens="4")
        eventually(lambda: "payment-required" in customer.kinds(job_id))
        eventually(lambda: len(calls) == 1)
        eventually(lambda: provider.node.jobs.status(job_id) == "expired", timeout=15)
        time.sleep(0.3)
        assert "result" not in customer.kinds(job_id)
        assert results_on_relay(relay_loop, relay_url, job_id) == []
    finally:
        customer.close()
    earned = provider.node.ledger.entry(job_id, "earned")
    assert earned is not None and earned.state == "expired" and earned.paid_msats == 0
    assert provider.node.stats.done == 0 and dev_wallet.balance("provider") == 0


def test_a_job_cancelled_while_worked_ahead_is_never_answered_nor_billed(
    start_provider: Any, dev_wallet: LocalSwarm, relay_loop: NostrLoop, relay_url: str
) -> None:
    provider = start_provider(price_msats=PRICE, wallet=dev_wallet.wallet("provider"), work_before_payment=True)
    calls = inferences(provider.node)
    customer = SpecCustomer(relay_loop, relay_url)
    try:
        job_id = customer.request("Say hi", provider=provider.pubkey, max_tokens="4")
        eventually(lambda: "payment-required" in customer.kinds(job_id))
        customer.delete(job_id)
        eventually(lambda: provider.node.jobs.status(job_id) == "refused")
        time.sleep(0.3)
        assert "result" not in customer.kinds(job_id)
    finally:
        customer.close()
    assert len(calls) <= 1
    earned = provider.node.ledger.entry(job_id, "earned")
    assert earned is not None and earned.state == "failed" and earned.paid_msats == 0
    assert provider.node.stats.done == 0


def test_a_burst_of_bills_starts_no_more_work_ahead_than_the_workers(
    start_provider: Any, dev_wallet: LocalSwarm
) -> None:
    """The limit is taken when the work is started: bills arriving in one loop pass cannot all
    start inference (they would hold the backend and queue paid jobs behind unpaid ones)."""
    from dspy_pylon.nostr.events import from_sdk, sign
    from dspy_pylon.nostr.nip90 import JobRequest

    provider = start_provider(
        price_msats=PRICE, wallet=dev_wallet.wallet("provider"), work_before_payment=True, concurrency=2
    )
    customer = nostr_sdk.Keys.generate()
    jobs = [
        JobRequest.from_event(from_sdk(sign(5050, "", [["i", f"job {n}", "text"], ["p", provider.pubkey]], customer)))
        for n in range(5)
    ]

    async def burst() -> tuple[int, int]:
        started = [provider.node.work_ahead(job, PRICE) for job in jobs]
        running = [task for task in started if task is not None]
        for task in running:
            await task
        again = provider.node.work_ahead(jobs[0], PRICE)  # slots are free again once done
        assert again is not None
        await again
        return len(running), provider.node._ahead

    assert dev_wallet.loop.run(burst(), 30) == (2, 0)
