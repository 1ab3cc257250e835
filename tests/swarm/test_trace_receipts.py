"""Trace receipts on real relays: a paid swarm run published as signed receipts, rebuilt into
the identical graph from the relay, each receipt's links resolving to the real NIP-90 job events
the provider signed; ``pylon trace fetch`` / ``verify``; NostrCallback as the run goes; a
publisher that lies, and relays that are gone."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
import nostr_sdk
import pytest
from dspy.utils.dummies import DummyLM

import dspy_pylon as pylon
from dspy_pylon.local.embedded import free_port
from dspy_pylon.nostr.events import sign
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.trace import receipts
from dspy_pylon.trace.graph import NodeType
from dspy_pylon.trace.nostr_bridge import NostrBridge
from dspy_pylon.trace.recorder import TraceRecorder
from tests.cli_run import run_pylon
from tests.helpers import WholeAnswerAdapter
from tests.swarm.conftest import RunningProvider

PRICE_MSATS = 2_000


@pytest.fixture
def paid_run(
    local_swarm: LocalSwarm, start_provider: Callable[..., RunningProvider], swarm_lm: Callable[..., pylon.PylonLM]
) -> Callable[[list[Any]], pylon.PylonLM]:
    """Two runs (a ChainOfThought, a Predict) on a priced provider, paid from a funded account."""
    start_provider(price_msats=PRICE_MSATS, wallet=local_swarm.wallet("provider"))

    def run(callbacks: list[Any]) -> pylon.PylonLM:
        lm = swarm_lm(nwc_uri=local_swarm.account("payer", 100_000), bid_msats=3_000, auto_pay=True, max_tokens=4)
        with dspy.context(lm=lm, adapter=WholeAnswerAdapter(), callbacks=callbacks):
            dspy.ChainOfThought("question -> answer")(question="receipt one")
            dspy.Predict("question -> answer")(question="receipt two")
        return lm

    return run


def test_a_published_trace_rebuilds_identical_and_links_to_the_real_job_events(
    paid_run: Callable[[list[Any]], pylon.PylonLM], relay_url: str
) -> None:
    recorder = TraceRecorder()
    lm = paid_run([recorder])
    publisher = NostrBridge([relay_url], nostr_sdk.Keys.generate())
    published = publisher.publish_trace(recorder.graph)
    publisher.close()
    assert published.refused == {} and len(published.receipt_ids) == 2  # one per LM call
    reader = NostrBridge([relay_url])
    try:
        fetched = reader.fetch_trace(published.summary_id)
        assert fetched.graph.to_json() == recorder.graph.to_json()
        verification = reader.verify_trace(published.summary_id)
    finally:
        reader.close()
    assert verification.ok, verification.problems
    assert verification.jobs_checked == 2 and verification.cost_msats == 2 * PRICE_MSATS == lm.total_spent_msats()
    # Each receipt's result link is the provider's own signed NIP-90 result, on the relay.
    for node in (n for n in recorder.graph if n.type is NodeType.LM):
        receipt = next(e for e in fetched.receipts if e.value("node") == node.id)
        assert node.route is not None
        links = {tag[3]: tag[1] for tag in receipt.tags_named("e") if len(tag) >= 4}
        assert links == {"job-request": node.route["job_id"], "job-result": node.route["result_id"]}
        assert receipt.value("p") == node.route["provider"]


def test_pylon_trace_fetch_and_verify(
    paid_run: Callable[[list[Any]], pylon.PylonLM], relay_url: str, tmp_path: Path
) -> None:
    recorder = TraceRecorder()
    paid_run([recorder])
    bridge = NostrBridge([relay_url], nostr_sdk.Keys.generate().secret_key().to_hex())  # a hex key works too
    published = bridge.publish_trace(recorder.graph)
    bridge.close()
    out = tmp_path / "graph.json"
    fetched = run_pylon("trace", "fetch", published.summary_id, "--relay", relay_url, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert re.search(r"^  predictor question -> reasoning, answer", fetched.stdout, re.M)
    assert f"2 LM calls, {2 * PRICE_MSATS} msats" in fetched.stdout
    assert pylon.TraceGraph.from_json(out.read_text()).to_json() == recorder.graph.to_json()
    verified = run_pylon("trace", "verify", published.summary_id, "--relay", relay_url)
    assert verified.returncode == 0, verified.stderr
    assert "2 swarm jobs checked" in verified.stdout and "verified:" in verified.stdout
    missing = run_pylon("trace", "verify", "f" * 64, "--relay", relay_url)
    assert missing.returncode == 1 and "MalformedEvent: no trace summary" in missing.stderr
    bad = run_pylon("trace", "fetch", "not-an-id", "--relay", relay_url)
    assert bad.returncode == 1 and "is not an event id" in bad.stderr and "Traceback" not in bad.stderr


def test_a_publisher_claiming_another_provider_fails_verification(
    paid_run: Callable[[list[Any]], pylon.PylonLM], relay_url: str
) -> None:
    recorder = TraceRecorder()
    paid_run([recorder])
    lm_node = next(n for n in recorder.graph if n.type is NodeType.LM)
    assert lm_node.route is not None
    lm_node.route["provider"] = nostr_sdk.Keys.generate().public_key().to_hex()  # not who signed the result
    bridge = NostrBridge([relay_url], nostr_sdk.Keys.generate())
    published = bridge.publish_trace(recorder.graph)
    verification = bridge.verify_trace(published.summary_id)
    bridge.close()
    assert not verification.ok and any("names provider" in p for p in verification.problems)
    answer = run_pylon("trace", "verify", published.summary_id, "--relay", relay_url)
    assert answer.returncode == 1 and "names provider" in answer.stderr


def publish_raw(bridge: NostrBridge, event: Any) -> str:
    """Publish a hand-made event through the bridge's own relay client."""

    async def send() -> str:
        client = await bridge._started()
        return str((await client.publish(event)).event_id)

    return str(bridge._run(send()))


