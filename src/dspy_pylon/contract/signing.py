"""Signing a manifest with a Nostr key, and checking such a signature: pure functions.

What is signed is an in-toto Statement (v1) whose subject is ``program.json`` by SHA-256
digest and whose predicate is the manifest without its ``signature`` field; the message is
the SHA-256 of the statement's RFC 8785 canonical JSON, signed with BIP-340 Schnorr — the
signature scheme and key Nostr uses (the NIP-06 key of ``pylon init``), so a signer is
named by its npub. coincurve (libsecp256k1) does the curve work, without nostr-sdk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly

from dspy_pylon.contract.hashing import canonical_json, sha256_hex
from dspy_pylon.contract.manifest import ManifestSignature
from dspy_pylon.plain_errors import ConfigError, SignatureError, SignatureProblem

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://dspy-pylon.dev/compiled-manifest/v1"


def statement(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto statement a manifest's signature covers (``manifest`` as JSON, signature ignored)."""
    predicate = {key: value for key, value in manifest.items() if key != "signature"}
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "program.json", "digest": {"sha256": predicate.get("program_sha256")}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def _message(manifest: Mapping[str, Any]) -> bytes:
    return bytes.fromhex(sha256_hex(canonical_json(statement(manifest))))


def sign_manifest(manifest: Mapping[str, Any], secret: bytes) -> ManifestSignature:
    """A signature of ``manifest`` (JSON form) by the 32-byte Nostr secret key ``secret``."""
    if not isinstance(secret, bytes) or len(secret) != 32:
        raise ConfigError("a manifest is signed with a 32-byte secret key (an Identity's .secret)")
    key = PrivateKey(secret)
    public_key = key.public_key_xonly.format().hex()
    return ManifestSignature(public_key=public_key, sig=key.sign_schnorr(_message(manifest)).hex())


def verify_signature(manifest: Mapping[str, Any], signature: ManifestSignature) -> str:
    """Check ``signature`` over ``manifest`` (JSON form); returns the signer's public key (hex).

    Raises :class:`SignatureError` when it does not verify.
    """
    try:
        valid = PublicKeyXOnly(bytes.fromhex(signature.public_key)).verify(
            bytes.fromhex(signature.sig), _message(manifest)
        )
    except ValueError:
        valid = False
    if not valid:
        raise SignatureError(
            f"the manifest's signature by {signature.public_key} does not verify: "
            "the manifest or program.json was changed after signing",
            problem=SignatureProblem.INVALID,
            signer=signature.public_key,
        )
    return signature.public_key


def signer_keys(signers: Iterable[str] | str) -> frozenset[str]:
    """Trusted signers given as npubs or 64-hex public keys, as hex; a bad one is a :class:`ConfigError`."""
    from dspy_pylon.nip06 import public_key_from_npub

    if isinstance(signers, str):  # one signer given bare, not in a list
        signers = (signers,)
    keys = set()
    for signer in signers:
        text = signer.strip()
        if text.startswith("npub1"):
            keys.add(public_key_from_npub(text))
        elif len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            keys.add(text.lower())
        else:
            raise ConfigError(f"{signer!r} is not a signer: give an npub1... or a 64-hex public key")
    return frozenset(keys)
