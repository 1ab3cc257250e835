"""One exception hierarchy for dspy-pylon.

Every error is a :class:`PylonError`. Errors raised while an LM call runs also derive
from the matching ``dspy.lm15`` error class, so DSPy's retry loop treats them right:
transient failures (a backend that dropped the connection, a timeout, a 5xx) are
retried with backoff; configuration, model and (later) budget or payment errors are
never retried. DSPy wraps them in its own ``dspy.utils.exceptions.LM*Error`` classes;
the original pylon error is kept as ``__cause__``. The classes that need no DSPy (the
base, configuration, identity, protocol and wallet errors) are defined in
:mod:`dspy_pylon.plain_errors` and re-exported here: it is one hierarchy in two modules.
"""

from __future__ import annotations

from typing import Any

from dspy import lm15

from dspy_pylon.plain_errors import (
    CompatibilityError,
    ConfigError,
    IdentityError,
    IdentityMissing,
    IntegrityError,
    InvalidMnemonic,
    InvalidModelString,
    MalformedEvent,
    ManifestError,
    PylonError,
    SandboxError,
    SandboxRefused,
    SignatureError,
    StoreError,
    WalletError,
)


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


class RelayUnavailable(PylonError, lm15.TransportError):
    """No configured relay accepted the event; the message lists each relay's failure (retried by DSPy)."""


class SwarmTimeout(PylonError, lm15.TimeoutError):
    """No valid result arrived in time; the job was cancelled with a deletion (retried by DSPy)."""


class JobFailed(PylonError, lm15.ProviderError):
    """The provider answered the job with ``error`` feedback; its message is included (never retried)."""


class ResultTooLarge(PylonError, lm15.ProviderError):
    """The result (or request) is larger than relays accept; never retried."""


__all__ += ["JobFailed", "MalformedEvent", "RelayUnavailable", "ResultTooLarge", "SwarmTimeout"]


__all__ += ["IdentityError", "IdentityMissing", "InvalidMnemonic"]


class BudgetExceeded(PylonError, lm15.BillingError):
    """The call's bid does not fit in what is left of the budget; nothing was published (never retried)."""


class PaymentRefused(PylonError, lm15.BillingError):
    """An invoice failed a check (amount, bid, budget, expiry, job) and was not paid; the job was
    cancelled and the reason recorded in the spend ledger (never retried)."""


class PaymentRequired(PylonError, lm15.BillingError):
    """A provider asks to be paid and ``auto_pay`` is off: approve with :func:`dspy_pylon.pay`.

    Carries ``job_id``, ``provider``, ``amount_msats`` and ``bolt11``.
    """

    def __init__(self, message: str, *, job_id: str, provider: str, amount_msats: int, bolt11: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.provider = provider
        self.amount_msats = amount_msats
        self.bolt11 = bolt11

    def __reduce__(self) -> Any:
        # Keyword-only fields: rebuild with them (DSPy and multiprocessing may pickle errors).
        return (_payment_required, (str(self), self.job_id, self.provider, self.amount_msats, self.bolt11))


def _payment_required(message: str, job_id: str, provider: str, amount_msats: int, bolt11: str) -> PaymentRequired:
    return PaymentRequired(message, job_id=job_id, provider=provider, amount_msats=amount_msats, bolt11=bolt11)


class PaymentFailed(PylonError, lm15.BillingError):
    """The wallet did not pay (insufficient balance, route failure, wallet unreachable); never retried.

    If the outcome is unknown the ledger keeps the job as ``paying`` until it is looked up.
    """


__all__ += ["BudgetExceeded", "PaymentFailed", "PaymentRefused", "PaymentRequired", "StoreError", "WalletError"]


class PrivacyViolation(PylonError, lm15.InvalidRequestError):
    """A call would send a prompt where the LM's privacy mode forbids it (e.g. an unencrypted swarm
    job under ``no_pii``); refused before anything was published (never retried). ``mode`` and
    ``venue`` say which."""

    def __init__(self, message: str, *, mode: str = "", venue: str = "") -> None:
        super().__init__(message)
        self.mode = mode
        self.venue = venue


__all__ += [
    "CompatibilityError",
    "IntegrityError",
    "ManifestError",
    "PrivacyViolation",
    "SandboxError",
    "SandboxRefused",
    "SignatureError",
]
# IntegrityProblem and SignatureProblem (the reason codes) are importable here too, not errors.


class NoEligibleProvider(PylonError, lm15.NotConfiguredError):
    """No provider meets the swarm venue's ``min_reputation`` (a compiled program's
    ``min_provider_reputation``); nothing was published (never retried). The message names
    the best reputation known."""


__all__ += ["NoEligibleProvider"]
