"""Configuration: venues, :class:`PylonConfig` and model-string parsing (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from dspy_pylon.contract.modes import PrivacyMode, privacy_mode
from dspy_pylon.plain_errors import ConfigError, InvalidModelString

BackendName: TypeAlias = Literal["auto", "ollama", "apple-fm", "llamacpp", "embedded"]
BACKENDS: tuple[BackendName, ...] = ("auto", "ollama", "apple-fm", "llamacpp", "embedded")

#: Public relays used when a swarm venue names none. Override per venue.
DEFAULT_RELAYS: tuple[str, ...] = ("wss://relay.damus.io", "wss://nos.lol")
DEFAULT_BID_MSATS = 1_000


def _check_backend(backend: object) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown local backend {backend!r}; allowed: {', '.join(BACKENDS)}")


def _check_base_url(backend: str, base_url: object) -> None:
    if base_url is None:
        return
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
    if backend in ("auto", "embedded"):
        raise ConfigError("base_url needs a named backend (ollama, apple-fm or llamacpp), not " + repr(backend))


def _check_relays(relays: tuple[str, ...]) -> None:
    if not relays:
        raise ConfigError("a swarm venue needs at least one relay URL (ws:// or wss://)")
    for url in relays:
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")) or len(url) <= len("wss://"):
            raise ConfigError(f"relay URL {url!r} is not a ws:// or wss:// URL")


def _check_msats(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer number of millisatoshis, got {value!r}")


def _check_reputation(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"min_reputation must be a number from 0 to 1 (or None), got {value!r}")


def _encrypts(providers: tuple[str, ...], min_reputation: float | None) -> bool:
    return len(providers) == 1 or (not providers and min_reputation is not None)


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class Local:
    """Run every call on a local model server.

    ``backend`` is ``"auto"`` (probe Ollama, the Apple FM bridge, llama.cpp in that order)
    or one of them by name, or ``"embedded"`` (llama.cpp in this process, extra
    ``embedded``). With ``embedded_fallback`` an ``auto`` venue that finds no server uses
    the embedded one when the extra is installed. ``base_url`` is the server of a named
    backend (instead of its environment variable, e.g. ``LLAMACPP_URL``, or default port).
    """

    backend: BackendName = "auto"
    embedded_fallback: bool = True
    base_url: str | None = None

    def __post_init__(self) -> None:
        _check_backend(self.backend)
        _check_base_url(self.backend, self.base_url)


def hex_providers(providers: tuple[str, ...]) -> tuple[str, ...]:
    """The providers as hex public keys; an npub is decoded here (pure), so a bad one is a
    ConfigError when the venue is made, not a nostr-sdk error at the first call."""
    hexed = []
    for provider in providers:
        if isinstance(provider, str) and len(provider) == 64 and all(c in "0123456789abcdef" for c in provider):
            hexed.append(provider)
            continue
        if isinstance(provider, str) and provider.startswith("npub1"):
            import nostr_sdk

            try:
                hexed.append(str(nostr_sdk.PublicKey.parse(provider).to_hex()))
                continue
            except nostr_sdk.NostrSdkError:
                raise ConfigError(
                    f"provider {provider!r} is not a valid npub public key (bad checksum or length)"
                ) from None
        raise ConfigError(f"provider {provider!r} is not a hex public key or an npub")
    return tuple(hexed)


@dataclass(frozen=True)
class Swarm:
    """Run every call as a paid NIP-90 job on providers reached through Nostr relays.

    ``providers`` targets one provider (the job is then encrypted to it), a set, or,
    when empty, broadcasts to any provider. ``bid_msats`` is the most one job may cost.
    With ``auto_pay`` a provider's invoice is paid through the wallet once it passes the
    checks; otherwise the call raises :class:`~dspy_pylon.errors.PaymentRequired`.
    ``pay_on_result`` also pays invoices that arrive with the result (billed after delivery).
    ``min_reputation`` (0..1) uses only providers whose reputation on this machine (the
    reputation store: a new provider starts at 0.5) is at least that: of the ``providers``
    named, or, when none is named, the best one known, to which the job is then encrypted.
    """

    relays: tuple[str, ...] = DEFAULT_RELAYS
    bid_msats: int = DEFAULT_BID_MSATS
    auto_pay: bool = False
    providers: tuple[str, ...] = ()
    pay_on_result: bool = True
    min_reputation: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "relays", tuple(self.relays))
        object.__setattr__(self, "providers", hex_providers(tuple(self.providers)))
        _check_relays(self.relays)
        _check_msats("bid_msats", self.bid_msats)
        _check_flags(auto_pay=self.auto_pay, pay_on_result=self.pay_on_result)
        _check_reputation(self.min_reputation)

    @property
    def encrypts(self) -> bool:
        """Whether every job goes to one provider, encrypted to it (one named, or the best
        known under ``min_reputation``), rather than in the clear."""
        return _encrypts(self.providers, self.min_reputation)


@dataclass(frozen=True)
class Hybrid:
    """Local first; on no local backend, a local error or a local timeout, the swarm.

    The swarm fields mean what they mean on :class:`Swarm`; ``backend`` and ``base_url``
    what they mean on :class:`Local`.
    """

    backend: BackendName = "auto"
    relays: tuple[str, ...] = DEFAULT_RELAYS
    bid_msats: int = DEFAULT_BID_MSATS
    auto_pay: bool = False
    providers: tuple[str, ...] = ()
    pay_on_result: bool = True
    base_url: str | None = None
    min_reputation: float | None = None

    def __post_init__(self) -> None:
        _check_backend(self.backend)
        _check_base_url(self.backend, self.base_url)
        object.__setattr__(self, "relays", tuple(self.relays))
        object.__setattr__(self, "providers", hex_providers(tuple(self.providers)))
        _check_relays(self.relays)
        _check_msats("bid_msats", self.bid_msats)
        _check_flags(auto_pay=self.auto_pay, pay_on_result=self.pay_on_result)
        _check_reputation(self.min_reputation)

    @property
    def encrypts(self) -> bool:
        """As :attr:`Swarm.encrypts`, for the swarm fallback."""
        return _encrypts(self.providers, self.min_reputation)


Venue: TypeAlias = Local | Swarm | Hybrid


@dataclass(frozen=True)
class PylonConfig:
    """Everything a :class:`~dspy_pylon.PylonLM` needs to route calls.

    ``timeout`` is seconds per call; ``budget_sats`` caps total spend (0 = unlimited);
    ``model`` asks the backend (or swarm provider) for a specific model. ``privacy`` (a
    :class:`~dspy_pylon.contract.modes.PrivacyMode` or its name; ``None``: no restriction)
    refuses, before anything is sent, every call the mode forbids (e.g. an unencrypted
    swarm job under ``no_pii``), hybrid fallbacks included.
    """

    venue: Venue = field(default_factory=Local)
    timeout: float = 60.0
    budget_sats: int = 0
    model: str | None = None
    privacy: PrivacyMode | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.venue, (Local, Swarm, Hybrid)):
            raise ConfigError(f"venue must be Local, Swarm or Hybrid, got {self.venue!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise ConfigError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise ConfigError(f"timeout must be a positive, finite number of seconds, got {self.timeout!r}")
        if isinstance(self.budget_sats, bool) or not isinstance(self.budget_sats, int) or self.budget_sats < 0:
            raise ConfigError(f"budget_sats must be a non-negative integer (0 = unlimited), got {self.budget_sats!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError(f"model must be a non-empty string or None, got {self.model!r}")
        if self.privacy is not None:
            object.__setattr__(self, "privacy", privacy_mode(self.privacy))

    @property
    def budget_msats(self) -> int:
        """The budget in millisatoshis (0 = unlimited)."""
        return self.budget_sats * 1000

    @classmethod
    def local(cls) -> PylonConfig:
        """Local venue, backend found automatically."""
        return cls(venue=Local())

    @classmethod
    def local_with(cls, backend: BackendName) -> PylonConfig:
        """Local venue on a named backend (``ollama``, ``apple-fm``, ``llamacpp``, ``embedded``)."""
        return cls(venue=Local(backend=backend))

    @classmethod
    def swarm(cls) -> PylonConfig:
        """Swarm venue on the default relays and bid."""
        return cls(venue=Swarm())

    @classmethod
    def swarm_with(cls, relays: list[str] | tuple[str, ...], bid_msats: int) -> PylonConfig:
        """Swarm venue on the given relays with the given bid per job (msats)."""
        return cls(venue=Swarm(relays=tuple(relays), bid_msats=bid_msats))

    @classmethod
    def hybrid(cls) -> PylonConfig:
        """Local first, swarm fallback, default relays and bid."""
        return cls(venue=Hybrid())


VALID_FORMS = (
    "pylon:local",
    "pylon:local:<backend>",
    "pylon:local:<backend>:<model>",
    "pylon:swarm",
    "pylon:swarm:<model>",
    "pylon:hybrid",
    "pylon:hybrid:<backend>",
    "pylon:hybrid:<backend>:<model>",
)


def _invalid(model: object, why: str) -> InvalidModelString:
    forms = ", ".join(VALID_FORMS)
    return InvalidModelString(
        f"invalid pylon model string {model!r}: {why}. Valid forms: {forms} "
        f"(or the same with '/' instead of ':', e.g. 'pylon/local/ollama/llama3.2'); "
        f"<backend> is one of {', '.join(BACKENDS)}"
    )


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model string: the venue it selects and the model it names, if any."""

    venue: Venue
    model: str | None


