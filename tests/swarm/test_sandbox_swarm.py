"""Sandbox jobs over a real relay: a node selling sandboxed execution (kind 5930), paid before it
runs through the development wallet over NIP-47, results verified by the customer; a node that
lies about what ran is refused and blamed; what the offer or the host cannot do is refused
before any invoice."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.nostr.events import from_sdk
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.sandbox import (
    SANDBOX_REQUEST_KIND,
    PylonSandboxProvider,
    SandboxExecutor,
    SandboxOffer,
    SandboxRunRequest,
    SandboxRunResponse,
    SandboxStatus,
)
from dspy_pylon.testing import LocalSwarm
from tests.swarm.conftest import eventually

BASE, PER_CPU_S = 500, 20
TINY = {"cpus": 1, "memory_mb": 256, "timeout_secs": 10, "disk_mb": 64}
PRICE = BASE + PER_CPU_S * 1 * 10


def _client(swarm: LocalSwarm, tmp_path: Path, providers: tuple[str, ...], **kw: Any) -> PylonSandboxProvider:
    kw.setdefault("bid_msats", 5_000)
    return PylonSandboxProvider(
        (swarm.url,),
        nostr_sdk.Keys.generate(),
        providers=providers,
        nwc_uri=swarm.account("customer", 50_000),
        home=tmp_path / "customer-home",
        timeout=30,
        **kw,
    )


def _request(*cmds: str, **fields: Any) -> SandboxRunRequest:
    return SandboxRunRequest(commands=[{"cmd": c} for c in cmds], resources=TINY, **fields)


def test_a_paid_sandbox_job_runs_on_the_node_and_verifies(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    offer = SandboxOffer(base_msats=BASE, msats_per_cpu_second=PER_CPU_S)
    node = start_provider(sandbox=offer, wallet=local_swarm.wallet("sandbox-node"))
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client:
        suite = 'python3 -c "import unittest, sys; sys.exit(0 if 2 + 2 == 4 else 1)" && echo tests passed'
        outcome = client.run(_request(suite, "echo done > report.txt", artifacts=("report.txt",)))
    assert outcome.status is SandboxStatus.SUCCESS
    assert outcome.response.runs[0].stdout_preview == "tests passed\n"
    assert outcome.verification.ok and "provenance" in outcome.verification.checked
    assert "runs[0].stdout" in outcome.verification.checked and "artifacts[report.txt]" in outcome.verification.checked
    assert outcome.provider == node.pubkey and outcome.cost_msats == PRICE
    assert outcome.response.provenance is not None and outcome.response.provenance.provider_pubkey == node.pubkey
    assert local_swarm.balance("customer") == 50_000 - PRICE
    assert local_swarm.balance("sandbox-node") == PRICE
    eventually(lambda: node.node.ledger.total_paid_msats("earned") == PRICE)


def test_the_node_announces_its_sandbox_offer(start_provider: Any, local_swarm: LocalSwarm) -> None:
    offer = SandboxOffer(base_msats=BASE, msats_per_cpu_second=PER_CPU_S)
    node = start_provider(sandbox=offer, wallet=local_swarm.wallet("sandbox-node"))
    [chat, sandbox] = node.node.announcements()
    assert SANDBOX_REQUEST_KIND in sandbox.kinds and SANDBOX_REQUEST_KIND not in chat.kinds
    parsed = Announcement.from_event(from_sdk(sandbox.to_event(node.keys)))
    assert SandboxOffer.from_meta(parsed.sandbox) == offer
    assert parsed.sandbox is not None and parsed.sandbox["profiles"]["small"]["memory_mb"] == 1024
    assert node.node.job_kinds == (5050, SANDBOX_REQUEST_KIND)


def test_a_free_node_runs_a_broadcast_job_and_the_status_is_from_evidence(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    start_provider(sandbox=SandboxOffer())
    with _client(local_swarm, tmp_path, ()) as client:
        outcome = client.run(_request("python3 -c 'x = bytearray(600 * 1024 * 1024)'"))
    assert outcome.status is SandboxStatus.OOM and outcome.cost_msats == 0
    assert outcome.response.evidence.oom_kills >= 1


def test_what_the_offer_does_not_cover_is_refused_before_any_invoice(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    offer = SandboxOffer(base_msats=BASE, profiles=(pylon.sandbox.SandboxProfile.SMALL,))
    node = start_provider(sandbox=offer, wallet=local_swarm.wallet("sandbox-node"))
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client:
        with pytest.raises(pylon.PylonError, match="network policy 'full' is not offered"):
            client.run(_request("true", network="full"))
        with pytest.raises(pylon.PylonError, match="profile 'medium' is not offered"):
            client.run(SandboxRunRequest(commands=[{"cmd": "true"}], profile="medium"))
    assert local_swarm.balance("customer") == 50_000 and local_swarm.balance("sandbox-node") == 0


class _Forger(SandboxExecutor):
    """A hostile node's executor: runs the job for real, then changes what the customer reads
    (output that is not what ran, or the answer to another request), keeping it well-formed."""

    def __init__(self, lie: str) -> None:
        super().__init__()
        self.lie = lie

    def run(self, request: SandboxRunRequest, **kw: Any) -> SandboxRunResponse:
        real = super().run(request, **kw)
        if self.lie == "stdout":
            runs = (real.runs[0].model_copy(update={"stdout_preview": "all 100 tests passed\n"}), *real.runs[1:])
            forged = real.model_copy(update={"runs": runs})
        else:
            assert real.provenance is not None
            provenance = real.provenance.model_copy(update={"input_sha256": "0" * 64})
            forged = real.model_copy(update={"provenance": provenance})
        assert forged.provenance is not None
        provenance = forged.provenance.model_copy(update={"output_sha256": forged.output_sha256})
        return forged.model_copy(update={"provenance": provenance})


@pytest.mark.parametrize("lie", ["stdout", "input"])
def test_a_hostile_node_whose_result_does_not_verify_is_refused(
    lie: str, start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    node = start_provider(sandbox=SandboxOffer(), sandbox_executor=_Forger(lie))
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client:
        started = time.monotonic()
        with pytest.raises(pylon.PylonError, match="does not verify") as caught:
            client.run(_request("echo 1 test failed; exit 1"))
        assert time.monotonic() - started < 20  # refused on arrival, not at the timeout
        expected = "run 0's stdout" if lie == "stdout" else "another request"
        assert expected in str(caught.value)
        reputation = client._customer.reputation
        assert reputation.stats(node.pubkey).errors >= 1


def test_a_node_on_a_host_that_cannot_isolate_refuses_to_start(local_swarm: LocalSwarm) -> None:
    from dspy_pylon.sandbox import ExecutorConfig

    blind = SandboxExecutor(ExecutorConfig(bwrap="no-such-bwrap"))
    with pytest.raises(pylon.SandboxRefused, match="bubblewrap"):
        local_swarm.add_provider(sandbox=SandboxOffer(), sandbox_executor=blind)


def test_a_sandbox_job_is_a_traced_node_linked_to_its_job(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    import dspy

    offer = SandboxOffer(base_msats=BASE, msats_per_cpu_second=PER_CPU_S)
    node = start_provider(sandbox=offer, wallet=local_swarm.wallet("sandbox-node"))
    recorder = pylon.TraceRecorder()
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client, dspy.context(callbacks=[recorder]):
        outcome = client.run(_request("echo traced"))
    [sandbox] = [n for n in recorder.graph.nodes.values() if n.type is pylon.NodeType.SANDBOX]
    assert sandbox.route is not None and sandbox.route["job_id"] == outcome.job_id
    assert sandbox.route["result_id"] == outcome.result_id and sandbox.route["provider"] == node.pubkey
    assert sandbox.usage == {"cost_msats": PRICE}
    assert sandbox.attributes["sandbox_status"] == "success"
    # Receipted: the receipt links the real kind-5930 request and the node's signed 6930 result.
    from dspy_pylon.trace.nostr_bridge import NostrBridge

    publisher = NostrBridge([local_swarm.url], nostr_sdk.Keys.generate())
    try:
        published = publisher.publish_trace(recorder.graph)
        verification = publisher.verify_trace(published.summary_id)
    finally:
        publisher.close()
    assert verification.ok, verification.problems
    assert verification.jobs_checked == 1 and verification.cost_msats == PRICE


def test_a_job_paid_before_a_crash_runs_when_the_node_starts_again(local_swarm: LocalSwarm, tmp_path: Path) -> None:
    """The node was paid and then died before answering (its ledger says ``paid``, its jobs
    database ``running``): the next start reads the job back from the relay and answers it."""
    from dspy_pylon.nostr.relay_client import RelayClient
    from dspy_pylon.pay.ledger import SpendLedger
    from dspy_pylon.sandbox.wire import sandbox_job
    from dspy_pylon.swarm.jobs_db import JobsDB

    node_keys, customer = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    state = tmp_path / "crashed-node"
    state.mkdir()
    job = sandbox_job(_request("echo recovered"), bid_msats=5_000, relays=(local_swarm.url,), nonce="crash")
    job = dataclasses.replace(job, providers=(node_keys.public_key().to_hex(),))
    event = job.to_event(customer)
    job_id = event.id().to_hex()

    async def publish() -> None:
        client = await RelayClient((local_swarm.url,)).start()
        try:
            await client.publish(event)
        finally:
            await client.close()

    local_swarm.loop.run(publish())
    jobs = JobsDB(state / "provider-jobs.sqlite")
    jobs.claim(job_id, customer.public_key().to_hex(), SANDBOX_REQUEST_KIND)
    jobs.close()
    ledger = SpendLedger(state / "ledger.sqlite")
    ledger.record_invoice(
        job_id,
        customer=customer.public_key().to_hex(),
        model="",
        bid_msats=5_000,
        invoice_msats=PRICE,
        bolt11="lnbc-paid-before-the-crash",
        payment_hash="00" * 32,
    )
    ledger.earning_settled(job_id, preimage="11" * 32)
    ledger.close()

    offer = SandboxOffer(base_msats=BASE, msats_per_cpu_second=PER_CPU_S)
    node = local_swarm.add_provider(
        keys=node_keys, state_dir=state, sandbox=offer, wallet=local_swarm.wallet("sandbox-node")
    )
    eventually(lambda: getattr(node.ledger.entry(job_id, "earned"), "state", None) == "done", timeout=20)
    eventually(lambda: node.stats.done == 1)


def test_a_large_output_is_cut_to_fit_the_relay_and_still_verifies(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    node = start_provider(sandbox=SandboxOffer())
    quotes = 'python3 -c "print(chr(34) * 4000)"'
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client:  # one provider: encrypted (NIP-44)
        outcome = client.run(_request(*[quotes] * 16))
    assert outcome.status is SandboxStatus.SUCCESS and len(outcome.response.runs) == 16
    run = outcome.response.runs[0]
    assert run.stdout_bytes == 4001 and len(run.stdout_preview) < 4001  # cut; the hash is of all of it
    assert "runs[0].stdout" in outcome.verification.unverifiable and outcome.verification.ok


def test_bad_requests_are_refused_before_anything_is_published(local_swarm: LocalSwarm, tmp_path: Path) -> None:
    with _client(local_swarm, tmp_path, ()) as client:
        with pytest.raises(pylon.ConfigError, match="exactly one provider"):
            client.run(_request("env", env={"TOKEN": "secret"}))
        with pytest.raises(pylon.SandboxError, match="a Nostr event carries at most"):
            client.run(_request("x" * 16_000, "y" * 16_000, "z" * 16_000, "w" * 16_000))
        assert client._customer is None or not client._customer._jobs  # nothing went out


def test_the_trace_never_holds_the_jobs_environment(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path
) -> None:
    import dspy

    node = start_provider(sandbox=SandboxOffer())
    recorder = pylon.TraceRecorder(keep_content=True)
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client, dspy.context(callbacks=[recorder]):
        client.run(_request("echo $TOKEN | wc -c", env={"TOKEN": "hunter2-secret"}))
    [sandbox] = [n for n in recorder.graph.nodes.values() if n.type is pylon.NodeType.SANDBOX]
    assert "hunter2" not in json.dumps(sandbox.inputs) and "TOKEN" in json.dumps(sandbox.inputs)
    assert "hunter2" not in recorder.graph.to_json()


def test_a_running_sandbox_job_does_not_hold_up_inference(
    start_provider: Any, local_swarm: LocalSwarm, tmp_path: Path, swarm_lm: Any
) -> None:
    import threading

    node = start_provider(sandbox=SandboxOffer(), concurrency=1)
    with _client(local_swarm, tmp_path, (node.pubkey,)) as client:
        slow = threading.Thread(target=client.run, args=(_request("sleep 4"),))
        slow.start()
        eventually(lambda: node.node.stats.received >= 1)
        time.sleep(0.5)
        started = time.monotonic()
        lm = swarm_lm(providers=(node.pubkey,), cache=False)
        lm("hi", max_tokens=2)
        assert time.monotonic() - started < 3.0
        slow.join()
