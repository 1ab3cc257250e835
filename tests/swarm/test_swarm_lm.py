"""``pylon:swarm`` and ``pylon:hybrid`` end to end: real relay, real provider nodes, real signatures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import dspy
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.usage import pylon_data
from tests.helpers import WholeAnswerAdapter, pylon_cause

from .conftest import RunningProvider, eventually

StartProvider = Callable[..., RunningProvider]
SwarmLM = Callable[..., pylon.PylonLM]


def test_swarm_call_carries_provider_job_relay_and_usage(
    start_provider: StartProvider, swarm_lm: SwarmLM, relay_url: str
) -> None:
    provider = start_provider(processing_feedback_after_s=0)  # feedback even on this quick job
    lm = swarm_lm(max_tokens=6, temperature=0.0)
    [text] = lm("hello swarm")
    assert text
    entry = lm.history[-1]
    assert entry["usage"]["completion_tokens"] == 6 and entry["usage"]["prompt_tokens"] > 0
    assert entry["cost"] == 0
    data = pylon_data(entry["response"].provider_data)
    assert data["venue"] == "swarm" and data["provider"] == provider.pubkey
    assert data["feedback"] == [f"processing from {provider.pubkey}"]
    assert data["relay"] == relay_url and len(data["job_id"]) == 64 and data["latency_ms"] > 0
    assert data["model"] == "tiny.gguf"  # the model's name, never the provider's file path
    assert data["encryption"] is None  # a broadcast job is public
    eventually(lambda: provider.node.stats.done == 1)
    assert lm.usage().completion_tokens == 6


def test_same_answer_as_local(start_provider: StartProvider, swarm_lm: SwarmLM, llamacpp_url: str) -> None:
    start_provider()
    local = pylon.LM("pylon:local:llamacpp", max_tokens=8, temperature=0.0, cache=False)
    swarm = swarm_lm(max_tokens=8, temperature=0.0)
    assert swarm("same prompt") == local("same prompt")


def test_identical_calls_are_separate_jobs(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    provider = start_provider()
    lm = swarm_lm(max_tokens=2, temperature=0.0)
    lm("again")
    lm("again")
    ids = {pylon_data(e["response"].provider_data)["job_id"] for e in lm.history}
    assert len(ids) == 2
    eventually(lambda: provider.node.stats.done == 2)


def test_predict_and_evaluate_on_the_swarm(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    start_provider(concurrency=4)
    lm = swarm_lm(max_tokens=3)
    devset = [dspy.Example(q=f"q{i}").with_inputs("q") for i in range(12)]
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        assert dspy.Predict("q -> a")(q="hello").a
        result = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: bool(p.a), num_threads=6)(
            dspy.Predict("q -> a")
        )
    assert result.score == 100.0
    assert lm.runtime.totals.calls == 13


def test_acall_on_the_swarm(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    start_provider(concurrency=4)
    lm = swarm_lm(max_tokens=2)

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(lm.acall(f"async {i}") for i in range(6)))

    assert all(r[0] for r in asyncio.run(main()))
    assert lm.runtime.totals.calls == 6


def test_targeted_provider_gets_an_encrypted_job(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    chosen = start_provider()
    other = start_provider()
    lm = swarm_lm(providers=(chosen.pubkey,), max_tokens=2)
    for i in range(3):
        lm(f"secret prompt {i}")
    eventually(lambda: chosen.node.stats.done == 3)
    eventually(lambda: other.node.stats.ignored["targets another provider"] == 3)
    assert other.node.stats.done == 0
    assert {pylon_data(e["response"].provider_data)["provider"] for e in lm.history} == {chosen.pubkey}


def test_npub_target_and_a_set_of_providers(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    a, b = start_provider(), start_provider()
    npub = a.keys.public_key().to_bech32()
    assert swarm_lm(providers=(npub,), max_tokens=2)("by npub")[0]
    lm = swarm_lm(providers=(a.pubkey, b.pubkey), max_tokens=2)
    lm("either of us")
    assert pylon_data(lm.history[-1]["response"].provider_data)["provider"] in (a.pubkey, b.pubkey)


def test_provider_error_ends_the_wait_at_once(start_provider: StartProvider, swarm_lm: SwarmLM, relay_url: str) -> None:
    provider = start_provider()
    swarm = pylon.Swarm(relays=(relay_url,), providers=(provider.pubkey,))
    config = pylon.PylonConfig(venue=swarm, timeout=30, model="no-such-model")
    lm = pylon.PylonLM.swarm(pylon_keys_hex(), config, num_retries=0)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="not served here") as info:
        lm("hello")
    assert time.monotonic() - started < 5, "an error feedback must not cost the full timeout"
    assert isinstance(info.value.__cause__, pylon.JobFailed)
    assert not dspy_errors.is_retryable_lm_error(info.value)


def test_no_provider_times_out_and_cancels(swarm_lm: SwarmLM, relay_url: str, relay_loop: Any) -> None:
    lm = swarm_lm(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMTimeoutError) as info:
        lm("anyone?")
    assert time.monotonic() - started < 1.0 + 1.0
    assert isinstance(info.value.__cause__, pylon.SwarmTimeout)
    assert "cancelled" in str(info.value)
    # The cancellation is a real kind-5 deletion naming the job.
    import nostr_sdk

    from dspy_pylon.nostr.relay_client import RelayClient

    async def deletions() -> list[Any]:
        client = await RelayClient((relay_url,)).start()
        try:
            author = lm.runtime.swarm().customer.keys.public_key()
            return await client.fetch([nostr_sdk.Filter().kind(nostr_sdk.Kind(5)).author(author)], 2.0)
        finally:
            await client.close()

    found = relay_loop.run(deletions())
    assert len(found) == 1 and found[0].value("k") == "5050"


def test_reputation_counts_outcomes(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    provider = start_provider()
    lm = swarm_lm(max_tokens=2)
    lm("one")
    lm("two")
    stats = lm.runtime.swarm().reputation.stats(provider.pubkey)
    assert stats.successes == 2 and stats.errors == 0 and stats.mean_latency_ms is not None
    assert stats.score == pytest.approx(3 / 4)


def test_discover_reads_announcements(start_provider: StartProvider, relay_url: str, dev_wallet: LocalSwarm) -> None:
    cheap = start_provider(name="cheap node", price_msats=0)
    pricey = start_provider(name="pricey node", price_msats=5000, wallet=dev_wallet.wallet("pricey"))
    found = {r.pubkey: r for r in pylon.discover([relay_url])}
    assert found[cheap.pubkey].name == "cheap node" and found[pricey.pubkey].price_msats == 5000
    assert found[cheap.pubkey].models == ("tiny.gguf",)  # names, not the provider's paths
    assert found[cheap.pubkey].npub.startswith("npub1")
    ordered = [r.pubkey for r in pylon.discover([relay_url])]
    assert ordered.index(cheap.pubkey) < ordered.index(pricey.pubkey)


def test_hybrid_uses_local_when_it_answers(start_provider: StartProvider, llamacpp_url: str, relay_url: str) -> None:
    provider = start_provider()
    config = pylon.PylonConfig(venue=pylon.Hybrid(backend="llamacpp", relays=(relay_url,)), timeout=10)
    lm = pylon.PylonLM.swarm(pylon_keys_hex(), config, max_tokens=2, cache=False)
    lm("local please")
    data = pylon_data(lm.history[-1]["response"].provider_data)
    assert data["venue"] == "local" and "fallback_from" not in data
    assert provider.node.stats.done == 0


class SlowLlama:
    """A llama.cpp look-alike whose chat never answers in time, or fails with HTTP 500
    (health and models do answer). A test double: a real llama.cpp cannot be made to
    stall or fail on demand.
    """

    def __init__(self, fail: bool = False) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json({"status": "ok"} if self.path == "/health" else {"data": [{"id": "slow.gguf"}]})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if fail:
                    data = b'{"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                release.wait(30)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.mark.parametrize("reason", ["no local backend", "local timeout", "local error"])
def test_hybrid_falls_back_to_the_swarm(
    reason: str,
    start_provider: StartProvider,
    relay_url: str,
    closed_backends: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = start_provider()
    slow = SlowLlama(fail=reason == "local error")
    try:
        local_url = closed_backends["LLAMACPP_URL"] if reason == "no local backend" else slow.url
        monkeypatch.setenv("LLAMACPP_URL", local_url)
        config = pylon.PylonConfig(venue=pylon.Hybrid(backend="llamacpp", relays=(relay_url,)), timeout=1.5)
        lm = pylon.PylonLM.swarm(pylon_keys_hex(), config, cache=False, num_retries=0, max_tokens=2)
        lm("fall back")
    finally:
        slow.close()
    data = pylon_data(lm.history[-1]["response"].provider_data)
    assert data["venue"] == "swarm" and data["fallback_from"] == "local"
    expected = {"no local backend": "NoLocalBackend", "local timeout": "BackendTimeout"}.get(
        reason, "BackendServerError"
    )
    assert data["fallback_reason"].startswith(expected)
    eventually(lambda: provider.node.stats.done == 1)


def test_hybrid_options_call_keeps_the_local_error_when_the_swarm_cannot_carry_it(
    relay_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local would have applied the backend option; the swarm cannot carry it. The caller sees
    the local failure (retryable by DSPy), not the swarm's refusal, and no job is published."""
    slow = SlowLlama(fail=True)
    try:
        monkeypatch.setenv("LLAMACPP_URL", slow.url)
        config = pylon.PylonConfig(venue=pylon.Hybrid(backend="llamacpp", relays=(relay_url,)), timeout=1.5)
        lm = pylon.PylonLM.swarm(pylon_keys_hex(), config, cache=False, num_retries=0, max_tokens=2)
        with pytest.raises(dspy_errors.LMError) as info:
            lm("penalised please", repeat_penalty=1.1)
    finally:
        slow.close()
    cause = info.value.__cause__
    assert isinstance(cause, pylon.BackendServerError)
    assert any("swarm fallback was not tried" in note for note in getattr(cause, "__notes__", []))
    assert dspy_errors.is_retryable_lm_error(info.value)


