"""How a provider node runs: its settings, and reading them from ``$PYLON_HOME/provider.toml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy_pylon.config import BackendName
from dspy_pylon.errors import ConfigError, SandboxError
from dspy_pylon.sandbox.schema import NetworkPolicy, SandboxProfile
from dspy_pylon.sandbox.wire import SandboxOffer


@dataclass(frozen=True)
class ProviderSettings:
    """How a provider node runs. ``price_msats`` 0 serves for free."""

    relays: tuple[str, ...]
    state_dir: Path
    backend: BackendName = "auto"
    backend_url: str | None = None
    name: str = "pylon provider"
    about: str = "DSPy-ready local inference (dspy-pylon)"
    price_msats: int = 0
    concurrency: int = 2
    queue_limit: int = 64
    timeout: float = 120.0
    max_tokens_cap: int = 4096
    # What a job that asks for no max_tokens gets (None: 512, or max_tokens_cap if lower):
    # without it a model may generate until its context is full, holding a worker for minutes.
    default_max_tokens: int | None = None
    # Many relays refuse events over 64 KiB (nostr-sdk's embedded relay does); a result
    # that cannot be delivered becomes error feedback at once instead of a silent timeout.
    max_result_bytes: int = 65_536
    announce: bool = True
    identifier: str = "pylon-5050"
    # Per-model prices (msats) overriding ``price_msats`` for jobs that ask for that model.
    prices: dict[str, int] = field(default_factory=dict)
    # Answer on loopback or private relays a job's relays tag names (a test or LAN set-up);
    # off, only public relays are used: a stranger's job cannot point the node into its network.
    allow_local_relays: bool = False
    # How long a customer has to pay an invoice before the job is dropped.
    invoice_expiry_s: int = 300
    # Invoices awaiting payment at once; beyond, jobs get "busy" (unpaid jobs cost the wallet work).
    max_unpaid: int = 256
    # Invoices made ahead per price, so a job's bill goes out without a wallet round trip first
    # (0 = make each invoice when its job arrives, named after the job).
    invoice_pool: int = 4
    # Start a billed job's inference while its invoice waits, and publish the result once paid:
    # the payment's round trips then overlap the work instead of preceding it. The risk is work
    # never paid for, bounded by ``concurrency`` such jobs at once (beyond, jobs wait to be paid).
    work_before_payment: bool = False
    # ``processing`` feedback goes out once a job has run this long without an answer (0: at
    # once). A quick job's result says it all; each feedback is an event to sign and send, and
    # one for its customer (and every relay) to receive, verify and read - a third of the
    # messages of a quick job.
    processing_feedback_after_s: float = 0.25
    # Sell sandboxed code execution too (kind 5930): the profiles, prices and policies offered.
    # The node then checks at start that this host can isolate and limit jobs, and refuses to
    # start if it cannot (pylon.sandbox.SandboxExecutor.probe).
    sandbox: SandboxOffer | None = None
    # Sandbox jobs run at once (workers of their own, apart from the inference workers).
    sandbox_concurrency: int = 1

    def __post_init__(self) -> None:
        for name, value in (("price_msats", self.price_msats), *self.prices.items()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"price for {name!r} must be a non-negative integer of msats, got {value!r}")
        if isinstance(self.invoice_expiry_s, bool) or not isinstance(self.invoice_expiry_s, int):
            raise ConfigError(f"invoice_expiry_s must be an integer of seconds, got {self.invoice_expiry_s!r}")
        if self.invoice_expiry_s < 1:
            raise ConfigError("invoice_expiry_s must be at least 1 second: customers need time to pay")
        delay = self.processing_feedback_after_s
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 3600:
            raise ConfigError(f"processing_feedback_after_s must be 0 to 3600 seconds, got {delay!r}")
        for name, value in (("max_tokens_cap", self.max_tokens_cap), ("default_max_tokens", self.max_tokens_default)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer of tokens, got {value!r}")
        if self.max_tokens_default > self.max_tokens_cap:
            raise ConfigError(
                f"default_max_tokens ({self.default_max_tokens}) must not exceed max_tokens_cap ({self.max_tokens_cap})"
            )

    @property
    def max_tokens_default(self) -> int:
        """What a job that asks for no ``max_tokens`` gets."""
        if self.default_max_tokens is not None:
            return self.default_max_tokens
        return min(512, self.max_tokens_cap) if isinstance(self.max_tokens_cap, int) else 512

    @property
    def priced(self) -> bool:
        """Whether any job can cost money here."""
        return self.price_msats > 0 or any(self.prices.values()) or (self.sandbox is not None and self.sandbox.priced)


def load_provider_file(path: Path) -> dict[str, Any]:
    """Settings from a provider TOML file (``$PYLON_HOME/provider.toml``); missing file = {}.

    Keys: ``relays`` (list), ``backend``, ``name``, ``about``, ``price_msats``, ``concurrency``,
    ``queue_limit``, ``timeout``, ``max_tokens_cap``, ``default_max_tokens``, ``announce``, ``invoice_expiry_s``,
    ``work_before_payment``, ``processing_feedback_after_s``, a
    ``[prices]`` table of per-model prices in msats (``"llama3.2" = 2000``) and a ``[sandbox]``
    table to sell sandboxed execution (``base_msats``, ``msats_per_cpu_second``, ``profiles``,
    ``networks``, ``allow_git``).
    """
    import tomllib

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    allowed = {f for f in ProviderSettings.__dataclass_fields__ if f not in ("state_dir", "identifier")}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "relays" in data:
        data["relays"] = tuple(data["relays"])
    if "prices" in data and not isinstance(data["prices"], dict):
        raise ConfigError(f"{path}: prices must be a table of model = msats")
    if "sandbox" in data:
        data["sandbox"] = sandbox_offer(data["sandbox"], where=str(path))
    return data


def sandbox_offer(table: object, *, where: str = "sandbox") -> SandboxOffer:
    """A :class:`SandboxOffer` from a settings table (TOML ``[sandbox]`` or CLI options)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: sandbox must be a table")
    known = {"base_msats", "msats_per_cpu_second", "profiles", "networks", "allow_git"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown sandbox settings {sorted(unknown)}; allowed: {sorted(known)}")
    fields: dict[str, Any] = {k: table[k] for k in ("base_msats", "msats_per_cpu_second", "allow_git") if k in table}
    try:
        if "profiles" in table:
            fields["profiles"] = tuple(SandboxProfile(p) for p in table["profiles"])
        if "networks" in table:
            fields["networks"] = tuple(NetworkPolicy(n) for n in table["networks"])
        return SandboxOffer(**fields)
    except (ValueError, TypeError) as exc:  # SandboxError is a ValueError
        reason = exc.args[0] if isinstance(exc, SandboxError) and exc.args else exc
        raise ConfigError(f"{where}: not a valid sandbox offer: {reason}") from None
