"""PylonLM: a ``dspy.LM`` whose calls run through pylon's engines (venue routing only).

DSPy 3.4 executes every LM call through an engine (``complete(Request) -> Response``);
that is the supported extension point, with DSPy keeping caching, retries, history and
callbacks. PylonLM plugs a sync and an async engine in, both backed by one shared
:class:`PylonRuntime`, and fills each history entry's cost from what the runtime recorded.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy
from dspy import lm15
from dspy.utils.callback import ACTIVE_CALL_ID

from dspy_pylon import carrier
from dspy_pylon.config import Hybrid, Local, PylonConfig, Swarm, config_from_dict, config_to_dict, parse_model_string
from dspy_pylon.contract.modes import PrivacyMode, privacy_mode, stricter
from dspy_pylon.errors import ConfigError
from dspy_pylon.pay.billing import Approver
from dspy_pylon.route import Route
from dspy_pylon.runtime import Edges, PylonRuntime, key_source, wallet_source
from dspy_pylon.trace import lm_calls
from dspy_pylon.usage import LmUsage

if TYPE_CHECKING:
    from dspy_pylon.nostr.relay_client import RelayClient
    from dspy_pylon.pay.ledger import SpendLedger
    from dspy_pylon.pay.nwc import NwcWallet
    from dspy_pylon.swarm.reputation import Reputation


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


def _reported(response: lm15.Response) -> lm15.Response:
    # Inside a traced call ACTIVE_CALL_ID is the LM call's id: its usage, cost and route reach the
    # trace recorder from here, once per response (n > 1 makes several), history kept or not.
    call_id = ACTIVE_CALL_ID.get()
    if call_id is not None:
        lm_calls.add(call_id, lm_calls.LmCallInfo.from_response(response))
    return response


def _reported_stream(call_id: str | None, events: Iterator[lm15.StreamEvent]) -> Iterator[lm15.StreamEvent]:
    # The call id is taken when the stream is made (inside the call): DSPy may read it elsewhere.
    for event in events:
        if call_id is not None and isinstance(event, lm15.StreamEndEvent):
            lm_calls.add(call_id, lm_calls.LmCallInfo.from_response(event))
        yield event


async def _areported_stream(
    call_id: str | None, events: AsyncIterator[lm15.StreamEvent]
) -> AsyncIterator[lm15.StreamEvent]:
    async for event in events:
        if call_id is not None and isinstance(event, lm15.StreamEndEvent):
            lm_calls.add(call_id, lm_calls.LmCallInfo.from_response(event))
        yield event


class PylonEngine(_DeclaresCapabilities):
    """DSPy sync engine: one attempt per call; DSPy owns retries, cache and history.

    ``privacy`` holds this engine's calls to a mode on top of the runtime's own (the LM of
    a loaded manifest shares its runtime with the LM it was made from).
    """

    def __init__(self, runtime: PylonRuntime, privacy: PrivacyMode | None = None) -> None:
        self.runtime = runtime
        self.privacy = privacy

    def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return _reported(self.runtime.complete(request, carrier.options_of(request), self.privacy))

    def stream(self, request: lm15.Request) -> Iterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        events = self.runtime.stream(request, carrier.options_of(request), self.privacy)
        return _reported_stream(ACTIVE_CALL_ID.get(), events)

    def close(self) -> None:
        """Nothing to do: the runtime is shared with copies and outlives one LM."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonEngine:
        # Optimizers and Refine deep-copy programs; a copied engine would split usage
        # totals (and, with payments, budgets). All copies share this one.
        return self


