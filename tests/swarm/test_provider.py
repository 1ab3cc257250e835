"""The provider node's promises: once-only jobs, back-pressure, several relays."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.nostr.relay_server import start_embedded_relay
from dspy_pylon.swarm.chat_job import chat_job
from dspy_pylon.usage import pylon_data

from .conftest import RunningProvider, eventually

StartProvider = Callable[..., RunningProvider]


def test_a_job_seen_again_after_a_restart_runs_once(
    start_provider: StartProvider, relay_loop: NostrLoop, tmp_path: Path, customer_keys: Any
) -> None:
    from dspy import lm15

    state = tmp_path / "state"
    keys = nostr_sdk.Keys.generate()
    request = lm15.Request(model="m", messages=(lm15.Message.user("once"),), config=lm15.Config(max_tokens=2))
    job = chat_job(request, model=None, bid_msats=0, relays=())
    # Dated a little ahead, so both provider runs (subscribed "from now on") are sent the same event.
    tags = [nostr_sdk.Tag.parse(t) for t in [i.as_tag() for i in job.inputs] + [["param", k, v] for k, v in job.params]]
    later = nostr_sdk.Timestamp.from_secs(nostr_sdk.Timestamp.now().as_secs() + 120)
    event = nostr_sdk.EventBuilder(nostr_sdk.Kind(5050), "").tags(tags).custom_created_at(later).finalize(customer_keys)

    async def publish(url: str) -> None:
        client = await RelayClient((url,)).start()
        try:
            await client.publish(event)
        finally:
            await client.close()

    for _ in range(2):  # the same job, on a new relay each time, to a provider restarted on the same state
        relay, url = relay_loop.run(start_embedded_relay())
        provider = start_provider(keys=keys, state_dir=state, relays=(url,))
        relay_loop.run(publish(url))
        eventually(lambda p=provider: p.node.stats.received == 1)
        provider.stop()
        relay.shutdown()
    assert provider.node.stats.ignored["duplicate"] == 1 and provider.node.stats.done == 0


def test_full_queue_answers_busy_at_once(start_provider: StartProvider, swarm_lm: Callable[..., Any]) -> None:
    provider = start_provider(concurrency=1, queue_limit=1, max_tokens_cap=16_000)
    lm = swarm_lm(providers=(provider.pubkey,), timeout=120, max_tokens=1_500)
    outcomes: list[Any] = []

    def call(i: int) -> None:
        try:
            outcomes.append(lm(f"long job {i}"))
        except dspy_errors.LMProviderError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    busy = [o for o in outcomes if isinstance(o, Exception)]
    assert busy, f"with one worker and a queue of one, four jobs at once must meet back-pressure: {outcomes}"
    assert all("busy" in str(e) for e in busy)
    assert len(outcomes) == 4


def test_publishes_to_every_relay_and_reports_the_dead_one(
    start_provider: StartProvider, relay_url: str, customer_keys: Any
) -> None:
    start_provider()
    dead = f"ws://127.0.0.1:{pylon.local.embedded.free_port()}"
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url, dead)), timeout=10)
    lm = pylon.PylonLM.swarm(customer_keys.secret_key().to_hex(), config, max_tokens=2, cache=False)
    assert lm("two relays, one down")[0]
    data = pylon_data(lm.history[-1]["response"].provider_data)
    assert data["published_to"] == [relay_url]
    assert list(data["failed_relays"]) == [dead]


def test_all_relays_down_is_a_transport_error(customer_keys: Any) -> None:
    dead = f"ws://127.0.0.1:{pylon.local.embedded.free_port()}"
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(dead,)), timeout=10)
    lm = pylon.PylonLM.swarm(customer_keys.secret_key().to_hex(), config, cache=False, num_retries=0)
    with pytest.raises(dspy_errors.LMTransportError, match="no relay accepted") as info:
        lm("nobody home")
    assert isinstance(info.value.__cause__, pylon.RelayUnavailable)


def test_a_dead_backend_is_reported_without_the_providers_addresses(
    start_provider: StartProvider, swarm_lm: Callable[..., Any], tiny_model: Path
) -> None:
    """The error feedback says what kind of failure it was; the backend's own message (its
    local URL and port) stays in the provider's log."""
    from dspy_pylon.local.embedded import EmbeddedLlama

    with EmbeddedLlama(tiny_model, n_ctx=2048) as server:
        provider = start_provider(backend_url=server.url)
        port = server.url.rsplit(":", 1)[1]
    lm = swarm_lm(providers=(provider.pubkey,), timeout=20, max_tokens=3)
    with pytest.raises(dspy_errors.LMProviderError) as caught:
        lm("hello")
    said = str(caught.value)
    assert "not answering" in said
    assert "127.0.0.1" not in said and port not in said and "tiny.gguf" not in said


def test_a_bug_inside_a_job_is_answered_and_the_worker_lives_on(
    start_provider: StartProvider, swarm_lm: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that hits a bug in the node (here: a backend client that raises what no code
    expects) gets error feedback at once, and the node's only worker still serves the next."""
    provider = start_provider(concurrency=1)
    real_resolve = provider.node.router.resolve
    broken = threading.Event()

    class Broken:
        async def acomplete(self, *args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("a bug")

    def resolve() -> Any:
        route, client = real_resolve()
        return (route, Broken()) if not broken.is_set() else (route, client)

    monkeypatch.setattr(provider.node.router, "resolve", resolve)
    monkeypatch.setattr(provider.node.router, "cached", resolve)  # the route the node reuses per job
    lm = swarm_lm(providers=(provider.pubkey,), timeout=20, max_tokens=3)
    with pytest.raises(dspy_errors.LMProviderError, match="internal error"):
        lm("first")
    broken.set()
    assert lm("second")
    eventually(lambda: provider.node.stats.errors == 1 and provider.node.stats.done == 1)
