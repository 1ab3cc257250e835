"""Identity layer: BIP-39 mnemonic -> NIP-06 keys, the identity file, and the two CLI commands.

Everything is real: nostr-sdk derives the keys, PyPI ``mnemonic`` holds the wordlist, the CLI
runs as a subprocess. The autouse ``closed_backends`` fixture points ``PYLON_HOME`` at a
per-test temporary directory, so nothing here touches the user's home.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mnemonic import Mnemonic
from nostr_sdk import Keys, NostrSdkError

from dspy_pylon import nip06
from dspy_pylon.errors import ConfigError, IdentityError, IdentityMissing, InvalidMnemonic, PylonError
from dspy_pylon.identity import (
    Identity,
    generate_mnemonic,
    identity_path,
    init_identity,
    keys_from_mnemonic,
    load_identity,
    pylon_home,
    resolve_keys,
    validate_mnemonic,
)
from tests.cli_run import Ran, run_pylon

# NIP-06 spec vectors (https://github.com/nostr-protocol/nips/blob/master/06.md).
VECTOR_12 = "leader monkey parrot ring guide accident before fence cannon height naive bean"
VECTOR_12_SECRET = "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a"
VECTOR_12_NPUB = "npub1zutzeysacnf9rru6zqwmxd54mud0k44tst6l70ja5mhv8jjumytsd2x7nu"
VECTOR_24 = (
    "what bleak badge arrange retreat wolf trade produce cricket blur garlic valid proud rude strong choose "
    "busy staff weather area salt hollow arm fade"
)
VECTOR_24_SECRET = "c15d739894c81a2fcfd3a2df85a0d2c0dbc47a280d092799f144d73d7ae78add"
VECTOR_24_NPUB = "npub16sdj9zv4f8sl85e45vgq9n7nsgt5qphpvmf7vk8r5hhvmdjxx4es8rq74h"

WORDLIST = Mnemonic("english").wordlist


def _secrets_of(words: str) -> list[str]:
    """Every form of the secret derived from ``words`` that must never be shown."""
    keys = keys_from_mnemonic(words)
    return [words, keys.secret_key().to_hex(), keys.secret_key().to_bech32()]


# --- derivation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "secret_hex", "npub"),
    [(VECTOR_12, VECTOR_12_SECRET, VECTOR_12_NPUB), (VECTOR_24, VECTOR_24_SECRET, VECTOR_24_NPUB)],
)
def test_nip06_spec_vectors(words: str, secret_hex: str, npub: str) -> None:
    keys = keys_from_mnemonic(words)
    assert keys.secret_key().to_hex() == secret_hex
    assert keys.public_key().to_bech32() == npub


@pytest.mark.parametrize(
    ("words", "secret_hex", "npub"),
    [(VECTOR_12, VECTOR_12_SECRET, VECTOR_12_NPUB), (VECTOR_24, VECTOR_24_SECRET, VECTOR_24_NPUB)],
)
def test_nip06_spec_vectors_without_nostr_sdk(words: str, secret_hex: str, npub: str) -> None:
    secret = nip06.secret_from_mnemonic(words)
    assert secret.hex() == secret_hex
    assert nip06.npub(nip06.public_key_hex(secret)) == npub


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([16, 20, 24, 28, 32]).flatmap(lambda size: st.binary(min_size=size, max_size=size)),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.text(alphabet="abcXYZ019 -_", max_size=12),
)
def test_nip06_agrees_with_nostr_sdk(entropy: bytes, account: int, passphrase: str) -> None:
    """Any phrase, account and (ASCII) passphrase: the same keys as nostr-sdk's ``Keys.from_mnemonic``."""
    words = Mnemonic("english").to_mnemonic(entropy)
    keys = Keys.from_mnemonic(words, passphrase, account)
    secret = nip06.secret_from_mnemonic(words, passphrase, account)
    assert secret.hex() == keys.secret_key().to_hex()
    assert nip06.public_key_hex(secret) == keys.public_key().to_hex()
    assert nip06.npub(nip06.public_key_hex(secret)) == keys.public_key().to_bech32()


