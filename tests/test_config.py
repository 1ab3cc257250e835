"""PylonConfig, venues and model strings: validation and parsing (pure)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dspy_pylon as pylon
from dspy_pylon.config import (
    VALID_FORMS,
    Hybrid,
    Local,
    PylonConfig,
    Swarm,
    config_from_dict,
    config_to_dict,
    parse_model_string,
)


def test_default_venue_is_local_auto() -> None:
    config = PylonConfig()
    assert config.venue == Local(backend="auto")
    assert config.timeout == 60.0 and config.budget_sats == 0 and config.model is None
    assert config.budget_msats == 0


def test_constructors() -> None:
    assert PylonConfig.local().venue == Local()
    assert PylonConfig.local_with("ollama").venue == Local(backend="ollama")
    assert isinstance(PylonConfig.swarm().venue, Swarm)
    swarm = PylonConfig.swarm_with(["ws://127.0.0.1:7777"], 2500).venue
    assert swarm == Swarm(relays=("ws://127.0.0.1:7777",), bid_msats=2500)
    assert isinstance(PylonConfig.hybrid().venue, Hybrid)
    assert PylonConfig(budget_sats=21).budget_msats == 21_000


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: PylonConfig(budget_sats=-1), "budget_sats"),
        (lambda: PylonConfig(budget_sats=1.5), "budget_sats"),  # type: ignore[arg-type]
        (lambda: PylonConfig(timeout=0), "timeout"),
        (lambda: PylonConfig(timeout=float("inf")), "timeout"),
        (lambda: PylonConfig(timeout=True), "timeout"),
        (lambda: PylonConfig(model="  "), "model"),
        (lambda: PylonConfig(venue="local"), "venue"),  # type: ignore[arg-type]
        (lambda: Local(backend="vllm"), "allowed: auto, ollama, apple-fm, llamacpp, embedded"),  # type: ignore[arg-type]
        (lambda: Swarm(relays=()), "at least one relay"),
        (lambda: Swarm(relays=("http://relay.example",)), "ws:// or wss://"),
        (lambda: Swarm(bid_msats=-5), "bid_msats"),
        (lambda: Hybrid(relays=[]), "at least one relay"),  # type: ignore[arg-type]
        (lambda: PylonConfig.swarm_with([], 1000), "at least one relay"),
    ],
)
def test_invalid_config_says_what_is_allowed(make: object, needle: str) -> None:
    with pytest.raises(pylon.ConfigError, match=needle) as info:
        make()  # type: ignore[operator]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "venue", "model"),
    [
        ("pylon:local", Local(), None),
        ("pylon:local:ollama", Local(backend="ollama"), None),
        ("pylon:local:llamacpp", Local(backend="llamacpp"), None),
        ("pylon:local:apple-fm", Local(backend="apple-fm"), None),
        ("pylon:local:embedded", Local(backend="embedded"), None),
        ("pylon:local:ollama:llama3.2", Local(backend="ollama"), "llama3.2"),
        ("pylon:local:ollama:llama3.2:1b", Local(backend="ollama"), "llama3.2:1b"),
        ("pylon/local/ollama/llama3.2", Local(backend="ollama"), "llama3.2"),
        ("pylon/local/llamacpp/org/model-7b", Local(backend="llamacpp"), "org/model-7b"),
        ("pylon:swarm", Swarm(), None),
        ("pylon:swarm:llama3.2", Swarm(), "llama3.2"),
        ("pylon/swarm", Swarm(), None),
        ("pylon:hybrid", Hybrid(), None),
        ("pylon:hybrid:ollama:qwen3", Hybrid(backend="ollama"), "qwen3"),
    ],
)
def test_parse_valid_model_strings(text: str, venue: object, model: str | None) -> None:
    spec = parse_model_string(text)
    assert spec.venue == venue
    assert spec.model == model


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("openai/gpt-4o", "must start with 'pylon:' or 'pylon/'"),
        ("pylon", "must start with"),
        ("Pylon:local", "must start with"),
        ("pylon:", "unknown venue ''"),
        ("pylon:cloud", "unknown venue 'cloud'"),
        ("pylon:local:", "unknown backend ''"),
        ("pylon:local:vllm", "unknown backend 'vllm'"),
        ("pylon:local:llama3.2", "unknown backend 'llama3.2'"),
        ("pylon:hybrid:nope", "unknown backend 'nope'"),
        ("pylon:local:ollama:", "model name is empty"),
        ("pylon:local:ollama: llama", "surrounding spaces"),
        ("pylon:swarm:", "model name is empty"),
        ("pylon/local/", "unknown backend ''"),
        ("", "must start with"),
    ],
)
def test_invalid_model_strings_list_the_valid_forms(text: str, why: str) -> None:
    with pytest.raises(pylon.InvalidModelString, match="Valid forms") as info:
        parse_model_string(text)
    message = str(info.value)
    assert why in message
    for form in VALID_FORMS:
        assert form in message
    assert isinstance(info.value, ValueError)


def test_non_string_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a string"):
        parse_model_string(None)  # type: ignore[arg-type]


def test_lm_rejects_bad_model_string_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="Valid forms"):
        pylon.LM("ollama/llama3.2")


@given(st.text(max_size=60))
def test_parser_raises_only_invalid_model_string(text: str) -> None:
    try:
        spec = parse_model_string(text)
    except pylon.InvalidModelString:
        return
    assert isinstance(spec.venue, (Local, Swarm, Hybrid))


@given(
    st.sampled_from(["local", "hybrid"]),
    st.sampled_from(pylon.BACKENDS),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,30}[A-Za-z0-9]", fullmatch=True)),
    st.sampled_from([":", "/"]),
)
def test_model_string_round_trip(venue: str, backend: str, model: str | None, sep: str) -> None:
    text = sep.join(["pylon", venue, backend, *([model] if model else [])])
    spec = parse_model_string(text)
    assert spec.model == model
    config = PylonConfig(venue=spec.venue, model=spec.model)
    assert parse_model_string(pylon.model_string(config)) == spec


@pytest.mark.parametrize(
    "config",
    [
        PylonConfig(),
        PylonConfig(venue=Local(backend="ollama", embedded_fallback=False), model="llama3.2", timeout=5),
        PylonConfig(venue=Swarm(relays=("ws://127.0.0.1:1",), bid_msats=7, auto_pay=True), budget_sats=9),
        PylonConfig(venue=Hybrid(backend="llamacpp", relays=("wss://r.example",), bid_msats=0)),
    ],
)
def test_config_record_round_trip(config: PylonConfig) -> None:
    record = config_to_dict(config)
    assert json.loads(json.dumps(record)) == record
    assert config_from_dict(record) == config


@pytest.mark.parametrize(
    "record",
    [
        None,
        {},
        {"venue": {"type": "cloud"}, "timeout": 1, "budget_sats": 0, "model": None},
        {"venue": {"type": "local", "backend": "vllm"}, "timeout": 1, "budget_sats": 0, "model": None},
        {"venue": {"type": "local", "colour": "red"}, "timeout": 1, "budget_sats": 0, "model": None},
        {"venue": {"type": "swarm", "relays": "ws://x"}, "timeout": 1, "budget_sats": 0, "model": None},
        {"venue": {"type": "local"}, "timeout": -1, "budget_sats": 0, "model": None},
        {"venue": {"type": "local"}, "timeout": 1, "budget_sats": 0},
    ],
)
def test_corrupted_config_record_is_a_config_error(record: object) -> None:
    with pytest.raises(pylon.ConfigError):
        config_from_dict(record)


@pytest.mark.parametrize("venue", [Swarm, Hybrid])
def test_npubs_are_decoded_when_the_venue_is_made(venue: type) -> None:
    """A bad npub is a ConfigError at once, not a nostr-sdk error at the first call."""
    import nostr_sdk

    keys = nostr_sdk.Keys.generate()
    npub, hex_key = keys.public_key().to_bech32(), keys.public_key().to_hex()
    assert venue(providers=(npub, hex_key)).providers == (hex_key, hex_key)
    broken = npub[:-1] + ("q" if npub[-1] != "q" else "p")
    for bad in (broken, "npub1short", "npub1" + "q" * 58):
        with pytest.raises(pylon.ConfigError, match="not a valid npub"):
            venue(providers=(bad,))
    with pytest.raises(pylon.ConfigError, match="not a hex public key or an npub"):
        venue(providers=("alice",))


def test_a_local_server_url_is_checked_and_saved() -> None:
    venue = pylon.Local(backend="llamacpp", base_url="http://127.0.0.1:9999")
    config = pylon.PylonConfig(venue=venue)
    assert config_from_dict(config_to_dict(config)) == config
    hybrid = pylon.PylonConfig(venue=pylon.Hybrid(backend="ollama", base_url="https://box:11434"))
    assert config_from_dict(config_to_dict(hybrid)) == hybrid
    assert "base_url" not in config_to_dict(pylon.PylonConfig())["venue"]  # records without one are unchanged
    for backend, url in (("llamacpp", "ftp://x"), ("llamacpp", 42), ("auto", "http://x"), ("embedded", "http://x")):
        with pytest.raises(pylon.ConfigError, match="base_url"):
            pylon.Local(backend=backend, base_url=url)  # type: ignore[arg-type]
