"""Privacy modes and lanes: the enums a manifest and an LM's configuration share (no pydantic,
so the configuration and the CLI's quick commands load without it)."""

from __future__ import annotations

import enum

from dspy_pylon.plain_errors import ConfigError


class PrivacyMode(enum.StrEnum):
    """What a program's prompts may hold, and so where its LM calls may go.

    =========================  =====  ===============================  ==========================================
    mode                       local  swarm job encrypted to one       swarm job in the clear (untargeted, or
                                      provider (``providers=(one,)``)  naming several providers)
    =========================  =====  ===============================  ==========================================
    ``public_ok``              yes    yes                              yes
    ``no_pii``                 yes    yes                              **no**
    ``private_repo_redacted``  yes    yes                              **no**
    ``private_repo_allowed``   yes    yes                              **no**
    =========================  =====  ===============================  ==========================================

    ``public_ok``: nothing in the prompts is private. ``no_pii``: prompts may hold personal
    data, which must never be published in the clear (anyone on a relay reads an
    unencrypted job). ``private_repo_redacted``: private code with secrets and identifiers
    redacted. ``private_repo_allowed``: private code as is; only this machine or the one
    provider a job is encrypted to may read it. The three private modes allow the same routes
    today (NIP-90 encrypts a job to one provider or to none); they differ in what they say
    about the data, which the manifest and the traces carry.
    """

    PUBLIC_OK = "public_ok"
    NO_PII = "no_pii"
    PRIVATE_REPO_REDACTED = "private_repo_redacted"
    PRIVATE_REPO_ALLOWED = "private_repo_allowed"


#: Strictness order: a later mode allows a subset of an earlier one's routes.
PRIVACY_ORDER = (
    PrivacyMode.PUBLIC_OK,
    PrivacyMode.NO_PII,
    PrivacyMode.PRIVATE_REPO_REDACTED,
    PrivacyMode.PRIVATE_REPO_ALLOWED,
)


class Lane(enum.StrEnum):
    """Where a program's LM calls can run: ``pylon:local``, ``pylon:swarm`` or ``pylon:hybrid``."""

    LOCAL = "local"
    SWARM = "swarm"
    HYBRID = "hybrid"


def privacy_mode(value: object) -> PrivacyMode:
    """``value`` (a :class:`PrivacyMode` or its name) as a mode; anything else is a :class:`ConfigError`."""
    if isinstance(value, str):
        try:
            return PrivacyMode(value)
        except ValueError:
            pass
    allowed = ", ".join(mode.value for mode in PrivacyMode)
    raise ConfigError(f"unknown privacy mode {value!r}; allowed: {allowed}")


def stricter(a: PrivacyMode | None, b: PrivacyMode | None) -> PrivacyMode | None:
    """The stricter of two modes (``None`` is no restriction)."""
    if a is None or b is None:
        return b if a is None else a
    return max(a, b, key=PRIVACY_ORDER.index)


class Destination(enum.StrEnum):
    """Where one LM call's prompt goes, as far as privacy is concerned."""

    LOCAL = "local"  # a model server on this machine
    SWARM_ENCRYPTED = "swarm-encrypted"  # a NIP-90 job encrypted to one provider
    SWARM_CLEAR = "swarm-clear"  # a NIP-90 job anyone on the relays can read
    EXTERNAL = "external"  # an LM that is not pylon's (a hosted API): its routes are unknown


_PRIVATE_ROUTES = frozenset({Destination.LOCAL, Destination.SWARM_ENCRYPTED})


def allowed_destinations(mode: PrivacyMode) -> frozenset[Destination]:
    """The routes a call may take under ``mode`` (see :class:`PrivacyMode`'s table).

    An LM that is not pylon's counts as ``EXTERNAL``, allowed only under ``public_ok``: what
    it does with a prompt is outside what pylon can see or enforce.
    """
    return frozenset(Destination) if mode is PrivacyMode.PUBLIC_OK else _PRIVATE_ROUTES


def destination_allowed(mode: PrivacyMode | None, route: Destination) -> bool:
    """Whether one call may take ``route`` under ``mode`` (``None``: no restriction)."""
    return mode is None or route in allowed_destinations(mode)
