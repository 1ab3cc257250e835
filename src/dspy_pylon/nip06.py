"""NIP-06 key derivation and NIP-19 ``npub`` encoding without nostr-sdk.

Why not nostr-sdk's ``Keys.from_mnemonic``: importing nostr-sdk takes ~140 ms, half the
300 ms the CLI's quick commands (``pylon identity``, ``pylon init``) may take, and it hashes
a BIP-39 passphrase as typed where BIP-39 says NFKD. The derivation is short and standard —
BIP-39 seed (the ``mnemonic`` package, which normalises), BIP-32 private derivation along
``m/44'/1237'/<account>'/0/0`` with libsecp256k1 (``coincurve``), bech32 from the ``bech32``
package — and the tests check it against the NIP-06 vectors and against nostr-sdk on random
phrases, accounts and passphrases. It is pylon's only derivation
(:func:`dspy_pylon.identity.keys_from_mnemonic` builds its ``Keys`` from it).

Callers validate the phrase first (:func:`dspy_pylon.identity.validate_mnemonic`).
"""

from __future__ import annotations

import hashlib
import hmac

from dspy_pylon.plain_errors import IdentityError

__all__ = ["npub", "public_key_from_npub", "public_key_hex", "secret_from_mnemonic"]

_HARDENED = 0x8000_0000
# The order of secp256k1's group: BIP-32 adds keys modulo it.
_N = 0xFFFFFFFF_FFFFFFFF_FFFFFFFF_FFFFFFFE_BAAEDCE6_AF48A03B_BFD25E8C_D0364141
MAX_ACCOUNT = _HARDENED - 1  # NIP-06 derives the account as a hardened BIP-32 child


def secret_from_mnemonic(words: str, passphrase: str = "", account: int = 0) -> bytes:
    """The 32-byte secret key NIP-06 derives from a (validated, normalised) BIP-39 phrase.

    :class:`~dspy_pylon.errors.IdentityError` for an account outside ``0..2**31-1``.
    """
    from mnemonic import Mnemonic

    if isinstance(account, bool) or not isinstance(account, int) or not 0 <= account <= MAX_ACCOUNT:
        raise IdentityError(f"NIP-06 account must be a whole number from 0 to {MAX_ACCOUNT}, not {account!r}")
    seed = Mnemonic.to_seed(words, passphrase)
    digest = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    key, chain = digest[:32], digest[32:]
    _check(int.from_bytes(key, "big"))  # BIP-32: the master key too must be in 1..n-1
    for index in (44 | _HARDENED, 1237 | _HARDENED, account | _HARDENED, 0, 0):
        key, chain = _child(key, chain, index)
    return key


def _child(key: bytes, chain: bytes, index: int) -> tuple[bytes, bytes]:
    if index & _HARDENED:
        data = b"\x00" + key
    else:
        from coincurve import PrivateKey

        data = PrivateKey(key).public_key.format(compressed=True)
    digest = hmac.new(chain, data + index.to_bytes(4, "big"), hashlib.sha512).digest()
    tweak = int.from_bytes(digest[:32], "big")
    child = (tweak + int.from_bytes(key, "big")) % _N
    _check(child if tweak < _N else 0)  # BIP-32: IL >= n or a zero child gives no key
    return child.to_bytes(32, "big"), digest[32:]


def _check(value: int) -> None:
    if not 0 < value < _N:
        # BIP-32: no key here (probability about 2**-127); NIP-06 names no fallback index.
        raise IdentityError("this mnemonic derives no valid NIP-06 key (BIP-32 hit an invalid key); use another")


def public_key_hex(secret: bytes) -> str:
    """The BIP-340 (x-only) public key of ``secret``: 64 lower-case hex characters."""
    from coincurve import PrivateKey

    return PrivateKey(secret).public_key.format(compressed=True)[1:].hex()


def npub(public_key: str) -> str:
    """NIP-19: a hex public key as ``npub1...`` (bech32, not bech32m)."""
    from bech32 import bech32_encode, convertbits

    words = convertbits(bytes.fromhex(public_key), 8, 5)
    assert words is not None  # 32 bytes always convert
    return str(bech32_encode("npub", words))


def public_key_from_npub(value: str) -> str:
    """NIP-19: ``npub1...`` as a 64-hex public key; anything else is a :class:`ConfigError`."""
    from bech32 import bech32_decode, convertbits

    from dspy_pylon.plain_errors import ConfigError

    hrp, words = bech32_decode(value.strip().lower())
    data = convertbits(words, 5, 8, False) if words is not None else None
    if hrp != "npub" or data is None or len(data) != 32:
        raise ConfigError(f"{value!r} is not a valid npub (NIP-19 public key)")
    return bytes(data).hex()