def pylon_keys_hex() -> str:
    import nostr_sdk

    return str(nostr_sdk.Keys.generate().secret_key().to_hex())


def test_result_too_large_for_relays_fails_fast_and_clearly(start_provider: StartProvider, swarm_lm: SwarmLM) -> None:
    provider = start_provider(max_result_bytes=1_500)
    lm = swarm_lm(providers=(provider.pubkey,), timeout=30, max_tokens=2_000)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="result too large") as info:
        lm("write a lot")
    assert time.monotonic() - started < 15, "an undeliverable result must not cost the whole timeout"
    assert isinstance(info.value.__cause__, pylon.JobFailed)


SPEC_MNEMONIC = "leader monkey parrot ring guide accident before fence cannon height naive bean"


def test_swarm_without_identity_says_run_pylon_init(relay_url: str) -> None:
    lm = pylon.LM("pylon:swarm", relays=[relay_url])  # constructing reads nothing
    with pytest.raises(Exception, match="pylon init") as caught:
        lm("hello")
    pylon_cause(caught.value, pylon.IdentityMissing)


def test_identity_file_is_used_when_no_key_is_given(relay_url: str, start_provider: StartProvider) -> None:
    start_provider()
    pylon.init_identity(words=SPEC_MNEMONIC)
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=10)
    lm = pylon.PylonLM.from_config(config, max_tokens=2, cache=False)
    assert lm("hi")[0]
    assert lm.runtime.swarm().customer.pubkey == pylon.load_identity().public_key_hex


