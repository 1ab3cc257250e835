"""Hostile or broken billing: a scripted provider bills crafted invoices (real ones, from the
development wallet) over a real relay. Nothing is overpaid, every refusal says why, and the
spend ledger records it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.identity import pylon_home
from dspy_pylon.nostr.nip90 import JobFeedback, JobRequest, JobResult
from dspy_pylon.pay.invoice import invoice_description
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.testing import LocalSwarm
from tests.helpers import pylon_cause
from tests.swarm.test_hostile import ScriptedProvider, scripted  # noqa: F401 - fixture

BID = 2_000
FUNDS = 50_000


def _bill(job: JobRequest, keys: Any, amount_tag: int | None, bolt11: str | None) -> Any:
    return JobFeedback(job.id, job.customer, "payment-required", amount_msats=amount_tag, bolt11=bolt11).to_event(keys)


def _result(job: JobRequest, keys: Any, content: str = "paid answer", **fields: Any) -> Any:
    return JobResult(job.id, job.customer, content, encrypted=job.encrypted, **fields).to_event(keys)


@pytest.fixture
def hostile(
    scripted: Callable[[Any, Any], ScriptedProvider],  # noqa: F811 - the imported fixture
    dev_wallet: LocalSwarm,
    swarm_lm: Any,
) -> Callable[..., tuple[pylon.PylonLM, Any]]:
    """``hostile(script)``: a scripted provider and a customer LM (auto_pay, bid 2000, funded 50000)."""

    def make(script: Callable[[JobRequest, Any], list[Any]], **lm_options: Any) -> tuple[pylon.PylonLM, Any]:
        keys = nostr_sdk.Keys.generate()
        dev_wallet.account("provider")
        scripted(keys, lambda job: script(job, keys))
        options = {"auto_pay": True, "bid_msats": BID, "timeout": 5.0, **lm_options}
        if "nwc_uri" not in options:
            options["nwc_uri"] = dev_wallet.account("customer", FUNDS)
        lm = swarm_lm(providers=(keys.public_key().to_hex(),), **options)
        return lm, keys

    return make


def _invoice(wallet: LocalSwarm, job_id: str, amount: int, **options: Any) -> str:
    return str(wallet.wallet_store.make_invoice("provider", amount, invoice_description(job_id), **options).bolt11)


def _refused(lm: pylon.PylonLM, match: str) -> None:
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("question")
    error = pylon_cause(caught.value, pylon.PaymentRefused)
    assert match in str(error)
    ledger = SpendLedger(pylon_home() / "ledger.sqlite")
    [row] = ledger.entries("spent")
    assert row.state == "refused" and match in row.reason and row.paid_msats == 0


@pytest.mark.parametrize(
    ("amount_tag", "invoice_amount", "why"),
    [
        (3_000, 3_000, "above the bid of 2000"),
        (1_000, 1_500, "the invoice is for 1500 msats but the amount tag says 1000"),
        (0, 1_000, "the amount tag says 0"),
    ],
)
def test_bad_amounts_are_refused(
    hostile: Any, dev_wallet: LocalSwarm, amount_tag: int | None, invoice_amount: int, why: str
) -> None:
    lm, _ = hostile(
        lambda job, keys: [_bill(job, keys, amount_tag, _invoice(dev_wallet, job.id, invoice_amount))],
    )
    _refused(lm, why)
    assert dev_wallet.balance("customer") == FUNDS


def test_expired_invoice_is_refused(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(
        lambda job, keys: [
            _bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000, expiry_s=5, now=time.time() - 60))
        ]
    )
    _refused(lm, "expired")
    assert dev_wallet.balance("customer") == FUNDS


def test_invoice_for_another_job_is_refused(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(lambda job, keys: [_bill(job, keys, 1_000, _invoice(dev_wallet, "ab" * 32, 1_000))])
    _refused(lm, "another job")
    assert dev_wallet.balance("customer") == FUNDS


def test_bill_without_invoice_is_refused(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(lambda job, keys: [_bill(job, keys, 1_000, None)])
    _refused(lm, "no invoice")


def test_garbage_invoice_is_refused(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(lambda job, keys: [_bill(job, keys, 1_000, "lnbcrt10n1garbage")])
    _refused(lm, "not a valid BOLT11 invoice")
    assert dev_wallet.balance("customer") == FUNDS


def test_an_invoice_paid_for_one_job_is_not_paid_for_the_next(hostile: Any, dev_wallet: LocalSwarm) -> None:
    first: list[str] = []

    def script(job: JobRequest, keys: Any) -> list[Any]:
        # The first job's invoice, then the same one again for the next job (it names the first job).
        if not first:
            first.append(_invoice(dev_wallet, job.id, 1_000))
        return [_bill(job, keys, 1_000, first[0]), _result(job, keys)]

    lm, _ = hostile(script)
    assert lm("first") == ["paid answer"]
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("second")
    assert "another job" in str(pylon_cause(caught.value, pylon.PaymentRefused))
    assert dev_wallet.balance("customer") == FUNDS - 1_000
    assert lm.total_spent_msats() == 1_000


def test_repeated_bills_are_paid_once(hostile: Any, dev_wallet: LocalSwarm) -> None:
    def script(job: JobRequest, keys: Any) -> list[Any]:
        invoice = _invoice(dev_wallet, job.id, 1_000)
        other = _invoice(dev_wallet, job.id, 1_500)
        return [
            _bill(job, keys, 1_000, invoice),
            _bill(job, keys, 1_000, invoice),
            _bill(job, keys, 1_500, other),  # a second, different bill for the same job
            _result(job, keys, amount_msats=1_500, bolt11=other),  # and a bill on the result
        ]

    lm, _ = hostile(script)
    assert lm("question") == ["paid answer"]
    assert dev_wallet.balance("customer") == FUNDS - 1_000
    assert lm.history[-1]["cost"] == 1_000 == lm.total_spent_msats()
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.state == "done" and row.paid_msats == 1_000 and "repeated bill" in row.reason


def test_payment_then_silence_is_recorded_and_not_retried(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(lambda job, keys: [_bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000))], timeout=2.0)
    lm.num_retries = 3  # a paid job must not be retried (and paid) again
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("question")
    assert "paid 1000 msats" in str(pylon_cause(caught.value, pylon.JobFailed))
    assert dev_wallet.balance("customer") == FUNDS - 1_000
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.state == "paid_no_result" and row.paid_msats == 1_000
    assert lm.total_spent_msats() == 1_000


def test_billed_after_delivery_is_paid_under_the_same_checks(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(
        lambda job, keys: [_result(job, keys, amount_msats=1_200, bolt11=_invoice(dev_wallet, job.id, 1_200))]
    )
    assert lm("question") == ["paid answer"]
    assert dev_wallet.balance("customer") == FUNDS - 1_200
    assert lm.history[-1]["cost"] == 1_200


def test_billed_after_delivery_above_the_bid_is_refused(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(
        lambda job, keys: [_result(job, keys, amount_msats=9_000, bolt11=_invoice(dev_wallet, job.id, 9_000))]
    )
    _refused(lm, "above the bid")
    assert dev_wallet.balance("customer") == FUNDS


def test_pay_on_result_off_takes_the_result_unpaid(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(
        lambda job, keys: [_result(job, keys, amount_msats=1_200, bolt11=_invoice(dev_wallet, job.id, 1_200))],
        pay_on_result=False,
    )
    assert lm("question") == ["paid answer"]
    assert dev_wallet.balance("customer") == FUNDS and lm.history[-1]["cost"] == 0


def test_approve_callback_decides(hostile: Any, dev_wallet: LocalSwarm) -> None:
    seen: list[pylon.PaymentRequest] = []

    def approve(request: pylon.PaymentRequest) -> bool:
        seen.append(request)
        return request.amount_msats <= 1_000

    def script(job: JobRequest, keys: Any) -> list[Any]:
        amount = 1_000 if len(seen) == 0 else 1_800
        return [_bill(job, keys, amount, _invoice(dev_wallet, job.id, amount)), _result(job, keys)]

    lm, _ = hostile(script, auto_pay=False, approve_payment=approve)
    assert lm("cheap") == ["paid answer"]
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("dear")
    assert "declined" in str(pylon_cause(caught.value, pylon.PaymentRefused))
    assert [r.amount_msats for r in seen] == [1_000, 1_800]
    assert dev_wallet.balance("customer") == FUNDS - 1_000


def test_no_wallet_configured_is_a_clear_error(scripted: Any, swarm_lm: Any, dev_wallet: LocalSwarm) -> None:  # noqa: F811
    keys = nostr_sdk.Keys.generate()
    dev_wallet.account("provider")
    scripted(keys, lambda job: [_bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000))])
    lm = swarm_lm(providers=(keys.public_key().to_hex(),), auto_pay=True, bid_msats=BID, timeout=5.0)
    with pytest.raises(Exception, match="no wallet is configured"):
        lm("question")
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.paid_msats == 0 and row.state != "paying"


def test_broadcast_takes_the_result_of_the_provider_it_paid(
    scripted: Any,  # noqa: F811 - the imported fixture
    swarm_lm: Any,
    dev_wallet: LocalSwarm,
) -> None:
    billing, other = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    dev_wallet.account("provider")

    def script(job: JobRequest) -> list[Any]:
        # The billing provider's bill, then a free answer from someone else, then the paid answer.
        return [
            _bill(job, billing, 1_000, _invoice(dev_wallet, job.id, 1_000)),
            _result(job, other, "unpaid answer from another provider"),
            _result(job, billing),
        ]

    scripted(billing, script)
    lm = swarm_lm(nwc_uri=dev_wallet.account("customer", FUNDS), auto_pay=True, bid_msats=BID, timeout=5.0)
    assert lm("question") == ["paid answer"]
    assert dev_wallet.balance("customer") == FUNDS - 1_000
    assert lm.runtime.swarm().customer.ignored["result from a provider we did not pay"] == 1


def test_unanswered_payment_counts_once_and_is_resolved_at_the_next_start(
    hostile: Any, dev_wallet: LocalSwarm, relay_url: str
) -> None:
    """The wallet never answers pay_invoice (a wallet key no service listens for): the outcome is
    unknown, so the budget counts the amount once and the ledger keeps the job 'paying' until a
    lookup at the next start settles it."""
    from dspy_pylon.pay.nwc import NwcWallet

    silent = nostr_sdk.NostrWalletConnectUri(
        nostr_sdk.Keys.generate().public_key(),
        [nostr_sdk.RelayUrl.parse(relay_url)],
        nostr_sdk.SecretKey.generate(),
        None,
    )
    dev_wallet.account("customer", FUNDS)
    lm, _ = hostile(
        lambda job, keys: [_bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000))],
        nwc_uri=None,
        wallet=NwcWallet(str(silent), timeout=1),
    )
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("question")
    assert "did not confirm the payment" in str(pylon_cause(caught.value, pylon.PaymentFailed))
    assert lm.total_spent_msats() == 1_000  # assumed spent, once
    ledger = SpendLedger(pylon_home() / "ledger.sqlite")
    [row] = ledger.entries("spent")
    assert row.state == "paying"
    # A new process (here: a new LM) with the real wallet asks it what happened: nothing was paid.
    nobody = nostr_sdk.Keys.generate().public_key().to_hex()
    fresh = pylon.PylonLM.swarm(
        nostr_sdk.Keys.generate().secret_key().to_hex(),
        pylon.PylonConfig(
            venue=pylon.Swarm(relays=(relay_url,), providers=(nobody,), auto_pay=True, bid_msats=BID), timeout=1
        ),
        nwc_uri=dev_wallet.account("customer"),
        cache=False,
        num_retries=0,
    )
    with pytest.raises(dspy_errors.LMError):
        fresh("nobody answers this one")  # the first call runs the recovery, then times out
    [resolved] = [entry for entry in ledger.entries("spent") if entry.job_id == row.job_id]
    assert resolved.state == "payment_failed" and dev_wallet.balance("customer") == FUNDS


def test_paid_then_error_is_reported_with_the_payment(hostile: Any, dev_wallet: LocalSwarm) -> None:
    lm, _ = hostile(
        lambda job, keys: [
            _bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000)),
            JobFeedback(job.id, job.customer, "error", "out of memory").to_event(keys),
        ]
    )
    lm.num_retries = 3
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("question")
    message = str(pylon_cause(caught.value, pylon.JobFailed))
    assert "out of memory" in message and "1000 msats were paid" in message
    assert dev_wallet.balance("customer") == FUNDS - 1_000  # paid once, not once per retry
    [row] = SpendLedger(pylon_home() / "ledger.sqlite").entries("spent")
    assert row.state == "paid_no_result" and row.paid_msats == 1_000


def test_a_result_delivered_after_an_interruption_is_found_at_the_next_start(
    hostile: Any, dev_wallet: LocalSwarm, swarm_lm: Any
) -> None:
    import sqlite3

    lm, keys = hostile(
        lambda job, keys: [_bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000)), _result(job, keys)]
    )
    assert lm("question") == ["paid answer"]
    # As a process killed after paying, before the result arrived, leaves it (pid 0 is never alive):
    path = pylon_home() / "ledger.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ledger SET state = 'paid', pid = 0, pid_started = NULL")
    again = swarm_lm(
        providers=(keys.public_key().to_hex(),), nwc_uri=dev_wallet.account("customer"), auto_pay=True, bid_msats=BID
    )
    assert again("next question") == ["paid answer"]  # the first call of a process runs the recovery
    rows = SpendLedger(path).entries("spent")
    assert [row.state for row in rows] == ["done", "done"]
    assert "found on a relay later" in rows[0].reason
    assert dev_wallet.balance("customer") == FUNDS - 2_000


def test_a_paid_broadcast_whose_result_ignores_the_schema_fails_at_once(
    scripted: Callable[[Any, Any], ScriptedProvider],  # noqa: F811 - the imported fixture
    dev_wallet: LocalSwarm,
    swarm_lm: Any,
) -> None:
    """Paid for, then answered in free text where JSON was asked: no other provider's result
    can be taken any more, so the call fails now (not at the timeout), recorded as paid."""
    keys = nostr_sdk.Keys.generate()
    dev_wallet.account("provider")

    def script(job: JobRequest) -> list[Any]:
        bill = _bill(job, keys, 1_000, _invoice(dev_wallet, job.id, 1_000))
        return [bill, _result(job, keys, "Sure! Some text, not JSON")]

    scripted(keys, script)
    lm = swarm_lm(nwc_uri=dev_wallet.account("customer", FUNDS), auto_pay=True, bid_msats=BID, timeout=20)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="does not answer the job"):
        lm("json please", response_format={"type": "json_object"})
    assert time.monotonic() - started < 10
    ledger = SpendLedger(pylon_home() / "ledger.sqlite")
    [row] = ledger.entries("spent")
    assert row.paid_msats == 1_000 and "does not answer the job" in row.reason