class AsyncPylonEngine(_DeclaresCapabilities):
    """DSPy async engine over the same runtime as :class:`PylonEngine`."""

    def __init__(self, runtime: PylonRuntime, privacy: PrivacyMode | None = None) -> None:
        self.runtime = runtime
        self.privacy = privacy

    async def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return _reported(await self.runtime.acomplete(request, carrier.options_of(request), self.privacy))

    def stream(self, request: lm15.Request) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        return _areported_stream(
            ACTIVE_CALL_ID.get(), self.runtime.astream(request, carrier.options_of(request), self.privacy)
        )

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

    What the LM talks to can be handed in instead of built from the environment on first
    use: ``home`` (instead of ``$PYLON_HOME``), ``ledger``, ``reputation``, ``relay_client``
    (shared, left open), ``http_transport`` (every request to local servers) and ``wallet``
    (instead of ``nwc_uri``). Constructing an LM does no I/O.
    """

    #: Its engines report every response to the trace (a traced call they did not see was a cache hit).
    reports_calls = True

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
        privacy: PrivacyMode | str | None = None,
        nwc_uri: str | None = None,
        wallet: NwcWallet | None = None,
        approve_payment: Approver | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        callbacks: list[Any] | None = None,
        home: str | Path | None = None,
        ledger: SpendLedger | None = None,
        reputation: Reputation | None = None,
        relay_client: RelayClient | None = None,
        http_transport: Any = None,
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
                privacy=privacy_mode(privacy) if privacy is not None else None,
            )
        elif any(
            x is not None
            for x in (timeout, budget_sats, embedded_fallback, relays, bid_msats, auto_pay, providers, privacy)
        ):
            raise ConfigError(
                "pass timeout, budget_sats, embedded_fallback, relays, bid_msats, auto_pay, providers and privacy "
                "inside config=, not beside it"
            )
        _check_model_type(kwargs.get("model_type", "chat"))
        self.config = config
        edges = Edges(
            home=None if home is None else Path(home).expanduser(),
            ledger=ledger,
            reputation=reputation,
            relay_client=relay_client,
            http_transport=http_transport,
        )
        self.runtime = PylonRuntime(
            config, key_source(mnemonic, private_key), wallet_source(nwc_uri, wallet), approve_payment, edges
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
            carried = ("relays", "bid_msats", "auto_pay", "providers", "pay_on_result", "min_reputation")
            settings = {k: getattr(old, k) for k in carried}
            venue = replace(venue, **settings)
        elif isinstance(venue, Local) and isinstance(old, Local) and venue.backend == old.backend:
            venue = old
        copied.model = model
        return copied._rebound(replace(self.config, venue=venue, model=spec.model))

    def _rebound(self, config: PylonConfig) -> PylonLM:
        # This LM (a fresh copy) on a runtime of its own for ``config``, sharing usage totals,
        # budget, keys and wallet with the original's runtime.
        runtime = self.runtime.for_config(config)
        self.config = config
        self.runtime = runtime
        held = self._engine_privacy()  # a with_privacy() copy stays held
        self._engine_spec = PylonEngine(runtime, held)
        self._async_engine_spec = AsyncPylonEngine(runtime, held)
        return self

    def with_min_reputation(self, minimum: float) -> PylonLM:
        """A copy that sends swarm jobs only to providers of at least this reputation (0..1)
        on this machine (:attr:`Swarm.min_reputation <dspy_pylon.config.Swarm>`), or to this
        LM's own minimum when that is higher. Returns this LM itself for a local LM or when
        nothing would change. The copy shares usage totals, budget, keys and wallet."""
        venue = self.config.venue
        if isinstance(venue, Local):
            return self
        target = max(minimum, venue.min_reputation if venue.min_reputation is not None else 0.0)
        if venue.min_reputation is not None and target == venue.min_reputation:
            return self
        copied: PylonLM = super().copy()
        return copied._rebound(replace(self.config, venue=replace(venue, min_reputation=target)))

    @property
    def privacy(self) -> PrivacyMode | None:
        """The privacy mode this LM's calls are held to (``None``: no restriction)."""
        return stricter(self.config.privacy, self._engine_privacy())

    def _engine_privacy(self) -> PrivacyMode | None:
        """The mode this LM's engine holds its calls to, on top of its configuration's."""
        engine: Any = self._engine_spec
        held: PrivacyMode | None = getattr(engine, "privacy", None)
        return held

    def with_privacy(self, mode: PrivacyMode | str) -> PylonLM:
        """A copy whose calls are held to ``mode``, or to this LM's own mode when that is stricter.

        The copy shares this LM's runtime (connections, usage totals, budget, wallet): only
        what it may send differs. Returns this LM itself when nothing would change.
        """
        target = stricter(self.privacy, privacy_mode(mode))
        if target == self.privacy:
            return self
        copied: PylonLM = super().copy()
        # In the copy's config too: what pickles and program.save() keep (the runtime, shared,
        # keeps the original's config; the engines hold the copy to the mode).
        copied.config = replace(self.config, privacy=target)
        copied._engine_spec = PylonEngine(self.runtime, target)
        copied._async_engine_spec = AsyncPylonEngine(self.runtime, target)
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
        responses = response if isinstance(response, (tuple, list)) else (response,)  # n > 1: a tuple
        cache_hit = not entry.get("usage")
        entry["cost"] = 0 if cache_hit else lm_calls.total_cost(responses)
        entry["cost_details"] = {"kind": "exact", "currency": "msat", "cache_hit": cache_hit}
        # The engine reported a completed call itself; a cache hit did not reach it.
        lm_calls.record_if_unseen(ACTIVE_CALL_ID.get(), lm_calls.LmCallInfo.from_entry(entry))
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
