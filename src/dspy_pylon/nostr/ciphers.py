"""The two encryptions NIP-90 peers use for private jobs: NIP-44 (v2) and NIP-04.

NIP-90's text names NIP-04; nostr-dvm writes NIP-44 and reads both; pylon reads both and
answers in the scheme a request used. A customer writes NIP-44 only to a provider whose
announcement says it reads it (see :mod:`dspy_pylon.nostr.nip89`), NIP-04 otherwise.

The scheme of a payload is told by its format, not by trying keys: NIP-04 is
``<base64>?iv=<base64>`` (NIP-04 text), NIP-44 a single base64 payload with no ``?``.
nostr-sdk does the cryptography (``Keys.nip44_encrypt`` / ``nip04_encrypt`` and the
decrypting pair).
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from dspy_pylon.nostr import fast_ffi
from dspy_pylon.plain_errors import MalformedEvent

__all__ = ["Cipher", "cipher_of", "decrypt", "encrypt"]


class Cipher(enum.StrEnum):
    """An encryption scheme for a job's private payload."""

    NIP44 = "nip44"
    NIP04 = "nip04"


def cipher_of(payload: str) -> Cipher:
    """The scheme ``payload`` is written in (by its format)."""
    return Cipher.NIP04 if "?iv=" in payload else Cipher.NIP44


@functools.lru_cache(maxsize=4096)  # a job's peer recurs for each event; a parse is an FFI call
def _public_key(hex_key: str) -> Any:
    import nostr_sdk

    fast_ffi.ensure()  # the payloads cross into Rust byte by byte otherwise
    try:
        return nostr_sdk.PublicKey.parse(hex_key)
    except Exception as exc:  # nostr-sdk raises its own error type
        raise MalformedEvent("the peer's public key is invalid") from exc


def encrypt(keys: Any, recipient: str, plaintext: str, cipher: Cipher) -> str:
    """``plaintext`` encrypted from ``keys`` to the hex public key ``recipient``."""
    import nostr_sdk

    peer = _public_key(recipient)
    try:
        if cipher is Cipher.NIP04:
            return str(keys.nip04_encrypt(peer, plaintext))
        return str(keys.nip44_encrypt(peer, plaintext))
    except nostr_sdk.NostrSdkError as exc:  # NIP-44 takes at most 65,535 bytes of plaintext
        raise MalformedEvent(f"cannot encrypt {len(plaintext.encode())} bytes with {cipher.value}: {exc}") from None


def decrypt(keys: Any, author: str, payload: str) -> tuple[str, Cipher]:
    """The plaintext of ``payload`` written by hex public key ``author`` to ``keys``, and its scheme.

    :class:`~dspy_pylon.errors.MalformedEvent` when there is no key to decrypt with or the
    payload does not decrypt.
    """
    if keys is None:
        raise MalformedEvent("the event is encrypted and no key was given to decrypt it")
    peer = _public_key(author)
    cipher = cipher_of(payload)
    try:
        if cipher is Cipher.NIP04:
            return str(keys.nip04_decrypt(peer, payload)), cipher
        return str(keys.nip44_decrypt(peer, payload)), cipher
    except Exception as exc:  # nostr-sdk raises its own error type
        raise MalformedEvent(f"encrypted content could not be decrypted with our key ({cipher.value})") from exc
