"""Interop with NIP-90 peers built from the spec text (raw nostr-sdk, not pylon's codec), on
real relays: private jobs in the scheme each side reads, and feedback encrypted as nostr-dvm
writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import nostr_sdk as n
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.swarm.cancellations import CANCELLED
from dspy_pylon.testing import LocalSwarm
from tests.helpers import pylon_cause
from tests.interop.spec_peers import SpecCustomer, SpecProvider, sign, tags_of, value
from tests.swarm.conftest import eventually


@pytest.fixture
def spec_provider(relay_loop: NostrLoop, relay_url: str) -> Iterator[Callable[..., SpecProvider]]:
    made: list[SpecProvider] = []

    def make(**options: Any) -> SpecProvider:
        made.append(SpecProvider(relay_loop, relay_url, **options))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


def test_a_private_job_reaches_a_nip04_only_provider(spec_provider: Any, swarm_lm: Any) -> None:
    """A provider that reads NIP-04 only (NIP-90's text) and announces nothing: the job to it
    is encrypted in NIP-04, and its NIP-04 result is read."""
    provider = spec_provider(reads=("nip04",))
    lm = swarm_lm(providers=(provider.pubkey,), timeout=8)
    out = lm("Say hi to the spec provider", max_tokens=4)
    assert out[0].startswith("spec answer to:")
    assert [scheme for scheme, _ in provider.seen] == ["nip04"]
    assert lm.history[-1]["response"].provider_data["pylon"]["encryption"] == "nip04"


def test_a_provider_that_announces_nip44_gets_nip44(spec_provider: Any, swarm_lm: Any) -> None:
    provider = spec_provider(reads=("nip44", "nip04"), announce={"name": "spec", "encryption": ["nip44", "nip04"]})
    lm = swarm_lm(providers=(provider.pubkey,), timeout=8)
    lm("Say hi", max_tokens=4)
    lm("Say hi again", max_tokens=4)  # looked up once, remembered
    assert [scheme for scheme, _ in provider.seen] == ["nip44", "nip44"]
    assert lm.history[-1]["response"].provider_data["pylon"]["encryption"] == "nip44"


def test_encrypted_error_feedback_as_nostr_dvm_writes_it_ends_the_call(spec_provider: Any, swarm_lm: Any) -> None:
    """The error inside encrypted feedback is seen: the call fails with it at once instead of
    waiting out its timeout as if the provider were silent."""
    provider = spec_provider(reply="dvm-error")
    lm = swarm_lm(providers=(provider.pubkey,), timeout=20)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("Do something impossible", max_tokens=4)
    assert time.monotonic() - started < 10
    assert "cannot do this job" in str(pylon_cause(caught.value, pylon.JobFailed))


@pytest.mark.parametrize("scheme", ["nip04", "nip44"])
def test_a_spec_customer_reads_our_providers_private_answer(
    scheme: str, start_provider: Any, relay_loop: NostrLoop, relay_url: str
) -> None:
    """A spec-built customer sends our provider an encrypted job: the result and the feedback
    come back in the scheme it used, the result keeps the ``request`` tag, nothing of the job
    is in the clear."""
    provider = start_provider(processing_feedback_after_s=0)  # feedback even on a quick job
    secret_prompt = "Say the secret word zebra-4711"

    async def run() -> tuple[Any, list[Any]]:
        keys = n.Keys.generate()
        client = n.Client()
        await client.add_relay(n.RelayUrl.parse(relay_url))
        await client.connect(timedelta(seconds=3))
        notes = client.notifications()
        since = n.Timestamp.now()
        await client.subscribe(
            n.ReqTarget.auto([n.Filter().kinds([n.Kind(6050), n.Kind(7000)]).pubkey(keys.public_key()).since(since)])
        )
        hidden = json.dumps([["i", secret_prompt, "text"], ["param", "max_tokens", "4"]])
        target = n.PublicKey.parse(provider.pubkey)
        content = keys.nip04_encrypt(target, hidden) if scheme == "nip04" else keys.nip44_encrypt(target, hidden)
        request = sign(keys, 5050, content, [["p", provider.pubkey], ["encrypted"]])
        await client.send_event(request)
        feedback: list[Any] = []
        while True:
            note = await notes.next()
            if not note.is_new_event():
                continue
            event = note.event
            if event.kind().as_u16() == 7000:
                feedback.append(event)
            elif event.kind().as_u16() == 6050:
                await client.shutdown()
                return keys, [request, event, *feedback]

    keys, (request, result, *feedback) = relay_loop.run(run(), 30)
    target = n.PublicKey.parse(provider.pubkey)

    def read(text: str) -> str:
        assert ("?iv=" in text) == (scheme == "nip04"), "answered in another scheme"
        return str(keys.nip04_decrypt(target, text) if scheme == "nip04" else keys.nip44_decrypt(target, text))

    tags = tags_of(result)
    assert value(tags, "e") == request.id().to_hex() and ["encrypted"] in tags
    assert value(tags, "request") == request.as_json()
    assert read(result.content())  # the answer, readable by the customer alone
    clear = json.dumps([tags, result.content()])
    assert "zebra-4711" not in clear and "usage" not in clear and "model" not in clear
    assert feedback, "no processing feedback"
    statuses = [value(json.loads(read(f.content())), "status") for f in feedback]
    assert "processing" in statuses


def test_a_foreign_provider_is_fed_a_readable_prompt(spec_provider: Any, swarm_lm: Any) -> None:
    """A DSPy program's call reaches a DVM that feeds its model the first (or the last) text
    input as readable text - one input, not the JSON transcript."""
    import dspy

    provider = spec_provider(reads=("nip04",))
    lm = swarm_lm(providers=(provider.pubkey,), timeout=8)
    # The spec DVM answers in free text: DSPy's ChatAdapter cannot parse it and retries with
    # JSONAdapter's schema (a v2 job), whose free-text answer the customer refuses.
    with dspy.context(lm=lm), pytest.raises(dspy_errors.LMProviderError, match=r"not a pylon\.chat\.v2 answer"):
        dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert len(provider.seen) == 2
    for _, prompt in provider.seen:
        assert "What is the capital of France?" in prompt
        assert not prompt.lstrip().startswith("{") and "pylon.chat" not in prompt


# ─── cancellation: NIP-09 deletions of the request ───


@pytest.fixture
def spec_customer(relay_loop: NostrLoop, relay_url: str) -> Iterator[SpecCustomer]:
    customer = SpecCustomer(relay_loop, relay_url)
    yield customer
    customer.close()


def _settle() -> None:
    time.sleep(0.5)  # what the provider would still send for a job would have arrived by now


def test_a_quick_job_gets_its_result_without_processing_feedback(
    start_provider: Any, spec_customer: SpecCustomer
) -> None:
    """``processing`` goes out only for a job still running after ``processing_feedback_after_s``."""
    provider = start_provider(processing_feedback_after_s=5.0)
    quick = spec_customer.request("a quick one", provider=provider.pubkey, max_tokens="4")
    eventually(lambda: "result" in spec_customer.kinds(quick), timeout=20)
    _settle()
    assert spec_customer.kinds(quick) == ["result"]
    slow = start_provider(processing_feedback_after_s=0.05, concurrency=1, max_tokens_cap=16_000)
    long = spec_customer.request("a long answer", provider=slow.pubkey, max_tokens="3000")
    eventually(lambda: "result" in spec_customer.kinds(long), timeout=60)
    assert spec_customer.kinds(long) == ["processing", "result"]


def test_a_queued_job_deleted_by_its_customer_never_runs(start_provider: Any, spec_customer: SpecCustomer) -> None:
    provider = start_provider(concurrency=1, max_tokens_cap=16_000)
    busy = spec_customer.request("keep the only worker busy", provider=provider.pubkey, max_tokens="1500")
    queued = spec_customer.request("cancel me while I wait", provider=provider.pubkey, max_tokens="4")
    spec_customer.delete(queued)
    eventually(lambda: "result" in spec_customer.kinds(busy), timeout=60)
    _settle()
    assert spec_customer.kinds(queued) == []  # no processing, no result
    assert provider.node.jobs.status(queued) == "refused"
    assert provider.node.stats.ignored[CANCELLED] == 1


def test_a_free_job_deleted_mid_inference_is_stopped(start_provider: Any, spec_customer: SpecCustomer) -> None:
    provider = start_provider(concurrency=1, max_tokens_cap=16_000)
    long = spec_customer.request("a long answer", provider=provider.pubkey, max_tokens="12000")
    eventually(lambda: "processing" in spec_customer.kinds(long), timeout=20)
    spec_customer.delete(long)
    eventually(lambda: provider.node.jobs.status(long) == "refused", timeout=10)
    nxt = spec_customer.request("and now a short one", provider=provider.pubkey, max_tokens="4")
    eventually(lambda: "result" in spec_customer.kinds(nxt), timeout=20)  # the worker is free again
    assert "result" not in spec_customer.kinds(long)


def test_an_unpaid_job_deleted_is_no_longer_billed(
    start_provider: Any, spec_customer: SpecCustomer, dev_wallet: LocalSwarm
) -> None:
    """A job sent without a bid is billed (NIP-90's bid is optional); its customer cancels
    instead of paying: the node stops waiting and closes the bill."""
    provider = start_provider(price_msats=1_000, wallet=dev_wallet.wallet("provider"))
    job = spec_customer.request("what does this cost", provider=provider.pubkey)
    eventually(lambda: "payment-required" in spec_customer.kinds(job), timeout=20)
    spec_customer.delete(job)
    eventually(lambda: provider.node.jobs.status(job) == "refused", timeout=10)
    entry = provider.node.ledger.entry(job, "earned")
    assert entry is not None and entry.state == "failed" and entry.reason == CANCELLED
    assert provider.node.billing is not None and provider.node.billing.unpaid == 0


def test_a_job_paid_and_then_cancelled_still_runs(
    start_provider: Any, spec_customer: SpecCustomer, dev_wallet: LocalSwarm, relay_loop: NostrLoop
) -> None:
    """The customer pays the invoice, then deletes the request (it gave up waiting): the money
    is taken, so the job runs - whether the payment or the deletion reaches the node first."""
    provider = start_provider(price_msats=1_000, wallet=dev_wallet.wallet("provider"))
    job = spec_customer.request("paid for, then cancelled", provider=provider.pubkey, max_tokens="4")
    eventually(lambda: "payment-required" in spec_customer.kinds(job), timeout=20)
    [bill] = [e for e in spec_customer.replies[job] if value(tags_of(e), "status") == "payment-required"]
    bolt11 = next(t for t in tags_of(bill) if t[0] == "amount")[2]
    payer = dev_wallet.wallet("payer", 10_000)
    relay_loop.run(payer.pay_invoice(bolt11), 30)
    spec_customer.delete(job)
    eventually(lambda: "result" in spec_customer.kinds(job), timeout=20)
    eventually(lambda: provider.node.jobs.status(job) == "done")
    assert dev_wallet.balance("provider") == 1_000


def test_our_customer_cancels_a_broadcast_once_it_is_answered(
    start_provider: Any, swarm_lm: Any, relay_loop: NostrLoop, relay_url: str
) -> None:
    """The other providers of a broadcast job learn it is answered (a kind-5 deletion by the
    customer), so they can stop working on it."""
    start_provider()
    lm = swarm_lm(timeout=10)
    lm("hello, anyone", max_tokens=4)
    job_id = lm.history[-1]["response"].provider_data["pylon"]["job_id"]

    async def deletions() -> list[Any]:
        client = n.Client()
        await client.add_relay(n.RelayUrl.parse(relay_url))
        await client.connect(timedelta(seconds=3))
        found = await client.fetch_events(
            n.ReqTarget.auto([n.Filter().kind(n.Kind(5)).event(n.EventId.parse(job_id))]), timedelta(seconds=3)
        )
        await client.shutdown()
        return list(found)

    eventually(lambda: bool(relay_loop.run(deletions(), 10)), timeout=10)


def test_answers_also_go_to_the_relays_the_job_names(
    start_provider: Any, spec_customer: SpecCustomer, relay_loop: NostrLoop, relay_url: str
) -> None:
    """NIP-90's ``relays`` tag: the result and the feedback reach a relay the provider does not
    use itself (it publishes there, write-only, and subscribes to nothing there)."""
    from dspy_pylon.nostr.relay_server import start_embedded_relay

    # The test relays are on loopback; processing feedback even on a quick job (it goes there too).
    provider = start_provider(allow_local_relays=True, processing_feedback_after_s=0)
    other, other_url = relay_loop.run(start_embedded_relay())
    try:
        job = spec_customer.request("answer me over there too", provider=provider.pubkey, relays=(relay_url, other_url))
        eventually(lambda: "result" in spec_customer.kinds(job), timeout=20)

        async def on_other() -> list[int]:
            client = n.Client()
            await client.add_relay(n.RelayUrl.parse(other_url))
            await client.connect(timedelta(seconds=3))
            found = await client.fetch_events(
                n.ReqTarget.auto([n.Filter().event(n.EventId.parse(job))]), timedelta(seconds=3)
            )
            await client.shutdown()
            return sorted(event.kind().as_u16() for event in found)

        eventually(lambda: relay_loop.run(on_other(), 10) == [6050, 7000], timeout=10)
    finally:
        other.shutdown()
