"""Which relays of a job's ``relays`` tag a provider also publishes to: bounded, ws/wss only,
never into the provider's own network unless its settings say so."""

from __future__ import annotations

import asyncio

import pytest

from dspy_pylon.nostr.requested_relays import MAX_PER_JOB, public_only, usable_relays

PUBLIC_OWN = ("wss://relay.example",)

LOCAL = (
    "ws://127.0.0.1:8080",
    "ws://localhost:1",
    "ws://localhost.:1",  # a trailing dot is the same name
    "ws://10.0.0.5",
    "ws://[::1]:1",
    "ws://pc.local",
    "ws://169.254.169.254/latest/meta-data",  # cloud metadata
    # Spellings nostr-sdk reads as 127.0.0.1, like a browser does:
    "ws://2130706433:7777",
    "ws://127.1:7777",
    "ws://0x7f000001/",
)


@pytest.mark.parametrize(
    ("requested", "usable"),
    [
        (("wss://other.example", "ws://plain.example:7000"), ("wss://other.example", "ws://plain.example:7000")),
        (("wss://relay.example", "wss://relay.example/"), ()),  # already ours, however written
        (("https://x.example", "ftp://y.example", "relay.example", "", "wss://"), ()),  # not ws/wss
        (("wss://x.example:99999", "wss://x.example:port"), ()),  # bad ports
        (("wss://a.example", "wss://a.example"), ("wss://a.example",)),  # once
        (("ws://8.8.8.8:7000",), ("ws://8.8.8.8:7000",)),  # a public address
    ],
)
def test_usable_relays(requested: tuple[str, ...], usable: tuple[str, ...]) -> None:
    assert usable_relays(requested, PUBLIC_OWN) == usable


@pytest.mark.parametrize("url", LOCAL)
def test_a_job_cannot_point_a_provider_into_its_own_network(url: str) -> None:
    assert usable_relays((url,), PUBLIC_OWN) == ()
    assert usable_relays((url,), PUBLIC_OWN, allow_local=True) != ()  # a LAN or test set-up says so


def test_a_job_gets_a_few_relays_at_most() -> None:
    many = tuple(f"wss://r{i}.example" for i in range(10))
    assert usable_relays(many, PUBLIC_OWN) == many[:MAX_PER_JOB]


def test_names_are_resolved_before_use() -> None:
    """A name that resolves to a private address is refused; an unresolvable one too. (No
    network here: ``localhost`` resolves from /etc/hosts, the ``.invalid`` name never does.)"""
    kept = asyncio.run(public_only(("ws://localhost:7777", "wss://relay.invalid", "ws://8.8.8.8")))
    assert kept == ("ws://8.8.8.8",)
