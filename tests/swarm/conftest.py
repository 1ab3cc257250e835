"""Swarm fixtures: real relays, and real provider nodes and development wallet from
:class:`~dspy_pylon.testing.LocalSwarm` on the tiny llama.cpp server, with real keys."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_server import start_embedded_relay
from dspy_pylon.swarm.provider import ProviderNode
from dspy_pylon.testing import LocalSwarm
from tests.relays import NostrRelayProcess


@pytest.fixture(scope="session")
def relay_loop() -> NostrLoop:
    """A loop of its own for the per-test embedded relays and scripted providers (a test's
    :class:`LocalSwarm` runs its nodes and wallet on its own loop; customers use the shared one)."""
    return NostrLoop("test-relays")


class _FreshSecond:
    """Starts each test on a shared relay in a later second than the previous test ended.

    Nostr timestamps are whole seconds and a provider subscribes from "now": a broadcast job
    published in the second a test ended would reach the next test's providers. Waiting for
    the next second (half a second on average) is cheaper than a new relay process (1.3 s).
    """

    def __init__(self) -> None:
        self.ended = 0.0

    def wait(self) -> None:
        boundary = int(self.ended) + 1
        while time.time() < boundary:
            time.sleep(boundary - time.time())

    def mark_end(self) -> None:
        self.ended = time.time()


_NOSTR_RELAY_SECOND = _FreshSecond()


@pytest.fixture(params=["embedded", "nostr-relay"])
def relay_url(request: pytest.FixtureRequest, relay_loop: NostrLoop) -> Iterator[str]:
    """A real relay: nostr-sdk's embedded relay, new for each test (it starts in milliseconds),
    and PyPI ``nostr-relay`` (production-like, its own process and SQLite), one process for
    the session. Tests use fresh keys, so stored events of earlier tests are not theirs; a
    test on the shared process starts in a second of its own (see :class:`_FreshSecond`)."""
    if request.param == "embedded":
        relay, url = relay_loop.run(start_embedded_relay())
        yield url
        relay.shutdown()
    else:
        process: NostrRelayProcess = request.getfixturevalue("nostr_relay")
        _NOSTR_RELAY_SECOND.wait()
        yield process.url
        _NOSTR_RELAY_SECOND.mark_end()


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition``: a provider counts a job after its result reached the relay,
    which can be just after the customer already has it."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


class RunningProvider:
    """A provider node serving in the test's :class:`LocalSwarm`, stopped by the fixture."""

    def __init__(self, swarm: LocalSwarm, node: ProviderNode) -> None:
        self.swarm = swarm
        self.node = node
        self.keys = node.keys
        self.pubkey: str = node.pubkey

    def stop(self) -> None:
        self.swarm.stop_provider(self.node)


@pytest.fixture
def local_swarm(relay_url: str, tiny_server: EmbeddedLlama, tmp_path: Path) -> Iterator[LocalSwarm]:
    """The test's swarm on its relay: the development wallet (NIP-47 over the relay, SQLite in
    tmp_path, an empty ``customer`` account) and the nodes :func:`start_provider` adds."""
    swarm = LocalSwarm(tmp_path / "swarm", providers=0, funds_msats=0, relay_url=relay_url, backend_url=tiny_server.url)
    with swarm:
        yield swarm


@pytest.fixture
def start_provider(
    local_swarm: LocalSwarm, tiny_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., RunningProvider]:
    """Start provider nodes (tiny model via llama.cpp); all stopped at teardown."""
    monkeypatch.setenv("LLAMACPP_URL", tiny_server.url)

    def start(**overrides: Any) -> RunningProvider:
        return RunningProvider(local_swarm, local_swarm.add_provider(**overrides))

    return start


@pytest.fixture
def customer_keys() -> Any:
    """Fresh customer keys."""
    return nostr_sdk.Keys.generate()


@pytest.fixture
def swarm_lm(relay_url: str, customer_keys: Any) -> Callable[..., pylon.PylonLM]:
    """Build a ``pylon:swarm`` LM on the test relay with the customer keys."""

    def make(
        *,
        providers: tuple[str, ...] = (),
        timeout: float = 10.0,
        bid_msats: int = pylon.config.DEFAULT_BID_MSATS,
        auto_pay: bool = False,
        pay_on_result: bool = True,
        budget_sats: int = 0,
        model: str | None = None,
        **kwargs: Any,
    ) -> pylon.PylonLM:
        kwargs.setdefault("cache", False)
        kwargs.setdefault("num_retries", 0)
        venue = pylon.Swarm(
            relays=(relay_url,),
            providers=providers,
            bid_msats=bid_msats,
            auto_pay=auto_pay,
            pay_on_result=pay_on_result,
        )
        config = pylon.PylonConfig(venue=venue, timeout=timeout, budget_sats=budget_sats, model=model)
        return pylon.PylonLM.swarm(customer_keys.secret_key().to_hex(), config, **kwargs)

    return make


@pytest.fixture
def dev_wallet(local_swarm: LocalSwarm) -> LocalSwarm:
    """The development wallet (NIP-47 over the test relay, SQLite in tmp_path)."""
    return local_swarm