def test_nip06_normalises_a_passphrase_as_bip39_says() -> None:
    """BIP-39 hashes the NFKD form of the passphrase: a composed and a decomposed "ä" give one key
    (nostr-sdk 0.45.1's ``Keys.from_mnemonic`` hashes it as typed; it agrees on the NFKD form)."""
    composed, decomposed = "p\u00e4ss", "pa\u0308ss"
    assert nip06.secret_from_mnemonic(VECTOR_12, composed) == nip06.secret_from_mnemonic(VECTOR_12, decomposed)
    sdk = Keys.from_mnemonic(VECTOR_12, decomposed).secret_key().to_hex()
    assert nip06.secret_from_mnemonic(VECTOR_12, decomposed).hex() == sdk
    assert keys_from_mnemonic(VECTOR_12, composed).secret_key().to_hex() == sdk


def test_a_loaded_identity_never_pickles(tmp_path: Path) -> None:
    import copy
    import pickle

    init_identity(tmp_path, words=VECTOR_12)
    identity = load_identity(tmp_path)
    assert identity.npub == VECTOR_12_NPUB and identity.keys.secret_key().to_hex() == VECTOR_12_SECRET
    with pytest.raises(IdentityError, match="never pickled"):
        pickle.dumps(identity)
    assert copy.deepcopy(identity) is identity and copy.copy(identity) is identity


def test_an_identity_hands_its_secret_out_only_when_asked(tmp_path: Path) -> None:
    """Nothing generic (asdict, vars, repr, ==) exposes or compares the secret."""
    import dataclasses

    init_identity(tmp_path, words=VECTOR_12)
    identity = load_identity(tmp_path)
    assert VECTOR_12_SECRET not in repr(identity) and VECTOR_12_SECRET not in str(identity)
    with pytest.raises(TypeError):
        dataclasses.asdict(identity)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        vars(identity)
    with pytest.raises(AttributeError):
        identity.path = None  # type: ignore[misc]
    same = load_identity(tmp_path)
    assert same == identity and hash(same) == hash(identity)
    assert identity.secret.hex() == VECTOR_12_SECRET  # the explicit accessor
    with pytest.raises(IdentityError, match="32-byte"):
        type(identity)(b"short")


def test_derivation_normalises_case_and_whitespace() -> None:
    messy = "  " + VECTOR_12.upper().replace(" ", " \t\n ") + "\n"
    assert keys_from_mnemonic(messy).secret_key().to_hex() == VECTOR_12_SECRET


def test_account_and_passphrase_change_the_keys() -> None:
    base = keys_from_mnemonic(VECTOR_12).public_key().to_hex()
    assert keys_from_mnemonic(VECTOR_12, account=1).public_key().to_hex() != base
    assert keys_from_mnemonic(VECTOR_12, passphrase="extra").public_key().to_hex() != base
    assert keys_from_mnemonic(VECTOR_12, passphrase="").public_key().to_hex() == base


@pytest.mark.parametrize("account", [-1, 2**31, True, "1", 1.0])
def test_account_out_of_range(account: Any) -> None:
    with pytest.raises(IdentityError, match="account"):
        keys_from_mnemonic(VECTOR_12, account=account)


def test_a_phrase_that_derives_no_valid_key_is_an_identity_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """BIP-32 gives no key when a step lands outside 1..n-1 (odds ~2**-127, so the group order
    is shrunk here to make every step land there): a typed error, not a ValueError."""
    monkeypatch.setattr(nip06, "_N", 1)
    with pytest.raises(IdentityError, match="no valid NIP-06 key"):
        keys_from_mnemonic(VECTOR_12)


@pytest.mark.parametrize(("strength", "count"), [(128, 12), (160, 15), (192, 18), (224, 21), (256, 24)])
def test_generate_mnemonic(strength: int, count: int) -> None:
    words = generate_mnemonic(strength)
    assert len(words.split()) == count
    assert validate_mnemonic(words) == words
    assert generate_mnemonic(strength) != words


def test_generate_default_is_12_words_and_bad_strength_refused() -> None:
    assert len(generate_mnemonic().split()) == 12
    with pytest.raises(IdentityError, match="128, 160, 192, 224, 256"):
        generate_mnemonic(100)


# --- validation -------------------------------------------------------------------------------


def test_validate_returns_normalised_phrase() -> None:
    assert validate_mnemonic("\n" + VECTOR_12.title().replace(" ", "   ") + "  ") == VECTOR_12


@pytest.mark.parametrize("count", [0, 1, 11, 13, 23, 25])
def test_wrong_word_count(count: int) -> None:
    words = " ".join((VECTOR_24.split() * 2)[:count])
    with pytest.raises(InvalidMnemonic) as info:
        validate_mnemonic(words)
    message = str(info.value)
    assert "12, 15, 18, 21, 24" in message
    assert f"not {count}" in message
    if count > 1:
        assert words not in message


