"""The state one PylonLM shares with all its copies: routing, clients, usage, budget — and its edges.

:class:`PylonRuntime` routes each call to the local router or the swarm venue, builds
those lazily (constructing an LM does no I/O: the ledger, the relay connection and the
identity file are opened on the first call that needs them) and records usage.
:class:`Edges` is what it talks to — home directory, ledger, reputation store, relay
client, HTTP transport — when the application (or a test) supplies its own.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dspy import lm15

from dspy_pylon import capabilities as caps_mod
from dspy_pylon.capabilities import Capabilities
from dspy_pylon.config import Hybrid, Local, PylonConfig
from dspy_pylon.contract.modes import Destination, PrivacyMode, destination_allowed, stricter
from dspy_pylon.errors import ConfigError, PrivacyViolation, PylonError, UnsupportedRequest
from dspy_pylon.local.backends import LocalRouter
from dspy_pylon.pay.billing import Approver, Payer
from dspy_pylon.pay.budget_file import load_global_budget
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.route import Route
from dspy_pylon.swarm.venue import SwarmVenue
from dspy_pylon.usage import Budget, LmUsage, UsageTotals, cost_of

if TYPE_CHECKING:
    from dspy_pylon.nostr.relay_client import RelayClient
    from dspy_pylon.swarm.reputation import Reputation


#: The Nostr keys for swarm jobs, given the home directory (read there when none was passed).
KeySource = Callable[[Path], Any]
Options = Mapping[str, Any]
_NO_OPTIONS: Options = {}
#: The wallet that pays swarm jobs, given the home directory (``nwc.uri`` there by default).
WalletSource = Callable[[Path], NwcWallet | None]


@dataclass(frozen=True)
class Edges:
    """What an LM talks to, when not the defaults built from the environment on first use.

    ``home`` replaces ``$PYLON_HOME`` (identity, ``nwc.uri``, ``budget.toml`` and, unless
    given, the ledger and the reputation store); ``ledger`` and ``reputation`` are stores to
    share; ``relay_client`` is a :class:`~dspy_pylon.nostr.relay_client.RelayClient` (started
    or not; its owner closes it) on the shared Nostr loop; ``http_transport`` carries every
    request to local servers (an ``httpx`` transport; async calls need its async half).
    None of them is pickled: an unpickled LM uses the environment's defaults.
    """

    home: Path | None = None
    ledger: SpendLedger | None = None
    reputation: Reputation | None = None
    relay_client: RelayClient | None = None
    http_transport: Any = None

    def home_dir(self) -> Path:
        """``home``, else ``$PYLON_HOME`` (read now: the runtime reads it once, when the LM is
        built), else the default home."""
        if self.home is not None:
            return self.home
        from dspy_pylon.identity import pylon_home

        return pylon_home()


def _default_wallet(home: Path) -> NwcWallet | None:
    from dspy_pylon.pay.nwc import load_nwc_uri

    uri = load_nwc_uri(home)
    return None if uri is None else NwcWallet(uri)


# What sends a hybrid call on to the swarm: no local backend, a local failure or timeout.
# Not a request the swarm could not carry either (UnsupportedRequest) nor a config error.
_NO_FALLBACK = (UnsupportedRequest, ConfigError)


@contextmanager
def _keep_local_error(local_error: PylonError) -> Iterator[None]:
    """Around a hybrid fallback: if the swarm cannot carry the request, raise the local error.

    The local failure is what the caller must see (and DSPy may retry), not the swarm's
    refusal of something local would have honoured (a schema, tools, backend options).
    """
    try:
        yield
    except UnsupportedRequest as refusal:
        local_error.add_note(f"the swarm fallback was not tried: {refusal}")
        raise local_error from local_error.__cause__


def _with_fallback(response: lm15.Response, reason: BaseException) -> lm15.Response:
    data = dict(response.provider_data or {})
    pylon = dict(data.get("pylon") or {})
    pylon["fallback_from"] = "local"
    pylon["fallback_reason"] = f"{type(reason).__name__}: {reason}"[:300]
    data["pylon"] = pylon
    return replace(response, provider_data=data)


class PylonRuntime:
    """The state one PylonLM shares with all its copies: routing, clients and usage totals.

    ``keys`` returns the Nostr keys for swarm jobs; it is called once, when the swarm is
    first needed (the first swarm call, or the first fallback for hybrid). Nothing here
    does I/O before a call needs it.
    """

    def __init__(
        self,
        config: PylonConfig,
        keys: KeySource | None = None,
        wallet: WalletSource | None = None,
        approve: Approver | None = None,
        edges: Edges | None = None,
    ) -> None:
        self.config = config
        # $PYLON_HOME is read now (no I/O): an LM keeps the home it was built under.
        edges = edges or Edges()
        self.edges = replace(edges, home=edges.home_dir())
        self.totals = UsageTotals()
        # One budget for the LM and all its copies: deep copies share this runtime.
        self.budget = Budget(config.budget_msats)
        self._keys = keys
        self._wallet: WalletSource = wallet or _default_wallet
        self._approve = approve
        self._swarm: SwarmVenue | None = None
        self._swarm_lock = threading.Lock()
        self._last_capabilities: Capabilities | None = None
        venue = config.venue
        self._local: LocalRouter | None = None
        if isinstance(venue, Local):
            self._local = LocalRouter(
                venue, config.model, config.timeout, venue.base_url, transport=self.edges.http_transport
            )
        elif isinstance(venue, Hybrid):
            # Local first means a real local server: the embedded model would shadow the swarm.
            local = Local(backend=venue.backend, embedded_fallback=False, base_url=venue.base_url)
            self._local = LocalRouter(
                local, config.model, config.timeout, venue.base_url, transport=self.edges.http_transport
            )

    def swarm(self) -> SwarmVenue:
        """The swarm venue, built on first use: keys, ledger, reputation, global budget, wallet."""
        with self._swarm_lock:
            if self._swarm is None:
                venue = self.config.venue
                if isinstance(venue, Local):
                    raise ConfigError("the local venue has no swarm")
                if self._keys is None:
                    raise ConfigError(
                        "a swarm venue needs Nostr keys: pass mnemonic= or private_key=, or run `pylon init`"
                    )
                home = self.edges.home_dir()
                keys = self._keys(home)
                from dspy_pylon.swarm.reputation import Reputation

                payer = home_payer(
                    home,
                    self.budget,
                    self._wallet,
                    auto_pay=venue.auto_pay,
                    approve=self._approve,
                    pay_on_result=venue.pay_on_result,
                    ledger=self.edges.ledger,
                )
                reputation = self.edges.reputation or Reputation(home / "reputation.sqlite")
                self._swarm = SwarmVenue(
                    venue,
                    keys,
                    self.config.model,
                    self.config.timeout,
                    payer,
                    reputation=reputation,
                    relay_client=self.edges.relay_client,
                )
            return self._swarm

    def for_config(self, config: PylonConfig) -> PylonRuntime:
        """A runtime for another model or venue that shares this one's usage totals, budget,
        keys, wallet and approval (``lm.copy(model=...)``)."""
        runtime = PylonRuntime(config, self._keys, self._wallet, self._approve, self.edges)
        runtime.totals = self.totals
        runtime.budget = self.budget
        return runtime

    def provider_reputations(self, providers: tuple[str, ...]) -> dict[str, float]:
        """The reputation (0..1, 0.5 when unknown) of each provider (hex, as a venue holds them),
        from this runtime's reputation store (``reputation.sqlite`` in the home unless given)."""
        from dspy_pylon.swarm.reputation import Reputation

        store = self.edges.reputation
        opened = store is None
        if store is None:
            store = Reputation(self.edges.home_dir() / "reputation.sqlite")
        try:
            return {key: store.score(key) for key in providers}
        finally:
            if opened:
                store.close()

    def local_router(self) -> LocalRouter:
        """The router of the local (or hybrid) venue: which server and model calls go to."""
        if self._local is None:
            raise ConfigError("the swarm venue has no local router")
        return self._local

    def pay(self, job_id: str, timeout: float | None = None) -> lm15.Response:
        """Approve and pay a job that raised PaymentRequired; returns its response once it arrives."""
        return self._record(self.swarm().pay(job_id, timeout))

    def route(self) -> Route:
        """The route the next call will take (probes local servers if not yet resolved)."""
        venue = self.config.venue
        if self._local is not None:
            try:
                return self._local.resolve()[0]
            except PylonError:
                if isinstance(venue, Local):
                    raise
        assert not isinstance(venue, Local)
        return Route("swarm", "nip90", " ".join(venue.relays), self.config.model or "any")

    def _record(self, response: lm15.Response) -> lm15.Response:
        self.totals.add(LmUsage.from_response(response))
        return response

    def capabilities(self) -> Capabilities:
        """What the next call's backend honours (DSPy's adapters read it through the engines).

        Read before a call, outside DSPy's retries: a server that is down right now
        does not fail the adapter here; the last known answer (or the plain-chat floor)
        stands, and the call itself reports the failure where DSPy can retry it.
        """
        if self._local is None:
            return caps_mod.SWARM
        try:
            route, _client = self._local.resolve()
            self._last_capabilities = self._local.capabilities(route)
        except PylonError:
            if self._last_capabilities is None:
                return caps_mod.PLAIN_CHAT
        return self._last_capabilities

    def _local_complete(self, router: LocalRouter, request: lm15.Request, options: Options) -> lm15.Response:
        route, client = router.resolve()
        with router.guard(route):
            return client.complete(request, route, router.capabilities(route), options)

    async def _local_acomplete(self, router: LocalRouter, request: lm15.Request, options: Options) -> lm15.Response:
        route, client = router.resolve()
        with router.guard(route):
            return await client.acomplete(request, route, router.capabilities(route), options)

    def _for_swarm(
        self,
        request: lm15.Request,
        options: Options,
        privacy: PrivacyMode | None = None,
        fallback_from: PylonError | None = None,
    ) -> lm15.Request:
        """``request`` as the swarm may carry it, or a refusal before anything is published.

        ``privacy`` is the calling engine's mode (a copy held to a manifest's); the stricter
        of it and this LM's own applies.
        """
        mode = stricter(self.config.privacy, privacy)
        venue = self.config.venue
        assert not isinstance(venue, Local)
        destination = Destination.SWARM_ENCRYPTED if venue.encrypts else Destination.SWARM_CLEAR
        if not destination_allowed(mode, destination):
            assert mode is not None
            why = (
                f"privacy mode {mode.value!r} forbids a swarm job in the clear: it would be readable by anyone "
                "on the relays. Name one provider (providers=(npub,)) so jobs are encrypted to it, or run locally"
            )
            if fallback_from is not None:
                why = f"the local call failed ({type(fallback_from).__name__}: {fallback_from}) and {why}"
            raise PrivacyViolation(why, mode=mode.value, venue="swarm") from fallback_from
        if options:
            raise UnsupportedRequest(
                f"backend options ({', '.join(options)}) cannot be sent to the swarm: the swarm's "
                "transcripts carry the standard sampling settings only (a provider runs its own backend)",
                feature=next(iter(options)),
            )
        return request

    def _swarm_call(
        self,
        request: lm15.Request,
        options: Options,
        privacy: PrivacyMode | None,
        fallback_from: PylonError | None = None,
    ) -> lm15.Response:
        # Checked before the venue is built: a refused call needs no keys, relay or wallet.
        checked = self._for_swarm(request, options, privacy, fallback_from)
        return self.swarm().complete(checked)

    async def _swarm_acall(
        self,
        request: lm15.Request,
        options: Options,
        privacy: PrivacyMode | None,
        fallback_from: PylonError | None = None,
    ) -> lm15.Response:
        checked = self._for_swarm(request, options, privacy, fallback_from)
        return await self.swarm().acomplete(checked)

    def cache_route(self) -> str:
        """Which served model the next call goes to, as a key for DSPy's cache (no secret in it)."""
        if self._local is not None:
            try:
                route, _client = self._local.resolve()
                return f"{route.backend}:{route.model}"
            except PylonError:
                if isinstance(self.config.venue, Local):
                    return "local:unresolved"
        return f"swarm:{self.config.model or 'any'}"

    def complete(
        self, request: lm15.Request, options: Options = _NO_OPTIONS, privacy: PrivacyMode | None = None
    ) -> lm15.Response:
        """Run one call, blocking. ``options`` are backend options (see :mod:`dspy_pylon.carrier`)."""
        if self._local is None:
            return self._record(self._swarm_call(request, options, privacy))
        try:
            return self._record(self._local_complete(self._local, request, options))
        except PylonError as exc:
            if not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = self._swarm_call(request, options, privacy, exc)
            return self._record(_with_fallback(response, exc))

    async def acomplete(
        self, request: lm15.Request, options: Options = _NO_OPTIONS, privacy: PrivacyMode | None = None
    ) -> lm15.Response:
        """Run one call, awaited."""
        if self._local is None:
            return self._record(await self._swarm_acall(request, options, privacy))
        try:
            return self._record(await self._local_acomplete(self._local, request, options))
        except PylonError as exc:
            if not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = await self._swarm_acall(request, options, privacy, exc)
            return self._record(_with_fallback(response, exc))

    def _counted(self, events: Iterator[lm15.StreamEvent]) -> Iterator[lm15.StreamEvent]:
        for event in events:
            if isinstance(event, lm15.StreamEndEvent):
                self.totals.add(_usage_of_end(event))
            yield event

    def stream(
        self, request: lm15.Request, options: Options = _NO_OPTIONS, privacy: PrivacyMode | None = None
    ) -> Iterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, blocking. Swarm answers arrive whole."""
        if self._local is None:
            yield from self._counted(lm15.response_to_events(self._swarm_call(request, options, privacy)))
            return
        router = self._local
        started = False
        try:
            route, client = router.resolve()
            with router.guard(route):
                for event in self._counted(client.stream(request, route, router.capabilities(route), options)):
                    started = True
                    yield event
        except PylonError as exc:
            if started or not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = _with_fallback(self._swarm_call(request, options, privacy, exc), exc)
            yield from self._counted(lm15.response_to_events(response))

    async def astream(
        self, request: lm15.Request, options: Options = _NO_OPTIONS, privacy: PrivacyMode | None = None
    ) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, awaited."""
        if self._local is None:
            response = await self._swarm_acall(request, options, privacy)
            for event in self._counted(lm15.response_to_events(response)):
                yield event
            return
        router = self._local
        started = False
        try:
            route, client = router.resolve()
            with router.guard(route):
                async for event in client.astream(request, route, router.capabilities(route), options):
                    if isinstance(event, lm15.StreamEndEvent):
                        self.totals.add(_usage_of_end(event))
                    started = True
                    yield event
        except PylonError as exc:
            if started or not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = _with_fallback(await self._swarm_acall(request, options, privacy, exc), exc)
            for event in self._counted(lm15.response_to_events(response)):
                yield event

    def close(self) -> None:
        """Close connection pools and relay connections."""
        if self._local is not None:
            self._local.close()
        if self._swarm is not None:
            self._swarm.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonRuntime:
        # Deep copies of an LM (optimizers, Refine) must share usage and, later, budgets.
        return self


