"""One exception hierarchy for dspy-pylon.

Every error is a :class:`PylonError`. Errors raised while an LM call runs also derive
from the matching ``dspy.lm15`` error class, so DSPy's retry loop treats them right:
transient failures (a backend that dropped the connection, a timeout, a 5xx) are
retried with backoff; configuration, model and (later) budget or payment errors are
never retried. DSPy wraps them in its own ``dspy.utils.exceptions.LM*Error`` classes;
the original pylon error is kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

from dspy import lm15


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


class NoLocalBackend(PylonError, lm15.NotConfiguredError):
    """No local model server answered; the message names every URL probed (never retried)."""


class BackendConnectionError(PylonError, lm15.TransportError):
    """A backend dropped the connection or could not be reached mid-call (retried by DSPy)."""


class BackendTimeout(PylonError, lm15.TimeoutError):
    """A backend did not answer within the configured timeout (retried by DSPy)."""


class BackendServerError(PylonError, lm15.ServerError):
    """A backend answered with a server-side error (retried by DSPy)."""


class BackendRequestError(PylonError, lm15.InvalidRequestError):
    """A backend refused the request as invalid (never retried)."""


class ContextTooLong(PylonError, lm15.ContextLengthError):
    """The prompt does not fit the backend's context window (never retried)."""


class UnknownModel(PylonError, lm15.UnsupportedModelError):
    """The requested model is not served by the backend; ``available`` lists what is."""

    available: tuple[str, ...] = ()


class EmbeddedUnavailable(PylonError, lm15.NotConfiguredError):
    """The embedded llama.cpp server cannot start (extra not installed, bad model file); never retried."""


__all__ = [
    "BackendConnectionError",
    "BackendRequestError",
    "BackendServerError",
    "BackendTimeout",
    "ConfigError",
    "ContextTooLong",
    "EmbeddedUnavailable",
    "InvalidModelString",
    "NoLocalBackend",
    "PylonError",
    "UnknownModel",
]


class UnsupportedRequest(PylonError, lm15.UnsupportedFeatureError):
    """The request uses something a local backend cannot carry (e.g. audio parts); never retried."""


__all__ += ["UnsupportedRequest"]


class MalformedEvent(PylonError, ValueError):
    """A Nostr event does not follow the protocol (NIP-90, NIP-89): the message says what is wrong."""


class RelayUnavailable(PylonError, lm15.TransportError):
    """No configured relay accepted the event; the message lists each relay's failure (retried by DSPy)."""


class SwarmTimeout(PylonError, lm15.TimeoutError):
    """No valid result arrived in time; the job was cancelled with a deletion (retried by DSPy)."""


class JobFailed(PylonError, lm15.ProviderError):
    """The provider answered the job with ``error`` feedback; its message is included (never retried)."""


class ResultTooLarge(PylonError, lm15.ProviderError):
    """The result (or request) is larger than relays accept; never retried."""


__all__ += ["JobFailed", "MalformedEvent", "RelayUnavailable", "ResultTooLarge", "SwarmTimeout"]


class IdentityError(ConfigError):
    """The Nostr identity (mnemonic file, private key) cannot be used; the message says what to do.

    Messages name files and word positions, never a mnemonic or a secret key.
    """


class IdentityMissing(IdentityError):
    """No identity file exists yet: run ``pylon init`` (or point ``PYLON_HOME`` at an existing one)."""


class InvalidMnemonic(IdentityError):
    """A BIP-39 mnemonic is malformed: wrong word count, an unknown word, or a bad checksum."""


__all__ += ["IdentityError", "IdentityMissing", "InvalidMnemonic"]
