"""The part of pylon's one exception hierarchy that needs no DSPy.

:mod:`dspy_pylon.errors` re-exports every class here beside the ones that also derive
from ``dspy.lm15`` errors. These live apart so the CLI's quick commands (``--help``,
``identity``, ``init``, ``spend``) and the configuration parse without importing DSPy
(about a second of start-up).
"""

from __future__ import annotations

import enum
from typing import Any


class PylonError(Exception):
    """Base class of every error raised by dspy-pylon.

    Keyword arguments (``provider``, ``status``, ``feature``...) pass through to the
    ``dspy.lm15`` error a subclass also derives from.
    """

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class ConfigError(PylonError, ValueError):
    """A configuration value is invalid; the message says what is allowed."""


class InvalidModelString(ConfigError):
    """A model string is not one of the ``pylon:...`` / ``pylon/...`` forms."""


class MalformedEvent(PylonError, ValueError):
    """A Nostr event does not follow the protocol (NIP-90, NIP-89): the message says what is wrong."""


class IdentityError(ConfigError):
    """The Nostr identity (mnemonic file, private key) cannot be used; the message says what to do.

    Messages name files and word positions, never a mnemonic or a secret key.
    """


class IdentityMissing(IdentityError):
    """No identity file exists yet: run ``pylon init`` (or point ``PYLON_HOME`` at an existing one)."""


class InvalidMnemonic(IdentityError):
    """A BIP-39 mnemonic is malformed: wrong word count, an unknown word, or a bad checksum."""


class StoreError(PylonError):
    """A local store under ``$PYLON_HOME`` (the spend ledger) cannot be opened, read or upgraded.

    Nothing in it was changed; the message says which file and why.
    """


class WalletError(PylonError):
    """A Nostr Wallet Connect request failed: the wallet's error code and message, or no answer.

    ``code`` is the NIP-47 error code (``INSUFFICIENT_BALANCE``, ``NOT_FOUND``...) or ``TIMEOUT``.
    """

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        return (WalletError, (str(self), self.code))


__all__ = [
    "ConfigError",
    "IdentityError",
    "IdentityMissing",
    "InvalidMnemonic",
    "InvalidModelString",
    "MalformedEvent",
    "PylonError",
    "WalletError",
]


def _rebuilt(cls: type[Exception], message: str, state: dict[str, Any]) -> Exception:
    # Unpickling an error whose __init__ takes keyword-only details: its message, then its details.
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class _KeepsDetails:
    """Pickles (and so crosses process pools) with its keyword-only details."""

    def __reduce__(self) -> Any:
        return (_rebuilt, (type(self), str(self), dict(self.__dict__)))


class ManifestError(PylonError, ValueError):
    """A compiled program's ``manifest.json`` or ``program.json`` cannot be read or written: missing,
    truncated, not JSON, wrong types, or a schema version this dspy-pylon does not know. Nothing
    was loaded (or left half written)."""


class IntegrityProblem(enum.StrEnum):
    """What did not match (:attr:`IntegrityError.reason`)."""

    PROGRAM_DIGEST = "program-digest"  # program.json's bytes are not the manifest's program_sha256
    COMPILED_ID = "compiled-id"  # program.json's artifact hashes to another compiled_id
    STRUCTURE = "structure"  # the manifest describes other predictors than program.json holds
    SHAPE = "shape"  # the program given is not the one compiled (other predictors, fields or types)
    RELOADED = "reloaded"  # the loaded program hashes to another compiled_id than the manifest's
    CHANGED = "changed"  # the program changed after its manifest was made (at save)
    SIGNATURE = "signature"  # see SignatureError.problem


class SignatureProblem(enum.StrEnum):
    """Why a signature was refused (:attr:`SignatureError.problem`)."""

    INVALID = "invalid"  # it does not verify over the manifest as written
    UNSIGNED = "unsigned"  # none, where one is required
    UNTRUSTED = "untrusted"  # valid, by a key not among the trusted signers


class IntegrityError(_KeepsDetails, ManifestError):
    """A compiled program does not match its manifest. ``reason`` says what
    (:class:`IntegrityProblem`); ``expected`` and ``actual`` name both values (``compiled_id``s
    or ``program.json`` digests). The files were changed after they were written."""

    def __init__(self, message: str, *, reason: IntegrityProblem, expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.expected = expected
        self.actual = actual


class SignatureError(IntegrityError):
    """A manifest's signature is invalid, missing where one is required, or by a key not trusted
    (``problem``, a :class:`SignatureProblem`). ``signer`` is the signing public key (hex) when
    the manifest carries one."""

    def __init__(self, message: str, *, problem: SignatureProblem, signer: str | None = None) -> None:
        super().__init__(message, reason=IntegrityProblem.SIGNATURE)
        self.problem = problem
        self.signer = signer


class CompatibilityError(_KeepsDetails, PylonError):
    """A compiled program's requirements are not met by this runtime. ``unmet`` lists **every**
    requirement that failed (:class:`dspy_pylon.contract.compatibility.Unmet`), not only the first."""

    def __init__(self, message: str, *, unmet: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.unmet = unmet


class SandboxError(_KeepsDetails, PylonError, ValueError):
    """A sandbox request or response is not valid (the message names the field and why; ``loc``
    is its path, ``detail`` the reason), or a job cannot be run as asked."""

    def __init__(self, message: str, *, loc: tuple[str, ...] = (), detail: str = "") -> None:
        super().__init__(message)
        self.loc = loc
        self.detail = detail


class SandboxRefused(SandboxError):
    """This host cannot enforce the isolation or limits a sandbox job asks for (no memory
    controller, no delegated cgroup, no bubblewrap, a network policy the node does not allow...),
    so the job is refused rather than run weaker. ``missing`` names each thing that is lacking."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message, detail="; ".join(missing))
        self.missing = missing