def parse_model_string(model: str) -> ModelSpec:
    """Parse ``pylon:<venue>[:<backend>][:<model>]`` (or the ``/`` form).

    The model part may itself hold ``:`` or ``/`` (``llama3.2:1b``, ``org/name``).
    Raises :class:`~dspy_pylon.errors.InvalidModelString` (a ``ValueError``) for anything else.
    """
    if not isinstance(model, str):
        raise _invalid(model, "not a string")
    if model.startswith("pylon:"):
        sep = ":"
    elif model.startswith("pylon/"):
        sep = "/"
    else:
        raise _invalid(model, "it must start with 'pylon:' or 'pylon/'")
    parts = model.split(sep, 3)
    venue_name = parts[1] if len(parts) > 1 else ""
    rest = parts[2:]
    if venue_name == "swarm":
        name = sep.join(rest) if rest else None
        return ModelSpec(Swarm(), _model_part(model, name))
    if venue_name not in ("local", "hybrid"):
        raise _invalid(model, f"unknown venue {venue_name!r} (expected local, swarm or hybrid)")
    backend: str = "auto"
    name = None
    if rest:
        backend = rest[0]
        if backend not in BACKENDS:
            raise _invalid(model, f"unknown backend {backend!r}")
        name = rest[1] if len(rest) > 1 else None
    checked: BackendName = backend  # type: ignore[assignment]  # membership checked above
    venue: Venue = Local(backend=checked) if venue_name == "local" else Hybrid(backend=checked)
    return ModelSpec(venue, _model_part(model, name))