def test_unknown_word_is_named_but_phrase_is_not() -> None:
    words = VECTOR_12.replace("fence", "fennec")
    with pytest.raises(InvalidMnemonic) as info:
        validate_mnemonic(words)
    message = str(info.value)
    assert "'fennec'" in message
    assert "word 8" in message
    assert "leader" not in message and "bean" not in message


def test_only_the_first_unknown_word_is_named() -> None:
    words = VECTOR_12.replace("monkey", "monkee").replace("bean", "beanz")
    with pytest.raises(InvalidMnemonic) as info:
        validate_mnemonic(words)
    assert "monkee" in str(info.value)
    assert "beanz" not in str(info.value)


def test_bad_checksum() -> None:
    words = VECTOR_12.rsplit(" ", 1)[0] + " zoo"  # every word valid, checksum not
    assert not Mnemonic("english").check(words)
    with pytest.raises(InvalidMnemonic, match="checksum") as info:
        validate_mnemonic(words)
    assert "leader" not in str(info.value) and "zoo" not in str(info.value)


def test_error_hierarchy() -> None:
    assert issubclass(InvalidMnemonic, ConfigError)
    assert issubclass(IdentityError, ConfigError)
    assert issubclass(IdentityMissing, IdentityError)
    assert issubclass(IdentityError, PylonError)
    assert issubclass(IdentityError, ValueError)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(WORDLIST), st.sampled_from(WORDLIST), st.text(max_size=12)),
        max_size=30,
    ),
    st.sampled_from([" ", "  ", "\n", "\t "]),
)
def test_validate_raises_only_invalid_mnemonic(words: list[str], separator: str) -> None:
    phrase = separator.join(words)
    try:
        normalised = validate_mnemonic(phrase)
    except InvalidMnemonic as exc:
        tokens = phrase.split()
        if len(tokens) >= 3:  # one or two tokens may be the unknown word the message names
            assert " ".join(tokens) not in str(exc)
    else:
        assert len(normalised.split()) in (12, 15, 18, 21, 24)
        assert Mnemonic("english").check(normalised)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.sampled_from([12, 15, 18, 21, 24]), st.integers(min_value=0, max_value=30)).flatmap(
        lambda n: st.lists(st.sampled_from(WORDLIST), min_size=n, max_size=n)
    )
)
def test_random_wordlist_phrases_agree_with_nostr_sdk(words: list[str]) -> None:
    """Wordlist-only phrases: only InvalidMnemonic, and exactly when nostr-sdk refuses them too."""
    phrase = " ".join(words)
    try:
        Keys.from_mnemonic(phrase)
        sdk_accepts = True
    except NostrSdkError:
        sdk_accepts = False
    try:
        validate_mnemonic(phrase)
    except InvalidMnemonic as exc:
        assert not sdk_accepts
        assert len(words) not in (12, 15, 18, 21, 24) or "checksum" in str(exc)
    else:
        assert sdk_accepts
        assert keys_from_mnemonic(phrase).public_key().to_hex() == Keys.from_mnemonic(phrase).public_key().to_hex()


# --- paths ------------------------------------------------------------------------------------


def test_pylon_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYLON_HOME", str(tmp_path / "elsewhere"))
    assert pylon_home() == tmp_path / "elsewhere"
    assert identity_path() == tmp_path / "elsewhere" / "identity.mnemonic"
    assert identity_path(tmp_path) == tmp_path / "identity.mnemonic"
    monkeypatch.delenv("PYLON_HOME")
    assert pylon_home() == Path.home() / ".openagents" / "pylon"
    monkeypatch.setenv("PYLON_HOME", "")
    assert pylon_home() == Path.home() / ".openagents" / "pylon"


# --- the identity file ------------------------------------------------------------------------