def _usage_of_end(event: lm15.StreamEndEvent) -> LmUsage:
    usage = event.usage or lm15.Usage()
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return LmUsage(prompt, completion, usage.total_tokens or prompt + completion, cost_of(event.provider_data))


def home_payer(
    home: Path,
    budget: Budget,
    wallet: WalletSource,
    *,
    auto_pay: bool,
    approve: Approver | None = None,
    pay_on_result: bool = True,
    ledger: SpendLedger | None = None,
) -> Payer:
    """What pays swarm jobs from ``home``: its spend ledger (unless one is given), its global
    budget, ``budget`` and the wallet ``wallet`` finds there (an LM's and a sandbox client's)."""
    return Payer(
        global_limit_msats=load_global_budget(home),
        ledger=ledger or SpendLedger(home / "ledger.sqlite"),
        budget=budget,
        wallet=lambda: wallet(home),
        auto_pay=auto_pay,
        approve=approve,
        pay_on_result=pay_on_result,
    )


def wallet_source(nwc_uri: str | None, wallet: NwcWallet | None = None) -> WalletSource | None:
    """The wallet given (an :class:`NwcWallet`, or an NWC URI checked now), or None for the home's default."""
    if wallet is not None:
        if nwc_uri is not None:
            raise ConfigError("pass nwc_uri= or wallet=, not both")
        return lambda home: wallet
    if nwc_uri is None:
        return None
    from dspy_pylon.pay.nwc import parse_nwc_uri

    parse_nwc_uri(nwc_uri)  # a malformed URI fails now, with a message that does not repeat it

    # Like the keys, the URI (it holds a spending secret) stays in this closure only.
    def from_uri(home: Path) -> NwcWallet:
        return NwcWallet(nwc_uri)

    return from_uri


def key_source(mnemonic: str | None, private_key: str | None) -> KeySource:
    """The keys: an explicit mnemonic or key (checked now: no I/O), else the home's identity file
    (read on first use)."""
    from dspy_pylon.identity import load_identity, resolve_keys

    if mnemonic is None and private_key is None:
        return lambda home: load_identity(home).keys
    # The secret stays in this closure: never in the LM's kwargs, history or saved state.
    keys = resolve_keys(mnemonic=mnemonic, private_key=private_key)
    return lambda home: keys
