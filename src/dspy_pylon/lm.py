"""PylonLM: a ``dspy.LM`` whose calls run through pylon's engines (venue routing only).

DSPy 3.4 executes every LM call through an engine (``complete(Request) -> Response``);
that is the supported extension point, with DSPy keeping caching, retries, history and
callbacks. PylonLM plugs a sync and an async engine in, both backed by one shared
:class:`PylonRuntime`, and fills each history entry's cost from what the runtime recorded.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import dspy
from dspy import lm15

from dspy_pylon import capabilities as caps_mod
from dspy_pylon import carrier
from dspy_pylon.capabilities import Capabilities
from dspy_pylon.config import Hybrid, Local, PylonConfig, Swarm, config_from_dict, config_to_dict, parse_model_string
from dspy_pylon.errors import ConfigError, PylonError, UnsupportedRequest
from dspy_pylon.local.backends import LocalRouter
from dspy_pylon.pay.billing import Approver, Payer
from dspy_pylon.pay.budget_file import load_global_budget
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.route import Route
from dspy_pylon.swarm.venue import SwarmVenue
from dspy_pylon.usage import Budget, LmUsage, UsageTotals, cost_of


def model_string(config: PylonConfig) -> str:
    """The canonical ``pylon:...`` model string for a configuration."""
    venue = config.venue
    if isinstance(venue, Swarm):
        parts = ["pylon", "swarm"]
    else:
        parts = ["pylon", "local" if isinstance(venue, Local) else "hybrid", venue.backend]
    if config.model:
        parts.append(config.model)
    return ":".join(parts)


KeySource = Callable[[], Any]
Options = Mapping[str, Any]
_NO_OPTIONS: Options = {}
WalletSource = Callable[[], NwcWallet | None]


def _default_wallet() -> NwcWallet | None:
    from dspy_pylon.pay.nwc import load_nwc_uri

    uri = load_nwc_uri()
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
    first needed (at once for the swarm venue, on the first fallback for hybrid).
    """

    def __init__(
        self,
        config: PylonConfig,
        keys: KeySource | None = None,
        wallet: WalletSource | None = None,
        approve: Approver | None = None,
    ) -> None:
        self.config = config
        self.totals = UsageTotals()
        # One budget for the LM and all its copies: deep copies share this runtime.
        self.budget = Budget(config.budget_msats)
        self._keys = keys
        self._wallet = wallet or _default_wallet
        self._approve = approve
        self._swarm: SwarmVenue | None = None
        self._swarm_lock = threading.Lock()
        self._last_capabilities: Capabilities | None = None
        venue = config.venue
        self._local: LocalRouter | None = None
        if isinstance(venue, Local):
            self._local = LocalRouter(venue, config.model, config.timeout)
        elif isinstance(venue, Hybrid):
            # Local first means a real local server: the embedded model would shadow the swarm.
            local = Local(backend=venue.backend, embedded_fallback=False)
            self._local = LocalRouter(local, config.model, config.timeout)
        if isinstance(venue, Swarm):
            self.swarm()

    def swarm(self) -> SwarmVenue:
        """The swarm venue (connecting on first use)."""
        with self._swarm_lock:
            if self._swarm is None:
                venue = self.config.venue
                if isinstance(venue, Local):
                    raise ConfigError("the local venue has no swarm")
                if self._keys is None:
                    raise ConfigError(
                        "a swarm venue needs Nostr keys: pass mnemonic= or private_key=, or run `pylon init`"
                    )
                from dspy_pylon.identity import pylon_home

                home = pylon_home()
                payer = Payer(
                    global_limit_msats=load_global_budget(home),
                    ledger=SpendLedger(home / "ledger.sqlite"),
                    budget=self.budget,
                    wallet=self._wallet,
                    auto_pay=venue.auto_pay,
                    approve=self._approve,
                    pay_on_result=venue.pay_on_result,
                )
                self._swarm = SwarmVenue(venue, self._keys(), self.config.model, self.config.timeout, payer)
            return self._swarm

    def for_config(self, config: PylonConfig) -> PylonRuntime:
        """A runtime for another model or venue that shares this one's usage totals, budget,
        keys, wallet and approval (``lm.copy(model=...)``)."""
        runtime = PylonRuntime(config, self._keys, self._wallet, self._approve)
        runtime.totals = self.totals
        runtime.budget = self.budget
        return runtime

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

    def _for_swarm(self, request: lm15.Request, options: Options) -> lm15.Request:
        if options:
            raise UnsupportedRequest(
                f"backend options ({', '.join(options)}) cannot be sent to the swarm: the swarm's "
                "transcripts carry the standard sampling settings only (a provider runs its own backend)",
                feature=next(iter(options)),
            )
        return request

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

    def complete(self, request: lm15.Request, options: Options = _NO_OPTIONS) -> lm15.Response:
        """Run one call, blocking. ``options`` are backend options (see :mod:`dspy_pylon.carrier`)."""
        if self._local is None:
            return self._record(self.swarm().complete(self._for_swarm(request, options)))
        try:
            return self._record(self._local_complete(self._local, request, options))
        except PylonError as exc:
            if not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = self.swarm().complete(self._for_swarm(request, options))
            return self._record(_with_fallback(response, exc))

    async def acomplete(self, request: lm15.Request, options: Options = _NO_OPTIONS) -> lm15.Response:
        """Run one call, awaited."""
        if self._local is None:
            return self._record(await self.swarm().acomplete(self._for_swarm(request, options)))
        try:
            return self._record(await self._local_acomplete(self._local, request, options))
        except PylonError as exc:
            if not isinstance(self.config.venue, Hybrid) or isinstance(exc, _NO_FALLBACK):
                raise
            with _keep_local_error(exc):
                response = await self.swarm().acomplete(self._for_swarm(request, options))
            return self._record(_with_fallback(response, exc))

    def _counted(self, events: Iterator[lm15.StreamEvent]) -> Iterator[lm15.StreamEvent]:
        for event in events:
            if isinstance(event, lm15.StreamEndEvent):
                self.totals.add(_usage_of_end(event))
            yield event

    def stream(self, request: lm15.Request, options: Options = _NO_OPTIONS) -> Iterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, blocking. Swarm answers arrive whole."""
        if self._local is None:
            yield from self._counted(lm15.response_to_events(self.swarm().complete(self._for_swarm(request, options))))
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
                response = _with_fallback(self.swarm().complete(self._for_swarm(request, options)), exc)
            yield from self._counted(lm15.response_to_events(response))

    async def astream(self, request: lm15.Request, options: Options = _NO_OPTIONS) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, awaited."""
        if self._local is None:
            response = await self.swarm().acomplete(self._for_swarm(request, options))
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
                response = _with_fallback(await self.swarm().acomplete(self._for_swarm(request, options)), exc)
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