def test_init_creates_private_file_and_dir(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    path = init_identity(home)
    assert path == home / "identity.mnemonic"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    words = path.read_text()
    assert words.endswith("\n")
    assert validate_mnemonic(words) == words.strip()
    assert len(words.split()) == 12
    assert sorted(p.name for p in home.iterdir()) == ["identity.mnemonic"]  # no temporary file left


def test_init_uses_pylon_home_and_keeps_existing_dir_mode(tmp_path: Path) -> None:
    home = pylon_home()  # set by the autouse fixture
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    path = init_identity()
    assert path == home / "identity.mnemonic"
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # not ours to change
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_init_with_given_words(tmp_path: Path) -> None:
    path = init_identity(tmp_path, words=VECTOR_12.upper())
    assert path.read_text() == VECTOR_12 + "\n"
    assert load_identity(tmp_path).npub == VECTOR_12_NPUB


def test_init_validates_given_words_before_writing(tmp_path: Path) -> None:
    with pytest.raises(InvalidMnemonic):
        init_identity(tmp_path / "home", words=VECTOR_12.replace("bean", "zoo"))
    assert not (tmp_path / "home").exists()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path = init_identity(tmp_path)
    original = path.read_bytes()
    with pytest.raises(IdentityError, match="will not be overwritten") as info:
        init_identity(tmp_path, words=VECTOR_24)
    assert str(path) in str(info.value)
    assert original.decode().strip() not in str(info.value)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.mnemonic"]


def test_init_refuses_to_overwrite_any_file_even_a_broken_one(tmp_path: Path) -> None:
    path = tmp_path / "identity.mnemonic"
    path.write_bytes(b"\x00not a mnemonic\xff")
    with pytest.raises(IdentityError):
        init_identity(tmp_path)
    assert path.read_bytes() == b"\x00not a mnemonic\xff"


def test_load_round_trip(tmp_path: Path) -> None:
    path = init_identity(tmp_path)
    words = path.read_text()
    identity = load_identity(tmp_path)
    expected = keys_from_mnemonic(words)
    assert identity.npub == expected.public_key().to_bech32()
    assert identity.public_key_hex == expected.public_key().to_hex()
    assert identity.keys.secret_key().to_hex() == expected.secret_key().to_hex()
    assert identity.path == path
    assert load_identity(tmp_path).npub == identity.npub


def test_identity_repr_shows_no_secret(tmp_path: Path) -> None:
    init_identity(tmp_path, words=VECTOR_12)
    identity = load_identity(tmp_path)
    for text in (repr(identity), str(identity), f"{identity}", repr([identity])):
        assert VECTOR_12_NPUB in text
        for secret in _secrets_of(VECTOR_12):
            assert secret not in text
        for word in ("leader", "monkey", "parrot"):
            assert word not in text
    with pytest.raises(AttributeError):
        identity.path = None  # type: ignore[misc]  # frozen
    assert isinstance(identity, Identity)


def test_load_missing_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(IdentityMissing, match="pylon init") as info:
        load_identity(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "identity.mnemonic") in str(info.value)


def test_load_warns_about_loose_permissions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = init_identity(tmp_path, words=VECTOR_12)
    with caplog.at_level(logging.WARNING, logger="dspy_pylon.identity"):
        assert load_identity(tmp_path).npub == VECTOR_12_NPUB
    assert not caplog.records
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="dspy_pylon.identity"):
        assert load_identity(tmp_path).npub == VECTOR_12_NPUB
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert f"chmod 600 {path}" in message
    for secret in _secrets_of(VECTOR_12):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello world\n", "words"),
        (VECTOR_12.replace("fence", "fennec").encode(), "wordlist"),
        (VECTOR_12.rsplit(" ", 1)[0].encode() + b" zoo\n", "checksum"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"", "not 0"),
        (b"abandon " * 1000, "larger"),
    ],
)
def test_load_corrupted_file_names_path_not_content(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "identity.mnemonic"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(InvalidMnemonic) as info:
        load_identity(tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert reason in message
    for word in ("hello", "leader", "fennec", "zoo", "garbage"):
        assert word not in message


# --- resolve_keys -----------------------------------------------------------------------------


def test_resolve_keys_precedence() -> None:
    init_identity(words=VECTOR_12)  # the identity file, in PYLON_HOME
    other = Keys.generate()
    other_hex = other.secret_key().to_hex()
    vector_24_pub = keys_from_mnemonic(VECTOR_24).public_key().to_hex()

    assert resolve_keys(mnemonic=VECTOR_24, private_key=other_hex).public_key().to_hex() == vector_24_pub
    assert resolve_keys(private_key=other_hex).public_key().to_hex() == other.public_key().to_hex()
    nsec = other.secret_key().to_bech32()
    assert resolve_keys(private_key=f"  {nsec}\n").public_key().to_hex() == other.public_key().to_hex()
    assert resolve_keys().public_key().to_bech32() == VECTOR_12_NPUB


def test_resolve_keys_explicit_home(tmp_path: Path) -> None:
    init_identity(tmp_path, words=VECTOR_24)
    assert resolve_keys(home=tmp_path).public_key().to_bech32() == VECTOR_24_NPUB
    with pytest.raises(IdentityMissing):
        resolve_keys()  # PYLON_HOME has no identity


def test_resolve_keys_bad_mnemonic_is_invalid_mnemonic() -> None:
    with pytest.raises(InvalidMnemonic):
        resolve_keys(mnemonic=VECTOR_12.rsplit(" ", 1)[0], private_key=Keys.generate().secret_key().to_hex())


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0" * 64,  # zero is not a valid secp256k1 secret
        "f" * 64,  # above the curve order
        "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9",  # 63 hex characters
        "nsec1notreallyabech32string",
        VECTOR_12_NPUB,  # a public key cannot sign
        "zz" * 32,
    ],
)
def test_resolve_keys_bad_private_key(bad: str) -> None:
    with pytest.raises(IdentityError, match="private key is not valid") as info:
        resolve_keys(private_key=bad)
    if bad:
        assert bad not in str(info.value)
        assert bad not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- CLI --------------------------------------------------------------------------------------