def test_mnemonic_never_leaks_into_state_history_or_repr(
    relay_url: str, start_provider: StartProvider, tmp_path: Any
) -> None:
    start_provider()
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=10)
    lm = pylon.PylonLM.from_mnemonic(SPEC_MNEMONIC, config, max_tokens=2, cache=False)
    lm("hi")
    secret_hex = "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a"
    program = dspy.Predict("q -> a")
    program.set_lm(lm)
    program.save(str(tmp_path / "p.json"))
    texts = [repr(lm.kwargs), repr(lm.dump_state()), repr(lm.history), repr(lm), (tmp_path / "p.json").read_text()]
    for text in texts:
        assert "leader" not in text and secret_hex not in text
    assert lm.runtime.swarm().customer.pubkey == pylon.keys_from_mnemonic(SPEC_MNEMONIC).public_key().to_hex()


def test_bad_mnemonic_is_refused_before_anything_is_sent(relay_url: str) -> None:
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=10)
    with pytest.raises(pylon.InvalidMnemonic) as info:
        pylon.PylonLM.from_mnemonic("leader monkey parrot ring guide accident before fence cannon height naive", config)
    assert "leader monkey" not in str(info.value)


def test_swarm_refuses_what_its_transcript_cannot_carry_before_publishing(
    start_provider: StartProvider, swarm_lm: SwarmLM
) -> None:
    provider = start_provider()
    lm = swarm_lm()
    assert "repeat_penalty" not in lm.supported_params
    with pytest.raises(dspy_errors.LMUnsupportedFeatureError) as info:
        lm("x", repeat_penalty=1.1)
    assert isinstance(info.value.__cause__, pylon.UnsupportedRequest)
    assert provider.node.stats.received == 0
