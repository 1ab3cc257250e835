"""The faster byte copy into nostr-sdk (dspy_pylon.nostr.fast_ffi): same bytes, same results."""

from __future__ import annotations

import json

import nostr_sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr import fast_ffi
from dspy_pylon.nostr.ciphers import Cipher, decrypt, encrypt
from dspy_pylon.nostr.events import from_sdk, sign


def test_the_patch_is_applied_to_the_pinned_version() -> None:
    assert fast_ffi.ensure() is True and fast_ffi.applied()
    from nostr_sdk import nostr_sdk as bindings

    assert bindings._UniffiRustBufferBuilder.write is fast_ffi._write


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=5000))
def test_any_text_crosses_into_rust_and_back_unchanged(text: str) -> None:
    fast_ffi.ensure()
    keys = nostr_sdk.Keys.generate()
    event = sign(1, text, [["t", text[:100]], ["e", "0" * 64]], keys)
    assert event.verify()
    assert event.content() == text and event.tags()[0].to_vec() == ["t", text[:100]]
    raw = from_sdk(event)
    assert raw.content == text and raw.tags == (("t", text[:100]), ("e", "0" * 64))
    assert json.loads(raw.json)["sig"] == event.signature()


@pytest.mark.parametrize("cipher", list(Cipher))
def test_large_payloads_encrypt_and_decrypt_unchanged(cipher: Cipher) -> None:
    fast_ffi.ensure()
    alice, bob = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    text = "é" * 20_000 + "end"  # multi-byte characters, 40 kB (NIP-44's limit is 64 kB)
    payload = encrypt(alice, bob.public_key().to_hex(), text, cipher)
    assert decrypt(bob, alice.public_key().to_hex(), payload) == (text, cipher)


def test_signing_keeps_every_field_and_a_bad_tag_is_a_typed_error() -> None:
    keys = nostr_sdk.Keys.generate()
    event = sign(5050, "", [["i", "hi", "text"], ["param", "max_tokens", "4"]], keys)
    raw = from_sdk(event)
    assert raw.kind == 5050 and raw.pubkey == keys.public_key().to_hex()
    assert raw.tags == (("i", "hi", "text"), ("param", "max_tokens", "4"))
    assert raw.id == event.id().to_hex() and abs(raw.created_at - nostr_sdk.Timestamp.now().as_secs()) <= 2
    with pytest.raises(MalformedEvent):
        sign(1, "x", [[]], keys)  # an empty tag


def test_any_bytes_like_value_still_crosses() -> None:
    """The generated method took any bytes-like value; so does the patched one."""
    fast_ffi.ensure()
    secret = nostr_sdk.Keys.generate().secret_key()
    raw = bytes.fromhex(secret.to_hex())
    for value in (raw, bytearray(raw), memoryview(raw)):
        assert nostr_sdk.SecretKey.from_bytes(value).to_hex() == secret.to_hex()  # type: ignore[arg-type]
