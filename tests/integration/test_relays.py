"""Smoke tests of the test relays with real nostr-sdk clients: delivery, size limits, restarts, dates.

Both relays: the embedded nostr-sdk ``LocalRelay`` and the production-like ``nostr-relay`` process
(``.venv-relay``, installed by ``scripts/install_relay.sh``). Behaviours measured here and relied on
elsewhere:

* A client connected before a relay restart reconnects on its own and re-sends its subscriptions;
  nothing has to be called (with pylon's ``relay_options()``: a retry every 5 s, nostr-sdk's default
  is ~10 s and backing off). Until then ``send_event`` fails with "timeout".
* The embedded relay refuses events whose JSON is over 65536 bytes; nostr-relay (``max_event_size``
  262144) takes 100 KiB of content.
* nostr-relay rejects events dated more than 1 h ahead, but its OK message carries an empty event id
  (after a 2 s throttle), so nostr-sdk reports "timeout" rather than the reason. The embedded relay
  accepts them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import nostr_sdk as n
import pytest

from dspy_pylon.errors import RelayUnavailable
from dspy_pylon.local.embedded import free_port
from dspy_pylon.nostr.relay_client import RelayClient, relay_options

from ..relays import (
    EMBEDDED_MAX_EVENT_BYTES,
    MAX_EVENT_SIZE,
    EmbeddedRelay,
    NostrRelayProcess,
)

KIND = n.Kind(5050)
NOTE_KIND = n.Kind(1)
OK_TIMEOUT = timedelta(seconds=5)
# nostr-relay answers a rejected event after a 2 s throttle, with an empty event id nostr-sdk cannot
# match: such a send ends at ok_timeout whatever it is.
REJECTED_OK_TIMEOUT = timedelta(seconds=3)
RECONNECT_DEADLINE = 30.0


async def connected(url: str) -> Any:
    """A nostr-sdk client on ``url`` with the relay options pylon's own clients use."""
    client = n.Client()
    await client.add_relay(n.RelayUrl.parse(url), opts=relay_options())
    await client.connect(timedelta(seconds=2))
    return client


async def subscribed(url: str) -> tuple[Any, Any]:
    """A client subscribed to kind 5050 from now on, and its notification stream (taken first)."""
    client = await connected(url)
    notes = client.notifications()
    await client.subscribe(n.ReqTarget.auto([n.Filter().kind(KIND).since(n.Timestamp.now())]))
    return client, notes


async def next_event(notes: Any, event_id: str, timeout: float = 5.0) -> Any:
    """The event ``event_id`` from a notification stream (each event comes twice; take the new one)."""

    async def wait() -> Any:
        while True:
            notif = await notes.next()
            if notif.is_new_event() and notif.event.id().to_hex() == event_id:
                return notif.event

    return await asyncio.wait_for(wait(), timeout)


async def stored(url: str, event: Any) -> bool:
    """Whether the relay hands out ``event`` to a fresh client."""
    client = await connected(url)
    try:
        found = await client.fetch_events(n.ReqTarget.auto([n.Filter().id(event.id())]), timeout=timedelta(seconds=3))
        return any(e.id().to_hex() == event.id().to_hex() for e in found)
    finally:
        await client.shutdown()