def _pylon(*args: str, home: Path, stdin: str | None = None) -> Ran:
    """``pylon *args`` in-process with ``$PYLON_HOME`` at ``home``."""
    return run_pylon(*args, env={"PYLON_HOME": str(home)}, stdin=stdin)


def _pylon_process(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m dspy_pylon.cli *args`` as its own process (what logging prints reaches stderr there)."""
    return subprocess.run(
        [sys.executable, "-m", "dspy_pylon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYLON_HOME": str(home)},
    )


def _field(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{name}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"no {name!r} line in {output!r}")


def test_cli_init_then_identity(tmp_path: Path) -> None:
    home = tmp_path / "cli-home"
    created = _pylon("init", home=home)
    assert created.returncode == 0, created.stderr
    path = home / "identity.mnemonic"
    assert _field(created.stdout, "identity") == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    words = path.read_text().strip()
    secrets = _secrets_of(words)
    npub = _field(created.stdout, "npub")
    assert npub == keys_from_mnemonic(words).public_key().to_bech32()
    assert "cat " in created.stdout  # says how to see the words
    for secret in secrets:  # without --show-words the words stay in the file
        assert secret not in created.stdout + created.stderr

    shown = _pylon("identity", home=home)
    assert shown.returncode == 0, shown.stderr
    assert _field(shown.stdout, "npub") == npub
    assert _field(shown.stdout, "public key (hex)") == keys_from_mnemonic(words).public_key().to_hex()
    for secret in secrets:
        assert secret not in shown.stdout + shown.stderr

    again = _pylon("init", "--show-words", home=home)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert path.read_text().strip() == words
    for secret in secrets:
        assert secret not in again.stdout + again.stderr


def test_cli_init_show_words_prints_them_once(tmp_path: Path) -> None:
    created = _pylon("init", "--show-words", home=tmp_path)
    assert created.returncode == 0, created.stderr
    words = (tmp_path / "identity.mnemonic").read_text().strip()
    assert created.stdout.count(words) == 1
    assert "WRITE THESE WORDS DOWN" in created.stdout
    keys = keys_from_mnemonic(words)
    assert keys.secret_key().to_hex() not in created.stdout
    assert keys.secret_key().to_bech32() not in created.stdout


def test_cli_init_restore(tmp_path: Path) -> None:
    restored = _pylon("init", "--restore", home=tmp_path, stdin=VECTOR_24 + "\n")
    assert restored.returncode == 0, restored.stderr
    assert _field(restored.stdout, "npub") == VECTOR_24_NPUB
    assert VECTOR_24 not in restored.stdout + restored.stderr

    bad = _pylon("init", "--restore", home=tmp_path / "other", stdin=VECTOR_12.replace("bean", "zoo") + "\n")
    assert bad.returncode != 0
    assert "checksum" in bad.stderr
    assert not (tmp_path / "other" / "identity.mnemonic").exists()


def test_cli_identity_missing(tmp_path: Path) -> None:
    result = _pylon("identity", home=tmp_path / "empty")
    assert result.returncode != 0
    assert "pylon init" in result.stderr
    assert not (tmp_path / "empty").exists()  # looking does not create anything


def test_cli_identity_warns_about_permissions(tmp_path: Path) -> None:
    path = init_identity(tmp_path, words=VECTOR_12)
    os.chmod(path, 0o640)
    result = _pylon_process("identity", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _field(result.stdout, "npub") == VECTOR_12_NPUB
    assert "chmod 600" in result.stderr
    for secret in _secrets_of(VECTOR_12):
        assert secret not in result.stdout + result.stderr