def test_a_summary_pointing_at_events_that_are_not_there_is_refused(relay_url: str) -> None:
    keys = nostr_sdk.Keys.generate()
    bridge = NostrBridge([relay_url], keys)
    content = '{"format":"dspy-pylon/trace-receipt","version":1,"nodes":1,"roots":[],"totals":{}}'
    tags = [["t", "pylon-trace"], ["receipt", "summary"], ["e", "a" * 64, "", "index"], ["cost_msats", "0"]]
    summary_id = publish_raw(bridge, sign(receipts.KIND, content, tags, keys))
    with pytest.raises(pylon.MalformedEvent, match="not on the relays"):
        bridge.fetch_trace(summary_id)
    bad_tags = [["t", "pylon-trace"], ["receipt", "summary"], ["e", "not-an-id", "", "index"], ["cost_msats", "0"]]
    bad_id = publish_raw(bridge, sign(receipts.KIND, content, bad_tags, keys))
    with pytest.raises(pylon.MalformedEvent, match="is not an event id"):
        bridge.fetch_trace(bad_id)
    bridge.close()


def test_nostr_callback_publishes_each_run_as_it_ends(
    paid_run: Callable[[list[Any]], pylon.PylonLM], relay_url: str
) -> None:
    callback = pylon.NostrCallback([relay_url], nostr_sdk.Keys.generate())
    paid_run([callback])
    assert callback.flush(30)
    callback.close()
    assert len(callback.published) == 2 and callback.dropped == 0 and callback.failures == 0  # two runs
    reader = NostrBridge([relay_url])
    try:
        graphs = [reader.fetch_trace(p.summary_id).graph for p in callback.published]
        assert all(reader.verify_trace(p.summary_id).ok for p in callback.published)
    finally:
        reader.close()
    assert [len([n for n in g if n.type is NodeType.LM]) for g in graphs] == [1, 1]
    assert len(callback.graph) == 0  # published, then forgotten


def test_unreachable_relays_are_a_clear_error_and_never_break_a_run(relay_url: str) -> None:
    gone = f"ws://127.0.0.1:{free_port()}"
    bridge = NostrBridge([gone], nostr_sdk.Keys.generate(), timeout=2)
    recorder = TraceRecorder()
    with dspy.context(lm=DummyLM([{"answer": "a"}]), adapter=WholeAnswerAdapter(), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="q")
    with pytest.raises(pylon.RelayUnavailable):
        bridge.publish_trace(recorder.graph)
    with pytest.raises(pylon.RelayUnavailable):
        bridge.fetch_trace("f" * 64)
    bridge.close()
    keys = nostr_sdk.Keys.generate()
    callback = pylon.NostrCallback([gone], keys, bridge=NostrBridge([gone], keys, timeout=2))
    with dspy.context(lm=DummyLM([{"answer": "a"}]), adapter=WholeAnswerAdapter(), callbacks=[callback]):
        assert dspy.Predict("question -> answer")(question="q").answer
    assert callback.flush(30)
    callback.close()
    assert callback.failures == 1 and callback.published == []
    with pytest.raises(pylon.ConfigError):
        NostrBridge("ws://one-string-not-a-list")
    with pytest.raises(pylon.ConfigError):
        NostrBridge([relay_url]).publish_trace(recorder.graph)  # no keys to sign with


def test_a_paid_call_sampling_n_twice_costs_both_jobs_in_history_and_trace(
    local_swarm: LocalSwarm, start_provider: Callable[..., RunningProvider], swarm_lm: Callable[..., pylon.PylonLM]
) -> None:
    start_provider(price_msats=PRICE_MSATS, wallet=local_swarm.wallet("provider"))
    lm = swarm_lm(nwc_uri=local_swarm.account("payer", 100_000), bid_msats=3_000, auto_pay=True, max_tokens=4)
    recorder = TraceRecorder()
    with dspy.context(callbacks=[recorder]):
        outputs = lm("two answers please", n=2)
    assert len(outputs) == 2
    assert lm.history[-1]["cost"] == 2 * PRICE_MSATS == lm.total_spent_msats()
    [node] = [n for n in recorder.graph if n.type is NodeType.LM]
    assert node.usage is not None and node.usage["cost_msats"] == 2 * PRICE_MSATS