async def wait_connected(clients: list[Any], url: str, deadline: float) -> float:
    """Poll the clients' status for ``url`` until all are connected; returns the seconds waited."""
    started = time.monotonic()
    relays = [await c.relay(n.RelayUrl.parse(url)) for c in clients]
    while not all(r.status() == n.RelayStatus.CONNECTED for r in relays):
        if time.monotonic() - started > deadline:
            raise AssertionError(f"not reconnected after {deadline} s: {[r.status() for r in relays]}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def job_request(keys: Any, content: str = "", created_at: int | None = None, kind: Any = KIND) -> Any:
    builder = n.EventBuilder(kind, content).tags([n.Tag.parse(["i", "hi", "text"])])
    if created_at is not None:
        builder = builder.custom_created_at(n.Timestamp.from_secs(created_at))
    return builder.finalize(keys)


def sent_to(out: Any, url: str) -> bool:
    return url.rstrip("/") in {str(u).rstrip("/") for u in out.success}


def failure(out: Any, url: str) -> str | None:
    return next((reason for u, reason in out.failed.items() if str(u).rstrip("/") == url.rstrip("/")), None)


# --------------------------------------------------------------------------- delivery


def test_signed_request_reaches_a_subscriber(any_relay: str) -> None:
    async def main() -> None:
        keys = n.Keys.generate()
        publisher = await connected(any_relay)
        subscriber, notes = await subscribed(any_relay)
        event = job_request(keys)
        out = await publisher.send_event(event, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, any_relay), out.failed
        got = await next_event(notes, event.id().to_hex())
        assert got.verify()
        assert got.author().to_hex() == keys.public_key().to_hex()
        assert got.kind().as_u16() == 5050
        assert [t.to_vec() for t in got.tags()] == [["i", "hi", "text"]]
        for client in (publisher, subscriber):
            await client.shutdown()

    asyncio.run(main())


# --------------------------------------------------------------------------- event sizes


def test_nostr_relay_takes_a_100_kib_event(nostr_relay: NostrRelayProcess) -> None:
    async def main() -> None:
        keys = n.Keys.generate()
        publisher = await connected(nostr_relay.url)
        subscriber, notes = await subscribed(nostr_relay.url)
        event = job_request(keys, "x" * (100 * 1024))
        out = await publisher.send_event(event, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, nostr_relay.url), out.failed
        got = await next_event(notes, event.id().to_hex())
        assert len(got.content()) == 100 * 1024
        for client in (publisher, subscriber):
            await client.shutdown()

    asyncio.run(main())


def test_nostr_relay_limit_counts_content_characters(nostr_relay: NostrRelayProcess) -> None:
    async def main() -> None:
        keys = n.Keys.generate()
        at_limit = job_request(keys, "é" * MAX_EVENT_SIZE)  # characters, not bytes: 512 KiB of UTF-8
        over = job_request(keys, "x" * (MAX_EVENT_SIZE + 1))
        client = await connected(nostr_relay.url)
        out = await client.send_event(at_limit, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, nostr_relay.url), out.failed
        out = await client.send_event(over, ok_timeout=REJECTED_OK_TIMEOUT)
        assert not sent_to(out, nostr_relay.url)
        assert failure(out, nostr_relay.url) == "timeout"  # the relay's OK has an empty event id
        await client.shutdown()
        assert await stored(nostr_relay.url, at_limit)
        assert not await stored(nostr_relay.url, over)

    asyncio.run(main())


def test_embedded_relay_refuses_events_over_64_kib(embedded_relay: EmbeddedRelay) -> None:
    async def main() -> None:
        keys = n.Keys.generate()
        url = embedded_relay.url
        overhead = len(job_request(keys).as_json().encode())
        at_limit = job_request(keys, "x" * (EMBEDDED_MAX_EVENT_BYTES - overhead))
        over = job_request(keys, "x" * (EMBEDDED_MAX_EVENT_BYTES - overhead + 1))
        big = job_request(keys, "x" * (100 * 1024))
        assert len(at_limit.as_json().encode()) == EMBEDDED_MAX_EVENT_BYTES
        client = await connected(url)
        out = await client.send_event(at_limit, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, url), out.failed
        for event in (over, big):
            out = await client.send_event(event, ok_timeout=OK_TIMEOUT)
            size = len(event.as_json().encode())
            assert not sent_to(out, url)
            assert failure(out, url) == (
                f"blocked: event size ({size} bytes) exceeds maximum allowed size ({EMBEDDED_MAX_EVENT_BYTES} bytes)"
            )
        await client.shutdown()

    asyncio.run(main())


# --------------------------------------------------------------------------- dates


def test_nostr_relay_rejects_events_dated_over_an_hour_ahead(nostr_relay: NostrRelayProcess) -> None:
    async def main() -> None:
        keys = n.Keys.generate()
        url = nostr_relay.url
        # Not job requests: the relay is shared, and a stored job dated ahead would reach every
        # provider started on it in the next half hour.
        soon = job_request(keys, "soon", created_at=int(time.time()) + 30 * 60, kind=NOTE_KIND)
        later = job_request(keys, "later", created_at=int(time.time()) + 2 * 3600, kind=NOTE_KIND)
        # A rejection throttles the connection (2 s per message, doubling): one client per test.
        client = await connected(url)
        out = await client.send_event(soon, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, url), out.failed
        out = await client.send_event(later, ok_timeout=REJECTED_OK_TIMEOUT)
        assert not sent_to(out, url)
        assert failure(out, url) == "timeout"  # the relay's OK has an empty event id
        await client.shutdown()
        assert await stored(url, soon)
        assert not await stored(url, later)

    asyncio.run(main())


def test_embedded_relay_accepts_events_dated_ahead(embedded_relay: EmbeddedRelay) -> None:
    async def main() -> None:
        event = job_request(n.Keys.generate(), "later", created_at=int(time.time()) + 2 * 3600, kind=NOTE_KIND)
        client = await connected(embedded_relay.url)
        out = await client.send_event(event, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, embedded_relay.url), out.failed
        await client.shutdown()

    asyncio.run(main())


# --------------------------------------------------------------------------- restarts


@pytest.fixture(params=["embedded", "nostr-relay"])
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedRelay | NostrRelayProcess]:
    """A relay of its own (restarting a shared one would disturb other tests)."""
    relay: EmbeddedRelay | NostrRelayProcess
    relay = EmbeddedRelay() if request.param == "embedded" else NostrRelayProcess(tmp_path / "relay")
    with relay:
        yield relay


