"""Where the NWC URI comes from, how it is stored, and that its secret never shows."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.errors import ConfigError
from dspy_pylon.pay.nwc import URI_ENV, NwcWallet, load_nwc_uri, parse_nwc_uri, save_nwc_uri

RELAY = "ws://127.0.0.1:7777"


def _uri(secret: str | None = None, wallet: str | None = None, relay: str = "ws%3A%2F%2F127.0.0.1%3A7777") -> str:
    secret = secret or nostr_sdk.Keys.generate().secret_key().to_hex()
    wallet = wallet or nostr_sdk.Keys.generate().public_key().to_hex()
    return f"nostr+walletconnect://{wallet}?relay={relay}&secret={secret}"


def _secret_of(uri: str) -> str:
    return uri.split("secret=")[1].split("&")[0]


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def _write(path: Path, text: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$PYLON_HOME`` (a fresh tmp dir, not created yet), with no NWC URI in the environment."""
    monkeypatch.delenv(URI_ENV, raising=False)
    return Path(os.environ["PYLON_HOME"])


# ─── load_nwc_uri ───


def test_no_uri_anywhere_is_none(home: Path) -> None:
    assert load_nwc_uri() is None
    assert load_nwc_uri(home) is None
    _write(home / "nwc.uri", "\n  \n", 0o600)
    assert load_nwc_uri(home) is None


def test_the_file_is_read_from_pylon_home(home: Path) -> None:
    uri = _uri()
    _write(home / "nwc.uri", f"  {uri}\n", 0o600)
    assert load_nwc_uri() == uri
    assert load_nwc_uri(home) == uri


def test_the_environment_wins_over_the_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env, from_file = _uri(), _uri()
    _write(home / "nwc.uri", from_file, 0o600)
    monkeypatch.setenv(URI_ENV, f" {from_env} ")
    assert load_nwc_uri(home) == from_env
    # Even a file that would be refused is not looked at when the environment has a URI.
    (home / "nwc.uri").chmod(0o644)
    assert load_nwc_uri(home) == from_env
    # A blank variable counts as unset.
    monkeypatch.setenv(URI_ENV, "   ")
    (home / "nwc.uri").chmod(0o600)
    assert load_nwc_uri(home) == from_file


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o601, 0o610, 0o700 | 0o004])
def test_a_file_others_can_read_is_refused_without_showing_the_secret(home: Path, mode: int) -> None:
    uri = _uri()
    path = _write(home / "nwc.uri", uri, mode)
    with pytest.raises(ConfigError) as refused:
        load_nwc_uri(home)
    message = str(refused.value)
    assert f"chmod 600 {path}" in message
    assert f"{mode:o}" in message
    assert _secret_of(uri) not in message and uri not in message
    assert _mode(path) == oct(mode)  # reported, not silently changed


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_is_read(home: Path, mode: int) -> None:
    uri = _uri()
    _write(home / "nwc.uri", uri, mode)
    assert load_nwc_uri(home) == uri


# ─── save_nwc_uri ───


def test_save_writes_a_private_file_that_loads_back(home: Path) -> None:
    uri = _uri()
    path = save_nwc_uri(f"\n{uri}  \n")
    assert path == home / "nwc.uri"
    assert _mode(path) == "0o600"
    assert path.read_text() == uri + "\n"
    assert load_nwc_uri() == uri


def test_save_makes_an_existing_readable_file_private(home: Path) -> None:
    path = _write(home / "nwc.uri", "an older URI", 0o644)
    uri = _uri()
    save_nwc_uri(uri, home)
    assert _mode(path) == "0o600"
    assert load_nwc_uri(home) == uri


def test_save_is_private_whatever_the_umask(home: Path) -> None:
    previous = os.umask(0)
    try:
        path = save_nwc_uri(_uri(), home)
    finally:
        os.umask(previous)
    assert _mode(path) == "0o600"


