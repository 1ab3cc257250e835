"""Injectable edges: home, ledger, reputation, relay client and HTTP transport replace the
environment's defaults; constructing an LM does no I/O."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.swarm.reputation import Reputation
from tests.swarm.conftest import RunningProvider

KEY = nostr_sdk.Keys.generate().secret_key().to_hex()


def test_constructing_a_swarm_lm_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PYLON_HOME", str(tmp_path / "env-home"))
    threads = {t.name for t in threading.enumerate()}
    lm = pylon.LM("pylon:swarm", private_key=KEY, relays=["ws://127.0.0.1:1"], home=home)
    hybrid = pylon.LM("pylon:hybrid:llamacpp", relays=["ws://127.0.0.1:1"], home=home)  # no identity yet: fine
    assert not home.exists() and not (tmp_path / "env-home").exists()  # no ledger, no reputation store
    assert {t.name for t in threading.enumerate()} == threads  # no Nostr loop, no connection
    assert lm.runtime.edges.home == home and hybrid.runtime.edges.home == home


def test_a_bad_key_still_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(pylon.IdentityError):
        pylon.LM("pylon:swarm", private_key="npub1notasecret", home=tmp_path)
    with pytest.raises(pylon.ConfigError, match="npub"):
        pylon.LM("pylon:swarm", private_key=KEY, providers=["npub1bad"], home=tmp_path)


def test_home_ledger_and_reputation_are_used_instead_of_the_environment(
    start_provider: Any, relay_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider: RunningProvider = start_provider()
    monkeypatch.setenv("PYLON_HOME", str(tmp_path / "env-home"))
    ledger = SpendLedger(tmp_path / "shared" / "ledger.sqlite")
    reputation = Reputation(tmp_path / "shared" / "reputation.sqlite")
    home = tmp_path / "app-home"
    pylon.init_identity(words=pylon.generate_mnemonic(), home=home)
    lm = pylon.LM(
        "pylon:swarm",
        relays=[relay_url],
        providers=[provider.pubkey],
        home=home,
        ledger=ledger,
        reputation=reputation,
        timeout=20,
        cache=False,
        max_tokens=4,
    )
    lm("Say hi")
    job_id = lm.history[-1]["response"].provider_data["pylon"]["job_id"]
    assert ledger.entry(job_id) is not None and ledger.entry(job_id).state == "done"  # type: ignore[union-attr]
    assert reputation.stats(provider.pubkey).successes == 1
    assert lm.runtime.swarm().customer.pubkey == pylon.load_identity(home).keys.public_key().to_hex()
    assert not (tmp_path / "env-home").exists()
    assert not (home / "ledger.sqlite").exists() and not (home / "reputation.sqlite").exists()
    lm.close()
    ledger.close()
    reputation.close()


def test_a_relay_client_passed_in_is_shared_and_left_open(start_provider: Any, relay_url: str) -> None:
    provider: RunningProvider = start_provider()
    loop = NostrLoop.shared()
    client = RelayClient((relay_url,))
    lms = [
        pylon.LM(
            "pylon:swarm",
            private_key=nostr_sdk.Keys.generate().secret_key().to_hex(),
            relays=[relay_url],
            providers=[provider.pubkey],
            relay_client=client,
            timeout=20,
            cache=False,
            max_tokens=4,
        )
        for _ in range(2)
    ]
    for lm in lms:
        lm("Say hi")
    lms[0].close()
    lms[1]("Say hi again")  # the other LM's subscription still works
    assert client.started
    loop.run(client.close(), 10)


class CountingTransport(httpx.HTTPTransport):
    """The real network, counted: proves every request went through the transport given."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def test_an_http_transport_carries_probes_and_calls(tiny_server: EmbeddedLlama) -> None:
    transport = CountingTransport()
    venue = pylon.Local(backend="llamacpp", base_url=tiny_server.url)
    lm = pylon.PylonLM.from_config(pylon.PylonConfig(venue=venue), http_transport=transport, max_tokens=2, cache=False)
    lm("Hi")
    assert lm.route().base_url == tiny_server.url
    assert "/v1/chat/completions" in transport.paths and len(transport.paths) >= 2  # a probe, then the call
    lm.close()