def _model_part(model: str, name: str | None) -> str | None:
    if name is None:
        return None
    if not name.strip() or name != name.strip():
        raise _invalid(model, "the model name is empty or has surrounding spaces")
    return name


def config_to_dict(config: PylonConfig) -> dict[str, Any]:
    """Plain JSON data for a configuration (what saved programs store). Holds no secrets."""
    venue = config.venue
    venue_data: dict[str, Any]
    if isinstance(venue, Local):
        venue_data = {"type": "local", "backend": venue.backend, "embedded_fallback": venue.embedded_fallback}
    else:
        venue_data = {
            "type": "swarm" if isinstance(venue, Swarm) else "hybrid",
            "relays": list(venue.relays),
            "bid_msats": venue.bid_msats,
            "auto_pay": venue.auto_pay,
            "providers": list(venue.providers),
            "pay_on_result": venue.pay_on_result,
        }
        if venue.min_reputation is not None:
            venue_data["min_reputation"] = venue.min_reputation
        if isinstance(venue, Hybrid):
            venue_data["backend"] = venue.backend
    if not isinstance(venue, Swarm) and venue.base_url is not None:
        venue_data["base_url"] = venue.base_url
    data: dict[str, Any] = {
        "venue": venue_data,
        "timeout": config.timeout,
        "budget_sats": config.budget_sats,
        "model": config.model,
    }
    if config.privacy is not None:
        data["privacy"] = config.privacy.value
    return data


def config_from_dict(data: Any) -> PylonConfig:
    """The configuration :func:`config_to_dict` wrote; a malformed record raises ``ConfigError``."""
    try:
        venue_data = dict(data["venue"])
        kind = venue_data.pop("type")
        if not isinstance(venue_data.get("relays", ()), (list, tuple)):
            raise ConfigError("relays must be a list of URLs")
        venue: Venue
        if kind == "local":
            venue = Local(**venue_data)
        elif kind == "swarm":
            venue = Swarm(**{**venue_data, "relays": tuple(venue_data["relays"])})
        elif kind == "hybrid":
            venue = Hybrid(**{**venue_data, "relays": tuple(venue_data["relays"])})
        else:
            raise ConfigError(f"unknown venue type {kind!r}")
        return PylonConfig(
            venue=venue,
            timeout=data["timeout"],
            budget_sats=data["budget_sats"],
            model=data["model"],
            privacy=data.get("privacy"),
        )
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed pylon configuration record: {exc!r}") from exc