@pytest.mark.parametrize(
    "bad",
    [
        lambda uri: uri[:-2],  # a secret too short
        lambda uri: uri + "zz",  # not hex
        lambda uri: uri.replace("nostr+walletconnect://", "nostr+walletconnect://0"),  # 65 hex digits
        lambda uri: uri.replace("ws%3A%2F%2F127.0.0.1%3A7777", "notaurl"),
        lambda uri: "nostr+walletconnect://x?" + uri.split("&")[1],  # no wallet key, no relay
        lambda uri: uri.replace("nostr+walletconnect://", "https://"),
        lambda uri: "",
    ],
    ids=["short-secret", "non-hex-secret", "bad-wallet-key", "bad-relay", "no-wallet", "https", "empty"],
)
def test_an_invalid_uri_is_refused_without_showing_the_secret(home: Path, bad: object) -> None:
    uri = _uri()
    secret = _secret_of(uri)
    text = bad(uri)  # type: ignore[operator]
    for attempt in (lambda: parse_nwc_uri(text), lambda: save_nwc_uri(text, home), lambda: NwcWallet(text)):
        with pytest.raises(ConfigError) as refused:
            attempt()
        assert secret[:16] not in str(refused.value) and secret[-16:] not in str(refused.value)
        # No chained exception (from nostr-sdk) would print the URI in a traceback either.
        error = refused.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert not (home / "nwc.uri").exists()


@pytest.mark.parametrize("value", [None, 42, b"nostr+walletconnect://"])
def test_a_uri_that_is_not_text_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="nostr\\+walletconnect://"):
        parse_nwc_uri(value)  # type: ignore[arg-type]


# ─── NwcWallet ───


def test_the_wallet_shows_its_public_parts_only() -> None:
    client = nostr_sdk.Keys.generate()
    wallet_key = nostr_sdk.Keys.generate().public_key().to_hex()
    uri = _uri(client.secret_key().to_hex(), wallet_key)
    wallet = NwcWallet(uri, timeout=3)
    secret = client.secret_key().to_hex()
    for text in (repr(wallet), str(wallet), f"{wallet}", f"{wallet!r}", repr([wallet]), repr({"w": wallet})):
        assert secret not in text and uri not in text
        assert wallet_key[:12] in text
    assert wallet.wallet_pubkey == wallet_key
    assert wallet.relays == (RELAY,)
    assert wallet.client_pubkey == client.public_key().to_hex()
    assert wallet.timeout == 3


# ─── PylonLM ───


def test_the_lm_refuses_a_bad_uri_at_construction() -> None:
    uri = _uri()
    bad = uri[:-3]
    private_key = nostr_sdk.Keys.generate().secret_key().to_hex()
    for model, kwargs in (
        ("pylon:swarm", {"private_key": private_key, "relays": [RELAY]}),
        ("pylon:hybrid", {"private_key": private_key}),
        ("pylon:local", {}),
    ):
        with pytest.raises(ConfigError) as refused:
            pylon.PylonLM(model, nwc_uri=bad, **kwargs)
        assert _secret_of(uri)[:20] not in str(refused.value)
    with pytest.raises(ConfigError, match="nostr\\+walletconnect://"):
        pylon.PylonLM("pylon:hybrid", nwc_uri="lightning:lnbc1", private_key=private_key)


def test_the_lm_keeps_the_uri_out_of_its_state(home: Path) -> None:
    uri = _uri()
    secret = _secret_of(uri)
    lm = pylon.PylonLM("pylon:hybrid", nwc_uri=uri, private_key=nostr_sdk.Keys.generate().secret_key().to_hex())
    try:
        state = json.dumps(lm.dump_state(), default=str)
        for text in (state, repr(lm), str(lm.kwargs), repr(vars(lm)), repr(vars(lm.runtime))):
            assert secret not in text
        assert not (home / "nwc.uri").exists()  # nothing written either
    finally:
        lm.close()
