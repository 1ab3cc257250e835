"""The customer's side of sandbox jobs: :class:`PylonSandboxProvider` runs a request on a sandbox
node of the swarm, pays it through the same checks as inference (budget reserved before
publishing, invoice no higher than the bid, the ledger), and verifies the result before handing
it over: the signature, the ``e``/``p`` linkage and the kind (the job lifecycle's checks), then
the provenance (our request's hash, the signer, the output's hash), every output short enough
to be whole in its preview and every inline artifact against its hash, and the status against
its evidence (:func:`dspy_pylon.sandbox.wire.verify_response`). A result that does not verify
is refused and its provider blamed.

Inside a traced DSPy run each call is a ``sandbox`` node linked to its job, so trace receipts
name the job request and result it paid for.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspy_pylon.contract.hashing import canonical_json
from dspy_pylon.plain_errors import ConfigError, MalformedEvent, SandboxError
from dspy_pylon.sandbox.schema import (
    SandboxCommand,
    SandboxProfile,
    SandboxRunRequest,
    SandboxRunResponse,
    SandboxStatus,
    parse_request,
)
from dspy_pylon.sandbox.wire import (
    SANDBOX_REQUEST_KIND,
    SANDBOX_RESULT_KIND,
    Verification,
    read_result,
    sandbox_job,
    verify_response,
)

__all__ = ["PylonSandboxProvider", "SandboxOutcome", "as_request"]

#: What the customer waits beyond the job's own time limit: publishing, the bill, its payment, the result.
_MARGIN_S = 60.0
#: The most of a request one event carries (relays cap events at 64 KiB; NIP-44 at 65,535 bytes).
MAX_REQUEST_BYTES = 56_000


@dataclass(frozen=True)
class SandboxOutcome:
    """A sandbox job run on the swarm: the verified response and the job it was."""

    response: SandboxRunResponse
    verification: Verification
    job_id: str
    result_id: str
    provider: str
    relay: str
    cost_msats: int
    latency_ms: float

    @property
    def status(self) -> SandboxStatus:
        """How the job ended."""
        return self.response.status


def as_request(
    request: SandboxRunRequest | dict[str, Any] | str | Sequence[str],
    profile: SandboxProfile = SandboxProfile.SMALL,
    **fields: Any,
) -> SandboxRunRequest:
    """A request from a request, its JSON, one shell command or a list of them (the latter two
    in ``profile``, with further request ``fields``: ``env``, ``repo``, ``network``...)."""
    if isinstance(request, SandboxRunRequest):
        return request
    if isinstance(request, dict):
        return parse_request(request)
    commands = [request] if isinstance(request, str) else list(request)
    return SandboxRunRequest(commands=tuple(SandboxCommand(cmd=c) for c in commands), profile=profile, **fields)


class PylonSandboxProvider:
    """Runs sandbox jobs on the swarm's sandbox nodes (kind 5930), paying from ``nwc_uri`` (or
    the home's wallet) within ``budget_sats``.

    ``keys`` are nostr-sdk keys (or pass ``mnemonic=`` / ``private_key=``; none: the home's
    identity). ``providers`` targets nodes (one: the job is encrypted to it); ``bid_msats`` is
    the most one job may cost. Constructing does no I/O; the first run connects.
    """

    def __init__(
        self,
        relays: Sequence[str],
        keys: Any = None,
        profile: SandboxProfile | str = SandboxProfile.SMALL,
        *,
        mnemonic: str | None = None,
        private_key: str | None = None,
        providers: Sequence[str] = (),
        bid_msats: int = 10_000,
        budget_sats: int = 0,
        nwc_uri: str | None = None,
        home: Path | str | None = None,
        auto_pay: bool = True,
        timeout: float | None = None,
    ) -> None:
        from dspy_pylon.config import hex_providers
        from dspy_pylon.runtime import Edges, key_source, wallet_source

        if not relays:
            raise ConfigError("a sandbox provider needs at least one relay")
        if isinstance(bid_msats, bool) or not isinstance(bid_msats, int) or bid_msats < 0:
            raise ConfigError(f"bid_msats must be a non-negative integer of msats, got {bid_msats!r}")
        if isinstance(budget_sats, bool) or not isinstance(budget_sats, int) or budget_sats < 0:
            raise ConfigError(f"budget_sats must be a non-negative integer of sats, got {budget_sats!r}")
        try:
            self.profile = SandboxProfile(profile)
        except ValueError:
            names = ", ".join(p.value for p in SandboxProfile)
            raise ConfigError(f"unknown sandbox profile {profile!r} (one of {names})") from None
        self.relays = tuple(relays)
        self.providers = hex_providers(tuple(providers))
        self.bid_msats = bid_msats
        self.budget_msats = budget_sats * 1000
        self.auto_pay = auto_pay
        self.timeout = timeout
        self._home = Edges(home=Path(home) if home is not None else None).home_dir()
        self._keys_from = (lambda home: keys) if keys is not None else key_source(mnemonic, private_key)
        self._wallet_from = wallet_source(nwc_uri)
        self._customer: Any = None
        self._payer: Any = None
        self._ciphers: Any = None
        self._opening = threading.Lock()

    # ─── the swarm, on first use ───

    def _swarm(self) -> tuple[Any, Any]:
        with self._opening:  # two threads' first runs open one set of stores
            return self._open()

    def _open(self) -> tuple[Any, Any]:
        if self._customer is None:
            from dspy_pylon.runtime import _default_wallet, home_payer
            from dspy_pylon.swarm.customer import SwarmCustomer
            from dspy_pylon.swarm.peer_ciphers import PeerCiphers
            from dspy_pylon.swarm.reputation import Reputation
            from dspy_pylon.usage import Budget

            home = self._home
            self._payer = home_payer(
                home, Budget(self.budget_msats), self._wallet_from or _default_wallet, auto_pay=self.auto_pay
            )
            keys = self._keys_from(home)
            self._customer = SwarmCustomer(keys, self.relays, Reputation(home / "reputation.sqlite"))
            self._ciphers = PeerCiphers(kind=SANDBOX_REQUEST_KIND)
        return self._customer, self._payer

    # ─── running ───

    def run(self, request: SandboxRunRequest | dict[str, Any] | str | Sequence[str], **fields: Any) -> SandboxOutcome:
        """Run ``request`` (a request, its JSON, or shell commands in this provider's profile)
        on the swarm and return its verified outcome, blocking (never the Nostr loop)."""
        from dspy_pylon.nostr.loop import NostrLoop

        req = self._checked(as_request(request, self.profile, **fields))
        self._swarm()  # its stores open here, on the caller's thread: never on the Nostr loop
        return _traced(req, lambda: NostrLoop.shared().run(self._run(req), self._wait_s(req) + 45))

    async def arun(
        self, request: SandboxRunRequest | dict[str, Any] | str | Sequence[str], **fields: Any
    ) -> SandboxOutcome:
        """:meth:`run`, awaited from any event loop."""
        import asyncio

        from dspy_pylon.nostr.loop import NostrLoop

        req = self._checked(as_request(request, self.profile, **fields))
        await asyncio.to_thread(self._swarm)
        return await _atraced(req, lambda: NostrLoop.shared().arun(self._run(req)))

    def _checked(self, request: SandboxRunRequest) -> SandboxRunRequest:
        size = len(canonical_json(request.to_json_dict()))
        if size > MAX_REQUEST_BYTES:
            raise SandboxError(
                f"the request is {size} bytes; a Nostr event carries at most {MAX_REQUEST_BYTES} of it "
                "(relays cap events at 64 KiB): send a smaller tarball or a git repo"
            )
        if request.env and len(self.providers) != 1:
            # A job to one provider is encrypted to it; any other job is public on the relays.
            raise ConfigError(
                "a sandbox job with env is sent to exactly one provider (encrypted to it): name it in providers=, "
                "or leave secrets out of a public job"
            )
        return request

    def _wait_s(self, request: SandboxRunRequest) -> float:
        return self.timeout if self.timeout is not None else request.limits.timeout_secs + _MARGIN_S

    async def _run(self, request: SandboxRunRequest) -> SandboxOutcome:
        from dspy_pylon.nostr.ciphers import Cipher
        from dspy_pylon.nostr.nip90 import JobResult

        customer, payer = self._swarm()
        encrypted = len(self.providers) == 1
        cipher = Cipher.NIP04
        if encrypted:
            cipher = await self._ciphers.cipher_for(await customer.connected(), self.providers[0])
        job = sandbox_job(
            request,
            bid_msats=self.bid_msats,
            relays=self.relays,
            providers=self.providers,
            encrypted=encrypted,
            cipher=cipher,
            nonce=f"{time.time_ns():x}",
        )
        verified: dict[str, tuple[SandboxRunResponse, Verification]] = {}

        def check(result: JobResult) -> None:
            if result.kind != SANDBOX_RESULT_KIND:
                raise MalformedEvent(f"kind {result.kind} is not a sandbox result ({SANDBOX_RESULT_KIND})")
            response = read_result(result.content)
            verification = verify_response(request, response, provider=result.provider)
            if not verification.ok:
                raise MalformedEvent("the sandbox result does not verify: " + "; ".join(verification.problems))
            verified[result.id] = (response, verification)

        outcome = await customer.run(job, self._wait_s(request), payer, check=check)
        response, verification = verified[outcome.result.id]
        return SandboxOutcome(
            response=response,
            verification=verification,
            job_id=outcome.job_id,
            result_id=outcome.result.id,
            provider=outcome.result.provider,
            relay=outcome.relay,
            cost_msats=outcome.cost_msats,
            latency_ms=round(outcome.latency_ms, 3),
        )

    def close(self) -> None:
        """Disconnect from the relays and close the stores."""
        from dspy_pylon.nostr.loop import NostrLoop

        customer, self._customer = self._customer, None
        payer, self._payer = self._payer, None
        if customer is not None:
            NostrLoop.shared().run(customer.close(), 5)
            if customer.reputation is not None:
                customer.reputation.close()
        if payer is not None:
            payer.ledger.close()

    def __enter__(self) -> PylonSandboxProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _route(outcome: SandboxOutcome) -> dict[str, Any]:
    return {
        "venue": "swarm",
        "backend": "nip90-sandbox",
        "provider": outcome.provider,
        "job_id": outcome.job_id,
        "result_id": outcome.result_id,
        "relay": outcome.relay,
        "cost_msats": outcome.cost_msats,
    }


def _annotate(outcome: SandboxOutcome) -> None:
    from dspy_pylon.trace import notes

    evidence = outcome.response.evidence
    notes.annotate_job(_route(outcome), cost_msats=outcome.cost_msats)
    notes.annotate(
        sandbox_status=outcome.status.value,
        sandbox_wall_ms=evidence.wall_ms,
        sandbox_cpu_ms=evidence.cpu_ms,
        input_sha256=outcome.response.provenance.input_sha256 if outcome.response.provenance else None,
        output_sha256=outcome.response.output_sha256,
        verified=list(outcome.verification.checked),
    )


@functools.cache
def _call_class() -> type:
    import dspy

    class SandboxCall(dspy.Module):  # type: ignore[misc]
        """One sandbox job as a DSPy call: a traced run records it as a ``sandbox`` node."""

        trace_node_type = "sandbox"

        def __init__(self, name: str, work: Callable[[], Any]) -> None:
            super().__init__()
            self.trace_name = name
            self._work = work

        def forward(self, request: dict[str, Any]) -> SandboxOutcome:
            outcome: SandboxOutcome = self._work()
            _annotate(outcome)
            return outcome

        async def aforward(self, request: dict[str, Any]) -> SandboxOutcome:
            outcome: SandboxOutcome = await self._work()
            _annotate(outcome)
            return outcome

    return SandboxCall


def _seen_by_trace(request: SandboxRunRequest) -> dict[str, Any]:
    # What the trace records as the call's input: the request's hash and shape, never the values
    # of its environment (secrets) nor its inline tarball (large).
    return {
        "sha256": request.sha256,
        "profile": request.profile.value,
        "network": request.network.value,
        "commands": [c.cmd for c in request.commands],
        "env": sorted(request.env),
        "repo": None if request.repo is None else request.repo.kind,
    }


def _traced(request: SandboxRunRequest, work: Callable[[], Any]) -> SandboxOutcome:
    call = _call_class()(f"sandbox {request.profile.value}", work)
    outcome: SandboxOutcome = call(request=_seen_by_trace(request))
    return outcome


async def _atraced(request: SandboxRunRequest, work: Callable[[], Any]) -> SandboxOutcome:
    call = _call_class()(f"sandbox {request.profile.value}", work)
    outcome: SandboxOutcome = await call.acall(request=_seen_by_trace(request))
    return outcome