def test_clients_connected_before_a_restart_work_after_it(restartable: EmbeddedRelay | NostrRelayProcess) -> None:
    relay = restartable

    async def main() -> None:
        keys = n.Keys.generate()
        url = relay.url
        publisher = await connected(url)
        subscriber, notes = await subscribed(url)
        before = job_request(keys, "before")
        assert sent_to(await publisher.send_event(before, ok_timeout=OK_TIMEOUT), url)
        await next_event(notes, before.id().to_hex())

        relay.restart()
        assert relay.url == url
        # Nothing is called on the clients: nostr-sdk reconnects by itself and re-sends the REQ.
        waited = await wait_connected([publisher, subscriber], url, RECONNECT_DEADLINE)
        print(f"reconnected {waited:.1f} s after the restart (relay up in {relay.startup_seconds:.2f} s)")

        after = job_request(keys, "after")
        out = await publisher.send_event(after, ok_timeout=OK_TIMEOUT)
        assert sent_to(out, url), out.failed
        await next_event(notes, after.id().to_hex())
        for client in (publisher, subscriber):
            await client.shutdown()
        # nostr-relay keeps its SQLite database; the embedded relay starts empty.
        assert await stored(url, before) == isinstance(relay, NostrRelayProcess)

    asyncio.run(main())


def test_send_while_the_relay_is_down_fails_without_raising() -> None:
    async def main() -> None:
        with EmbeddedRelay() as relay:
            client = await connected(relay.url)
            relay.stop()
            out = await client.send_event(job_request(n.Keys.generate()), ok_timeout=timedelta(seconds=1))
            assert not sent_to(out, relay.url)
            assert failure(out, relay.url) is not None
            await client.shutdown()

    asyncio.run(main())


def test_a_relay_down_at_start_is_not_waited_for_and_is_used_once_it_is_up() -> None:
    """pylon's RelayClient: a refused relay costs no connect timeout, and is retried in the background."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"

    async def main() -> None:
        started = time.monotonic()
        client = await RelayClient((url,), connect_timeout=3.0).start()
        assert time.monotonic() - started < 1.0
        with pytest.raises(RelayUnavailable):
            await client.publish(job_request(n.Keys.generate(), "too early"), ok_timeout=1.0)
        with EmbeddedRelay(port):
            deadline = time.monotonic() + RECONNECT_DEADLINE
            while True:
                try:
                    published = await client.publish(job_request(n.Keys.generate(), "late"), ok_timeout=1.0)
                    break
                except RelayUnavailable:
                    assert time.monotonic() < deadline, "the relay was never retried"
                    await asyncio.sleep(0.2)
            assert [u.rstrip("/") for u in published.accepted] == [url]
            await client.close()

    asyncio.run(main())


def test_nostr_relay_without_its_virtualenv_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from .. import relays

    monkeypatch.setattr(relays, "RELAY_BIN", tmp_path / "missing" / "nostr-relay")
    with pytest.raises(relays.RelayNotInstalled, match=r"scripts/install_relay\.sh"):
        relays.NostrRelayProcess(tmp_path)