class _DeclaresCapabilities:
    """The capability hints DSPy reads from an engine object, answered by the shared runtime."""

    runtime: PylonRuntime

    @property
    def supports_function_calling(self) -> bool:
        """Whether the backend takes native tool calls (read by DSPy's adapters)."""
        return self.runtime.capabilities().function_calling

    @property
    def supports_response_schema(self) -> bool:
        """Whether the backend enforces a JSON schema (read by DSPy's JSONAdapter)."""
        return self.runtime.capabilities().response_schema

    @property
    def supports_reasoning(self) -> bool:
        """Whether the backend has a reasoning dial DSPy can use natively."""
        return self.runtime.capabilities().reasoning

    @property
    def supported_params(self) -> frozenset[str]:
        """The request keys the backend honours."""
        return self.runtime.capabilities().params


class PylonEngine(_DeclaresCapabilities):
    """DSPy sync engine: one attempt per call; DSPy owns retries, cache and history."""

    def __init__(self, runtime: PylonRuntime) -> None:
        self.runtime = runtime

    def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return self.runtime.complete(request, carrier.options_of(request))

    def stream(self, request: lm15.Request) -> Iterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        return self.runtime.stream(request, carrier.options_of(request))

    def close(self) -> None:
        """Nothing to do: the runtime is shared with copies and outlives one LM."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonEngine:
        # Optimizers and Refine deep-copy programs; a copied engine would split usage
        # totals (and, with payments, budgets). All copies share this one.
        return self


class AsyncPylonEngine(_DeclaresCapabilities):
    """DSPy async engine over the same runtime as :class:`PylonEngine`."""

    def __init__(self, runtime: PylonRuntime) -> None:
        self.runtime = runtime

    async def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return await self.runtime.acomplete(request, carrier.options_of(request))

    def stream(self, request: lm15.Request) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        return self.runtime.astream(request, carrier.options_of(request))

    async def aclose(self) -> None:
        """Nothing to do: the runtime is shared with copies and outlives one LM."""

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncPylonEngine:
        return self


class PylonLM(dspy.LM):
    """A DSPy LM that runs calls locally, on the Nostr swarm, or local-first (hybrid).

    Build one with :func:`dspy_pylon.LM` (``pylon.LM("pylon:local")``) or
    :meth:`from_config`. Every response carries ``provider_data["pylon"]`` with the
    route taken (venue, backend, base URL, served model), latency and ``cost_msats``.
    Each history entry's ``cost`` holds that exact cost as an integer number of
    millisatoshis (``cost_details["currency"] == "msat"``), 0 for a cache hit.
    """

    def __init__(
        self,
        model: str = "pylon:local",
        *,
        config: PylonConfig | None = None,
        timeout: float | None = None,
        budget_sats: int | None = None,
        embedded_fallback: bool | None = None,
        mnemonic: str | None = None,
        private_key: str | None = None,
        relays: list[str] | tuple[str, ...] | None = None,
        bid_msats: int | None = None,
        auto_pay: bool | None = None,
        providers: list[str] | tuple[str, ...] | None = None,
        nwc_uri: str | None = None,
        approve_payment: Approver | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        callbacks: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        spec = parse_model_string(model)
        if config is None:
            venue = spec.venue
            if embedded_fallback is not None:
                if not isinstance(venue, Local):
                    raise ConfigError("embedded_fallback applies to the local venue only")
                venue = Local(backend=venue.backend, embedded_fallback=embedded_fallback)
            swarm_fields: dict[str, Any] = {
                name: value
                for name, value in (
                    ("relays", None if relays is None else tuple(relays)),
                    ("bid_msats", bid_msats),
                    ("auto_pay", auto_pay),
                    ("providers", None if providers is None else tuple(providers)),
                )
                if value is not None
            }
            if swarm_fields:
                if isinstance(venue, Local):
                    raise ConfigError(f"{', '.join(swarm_fields)} apply to the swarm and hybrid venues only")
                venue = replace(venue, **swarm_fields)
            config = PylonConfig(
                venue=venue,
                model=spec.model,
                timeout=60.0 if timeout is None else timeout,
                budget_sats=0 if budget_sats is None else budget_sats,
            )
        elif any(
            x is not None for x in (timeout, budget_sats, embedded_fallback, relays, bid_msats, auto_pay, providers)
        ):
            raise ConfigError(
                "pass timeout, budget_sats, embedded_fallback, relays, bid_msats, auto_pay and providers inside "
                "config=, not beside it"
            )
        _check_model_type(kwargs.get("model_type", "chat"))
        self.config = config
        self.runtime = PylonRuntime(
            config, _key_source(mnemonic, private_key), _wallet_source(nwc_uri), approve_payment
        )
        super().__init__(
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            cache=cache,
            num_retries=num_retries,
            callbacks=callbacks,
            engine=PylonEngine(self.runtime),
            async_engine=AsyncPylonEngine(self.runtime),
            **kwargs,
        )

    @classmethod
    def from_config(cls, config: PylonConfig, **kwargs: Any) -> PylonLM:
        """An LM for ``config``; ``kwargs`` are DSPy LM settings (temperature, max_tokens, cache...)."""
        return cls(model_string(config), config=config, **kwargs)

    @classmethod
    def swarm(cls, private_key: str, config: PylonConfig | None = None, **kwargs: Any) -> PylonLM:
        """A swarm (or hybrid) LM signing jobs with ``private_key`` (hex or nsec)."""
        config = config or PylonConfig.swarm()
        return cls(model_string(config), config=config, private_key=private_key, **kwargs)

    @classmethod
    def from_mnemonic(cls, mnemonic: str, config: PylonConfig | None = None, **kwargs: Any) -> PylonLM:
        """A swarm (or hybrid) LM whose Nostr keys come from a BIP-39 mnemonic (NIP-06)."""
        config = config or PylonConfig.swarm()
        return cls(model_string(config), config=config, mnemonic=mnemonic, **kwargs)

    def route(self) -> Route:
        """The route the next call will take (probes local servers on first use)."""
        return self.runtime.route()

    def copy(self, **kwargs: Any) -> PylonLM:
        """As ``dspy.LM.copy``; a new ``model=`` string routes the copy to that model.

        The copy then has a runtime of its own for the new venue, backend and model, still
        sharing this LM's usage totals, budget, keys and wallet. Venue settings (relays,
        bid, providers) carry over when the new string names the same kind of venue.
        """
        model = kwargs.pop("model", None)
        copied: PylonLM = super().copy(**kwargs)
        if model is None or model == self.model:
            return copied
        spec = parse_model_string(model)
        venue = spec.venue
        old = self.config.venue
        if isinstance(venue, (Swarm, Hybrid)) and isinstance(old, (Swarm, Hybrid)):
            settings = {k: getattr(old, k) for k in ("relays", "bid_msats", "auto_pay", "providers", "pay_on_result")}
            venue = replace(venue, **settings)
        elif isinstance(venue, Local) and isinstance(old, Local) and venue.backend == old.backend:
            venue = old
        config = replace(self.config, venue=venue, model=spec.model)
        runtime = self.runtime.for_config(config)
        copied.model = model
        copied.config = config
        copied.runtime = runtime
        copied._engine_spec = PylonEngine(runtime)
        copied._async_engine_spec = AsyncPylonEngine(runtime)
        return copied

    def _carry(self, prompt: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        _check_model_type(self.model_type)  # lm.copy(model_type=...) sets it after construction
        if isinstance(prompt, lm15.Request) or "request" in kwargs:
            return kwargs  # an explicit Request carries everything in its own config
        return carrier.fold(self.kwargs, kwargs, self.runtime.cache_route())

    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        """As ``dspy.LM.__call__``; backend options (``repeat_penalty=``...) and the served
        route travel folded into one key DSPy passes through (:mod:`dspy_pylon.carrier`)."""
        return super().__call__(prompt, messages=messages, **self._carry(prompt, kwargs))

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        """As ``dspy.LM.acall``, with backend options carried as in :meth:`__call__`."""
        return await super().acall(prompt, messages=messages, **self._carry(prompt, kwargs))

    def usage(self) -> LmUsage:
        """Tokens and cost summed over every call this LM and its copies ran (cache hits excluded)."""
        return self.runtime.totals.total

    def total_spent_msats(self) -> int:
        """Millisatoshis paid by this LM and its copies so far, fees included (0 on the local venue).

        Includes jobs that were paid but never answered, so it can exceed the sum of
        the history's ``cost`` entries; the spend ledger explains every payment.
        """
        return self.runtime.budget.spent_msats

    def remaining_budget_msats(self) -> int | None:
        """Millisatoshis neither spent nor reserved by calls in flight; None when unlimited."""
        return self.runtime.budget.remaining_msats()

    def pay(self, job_id: str, timeout: float | None = None) -> lm15.Response:
        """Approve the bill of a job that raised :class:`~dspy_pylon.errors.PaymentRequired`.

        The bill is checked again (expiry, budget), paid, and the job's response returned
        once the provider delivers it (waiting up to ``timeout`` s, default the LM's).
        """
        return self.runtime.pay(job_id, timeout)

    def update_history(self, entry: dict[str, Any]) -> None:
        """Fill ``cost`` (integer msats) before DSPy records the entry.

        A cache hit reaches here with empty usage and the original response's
        ``provider_data``: it cost nothing now, and is recorded as 0.
        """
        response = entry.get("response")
        cache_hit = not entry.get("usage")
        cost = 0 if cache_hit else cost_of(getattr(response, "provider_data", None))
        entry["cost"] = cost
        entry["cost_details"] = {"kind": "exact", "currency": "msat", "cache_hit": cache_hit}
        super().update_history(entry)

    def dump_state(self) -> dict[str, Any]:
        """State for ``program.save()``: DSPy's LM settings plus the pylon configuration.

        Engines are rebuilt on load rather than serialised; nothing secret is written.
        """
        state: dict[str, Any] = dspy.BaseLM.dump_state(self)
        state["pylon_config"] = config_to_dict(self.config)
        return state

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> PylonLM:
        """Rebuild a PylonLM from :meth:`dump_state` output (``program.load(...)``)."""
        from dspy.clients.base_lm import LM_CLASS_STATE_KEY

        state = dict(state)
        state.pop(LM_CLASS_STATE_KEY, None)
        config = config_from_dict(state.pop("pylon_config", None) or {})
        return cls(state.pop("model", model_string(config)), config=config, **state)

    def close(self) -> None:
        """Close this LM's connection pools (shared with its copies)."""
        self.runtime.close()
        super().close()

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonLM:
        # Optimizers deep-copy programs: the copy keeps sharing this LM's runtime (usage,
        # budget, connections; the runtime and engines return themselves). Spelled out
        # because __reduce__ below, which pickling needs, would otherwise rebuild it.
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return copied

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the saved state (``dump_state``): settings and venue, never a secret.

        Connections, loops and locks are not pickled; the unpickled LM builds them lazily,
        and keys, wallet and global budget are resolved again from ``$PYLON_HOME`` and the
        environment, as for ``pylon.LM(...)``. A mnemonic, key, NWC URI or
        ``approve_payment`` callback passed to the constructor is not carried.
        """
        return (_rebuild_lm, (self.dump_state(),))


def _check_model_type(model_type: str) -> None:
    if model_type != "chat":
        raise ConfigError(
            f"model_type={model_type!r} is not supported by pylon's venues: they serve chat completions; "
            "use the default model_type='chat'"
        )


def _rebuild_lm(state: dict[str, Any]) -> PylonLM:
    return PylonLM.load_state(state)


def _wallet_source(nwc_uri: str | None) -> WalletSource | None:
    if nwc_uri is None:
        return None
    from dspy_pylon.pay.nwc import parse_nwc_uri

    parse_nwc_uri(nwc_uri)  # a malformed URI fails now, with a message that does not repeat it

    # Like the keys, the URI (it holds a spending secret) stays in this closure only.
    def wallet() -> NwcWallet:
        return NwcWallet(nwc_uri)

    return wallet


def _key_source(mnemonic: str | None, private_key: str | None) -> KeySource:
    # The secret stays in this closure: never in the LM's kwargs, history or saved state.
    def keys() -> Any:
        from dspy_pylon.identity import resolve_keys

        return resolve_keys(mnemonic=mnemonic, private_key=private_key)

    return keys


def LM(model: str = "pylon:local", **kwargs: Any) -> PylonLM:  # noqa: N802 - mirrors dspy.LM
    """Build a :class:`PylonLM` from a model string.

    ``pylon:local[:<backend>[:<model>]]``, ``pylon:swarm[:<model>]``,
    ``pylon:hybrid[:<backend>[:<model>]]`` or the same with ``/``. ``kwargs`` are
    ``timeout``, ``budget_sats``, ``embedded_fallback`` and DSPy LM settings.
    """
    return PylonLM(model, **kwargs)


def pay(job_id: str, lm: PylonLM | None = None, timeout: float | None = None) -> lm15.Response:
    """Approve and pay the bill of a job that raised :class:`~dspy_pylon.errors.PaymentRequired`.

    ``lm`` defaults to the LM configured in DSPy (``dspy.configure(lm=...)``). Returns the
    job's response (``.text``) once the provider delivers it.
    """
    target = lm if lm is not None else dspy.settings.lm
    if not isinstance(target, PylonLM):
        raise ConfigError("pay() needs the PylonLM that ran the job: pass lm= or dspy.configure(lm=...) first")
    return target.pay(job_id, timeout)
