"""Reliability with real processes: providers killed mid-job, relays restarted mid-run, graceful stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama, free_port
from dspy_pylon.usage import pylon_data
from tests.relays import NostrRelayProcess

from .processes import ProviderProcess, RelayProcess


@pytest.fixture(params=["pylon relay", "nostr-relay"])
def relay_process(request: pytest.FixtureRequest) -> Iterator[RelayProcess | NostrRelayProcess]:
    """A relay in its own process, restartable on the same port: ``pylon relay`` (nostr-sdk's
    embedded relay) or PyPI ``nostr-relay``."""
    if request.param == "pylon relay":
        relay = RelayProcess(free_port())
        yield relay
        relay.stop()
    else:
        with NostrRelayProcess() as process:
            yield process


@pytest.fixture
def providers(
    relay_process: RelayProcess | NostrRelayProcess, tiny_server: EmbeddedLlama, tmp_path: Path
) -> Iterator[Callable[..., ProviderProcess]]:
    started: list[ProviderProcess] = []

    def start(*extra: str) -> ProviderProcess:
        home = tmp_path / f"p{len(started)}"
        started.append(ProviderProcess(home, relay_process.url, tiny_server.url, "--max-tokens-cap", "16000", *extra))
        return started[-1]

    yield start
    for provider in started:
        provider.kill()


def on_one_relay(name: str) -> pytest.MarkDecorator:
    """Run on one relay only: what the test checks is the provider's and the customer's, and the
    relays' differences (storage, restarts) are the restart test's."""
    return pytest.mark.parametrize("relay_process", [name], indirect=True)


def _lm(relay_url: str, providers: tuple[str, ...] = (), timeout: float = 5.0, **kwargs: Any) -> pylon.PylonLM:
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,), providers=providers), timeout=timeout)
    kwargs.setdefault("cache", False)
    kwargs.setdefault("num_retries", 0)
    return pylon.PylonLM.swarm(nostr_sdk.Keys.generate().secret_key().to_hex(), config, **kwargs)


def _busy(server: EmbeddedLlama) -> bool:
    slots = httpx.get(f"{server.url}/slots", timeout=1).json()
    return any(slot.get("is_processing") for slot in slots)


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@on_one_relay("pylon relay")
def test_provider_killed_mid_job_times_out_in_time(
    providers: Callable[..., ProviderProcess],
    relay_process: RelayProcess | NostrRelayProcess,
    tiny_server: EmbeddedLlama,
) -> None:
    provider = providers()
    timeout = 3.0
    lm = _lm(relay_process.url, (provider.pubkey,), timeout=timeout, max_tokens=16_000)
    outcome: list[BaseException] = []
    started = time.monotonic()

    def call() -> None:
        try:
            lm("a long answer")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    _wait(lambda: _busy(tiny_server))
    provider.kill()
    worker.join(timeout + 5)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the call hung after its provider died"
    [error] = outcome
    assert isinstance(error, dspy_errors.LMTimeoutError) and isinstance(error.__cause__, pylon.SwarmTimeout)
    assert elapsed <= timeout + 1.0
    _wait(lambda: not _busy(tiny_server), 30)  # let the orphaned generation finish before the next test


@on_one_relay("nostr-relay")
def test_provider_killed_mid_job_another_provider_answers(
    providers: Callable[..., ProviderProcess],
    relay_process: RelayProcess | NostrRelayProcess,
    tiny_server: EmbeddedLlama,
) -> None:
    doomed = providers()
    survivor = providers()
    lm = _lm(relay_process.url, timeout=20, max_tokens=300)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(lm("broadcast")))
    worker.start()
    _wait(lambda: _busy(tiny_server))
    doomed.kill()
    worker.join(25)
    assert result and result[0][0]
    assert pylon_data(lm.history[-1]["response"].provider_data)["provider"] == survivor.pubkey


def test_relay_restart_during_fifty_calls(
    providers: Callable[..., ProviderProcess], relay_process: RelayProcess | NostrRelayProcess
) -> None:
    providers()
    lm = _lm(relay_process.url, timeout=3.0, max_tokens=2)
    outcomes: list[bool] = []
    for i in range(50):
        if i == 20:
            relay_process.restart()
        try:
            lm(f"call {i}")
            outcomes.append(True)
        except (dspy_errors.LMTimeoutError, dspy_errors.LMTransportError):
            outcomes.append(False)
    assert all(outcomes[:20]), outcomes
    assert all(outcomes[-20:]), f"calls after the restart must succeed again: {outcomes}"


@on_one_relay("pylon relay")
def test_graceful_stop_finishes_the_job_in_flight(
    providers: Callable[..., ProviderProcess],
    relay_process: RelayProcess | NostrRelayProcess,
    tiny_server: EmbeddedLlama,
) -> None:
    provider = providers()
    lm = _lm(relay_process.url, (provider.pubkey,), timeout=30, max_tokens=400)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(lm("finish me")))
    worker.start()
    _wait(lambda: _busy(tiny_server))
    out = provider.terminate()
    worker.join(30)
    assert result and result[0][0], "the job in flight was dropped on SIGTERM"
    assert "stopped: 1 jobs answered (1 results, 0 errors)" in out


@on_one_relay("nostr-relay")
def test_once_exits_after_n_jobs(
    providers: Callable[..., ProviderProcess], relay_process: RelayProcess | NostrRelayProcess
) -> None:
    provider = providers("--once", "3")
    lm = _lm(relay_process.url, (provider.pubkey,), max_tokens=2)
    for i in range(3):
        lm(f"job {i}")
    assert provider.proc.wait(15) == 0
