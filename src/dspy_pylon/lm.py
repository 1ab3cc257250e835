"""PylonLM: a ``dspy.LM`` whose calls run through pylon's engines (venue routing only).

DSPy 3.4 executes every LM call through an engine (``complete(Request) -> Response``);
that is the supported extension point, with DSPy keeping caching, retries, history and
callbacks. PylonLM plugs a sync and an async engine in, both backed by one shared
:class:`PylonRuntime`, and fills each history entry's cost from what the runtime recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import dspy
from dspy import lm15

from dspy_pylon.config import Local, PylonConfig, Swarm, config_from_dict, config_to_dict, parse_model_string
from dspy_pylon.errors import ConfigError, VenueNotAvailable
from dspy_pylon.local.backends import LocalRouter
from dspy_pylon.route import Route
from dspy_pylon.usage import LmUsage, UsageTotals, cost_of

_NOT_YET = (
    "the {venue} venue is not available in this version of dspy-pylon (it arrives with the swarm "
    "release); use 'pylon:local' for now. Nothing was sent anywhere."
)


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


class PylonRuntime:
    """The state one PylonLM shares with all its copies: routing, clients and usage totals."""

    def __init__(self, config: PylonConfig) -> None:
        self.config = config
        self.totals = UsageTotals()
        venue = config.venue
        self._local = LocalRouter(venue, config.model, config.timeout) if isinstance(venue, Local) else None

    def _router(self) -> LocalRouter:
        if self._local is None:
            venue = "swarm" if isinstance(self.config.venue, Swarm) else "hybrid"
            raise VenueNotAvailable(_NOT_YET.format(venue=venue), feature=f"venue.{venue}")
        return self._local

    def route(self) -> Route:
        """The route the next call will take (probes local servers if not yet resolved)."""
        return self._router().resolve()[0]

    def _record(self, response: lm15.Response) -> lm15.Response:
        self.totals.add(LmUsage.from_response(response))
        return response

    def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call, blocking."""
        router = self._router()
        route, client = router.resolve()
        with router.guard(route):
            return self._record(client.complete(request, route))

    async def acomplete(self, request: lm15.Request) -> lm15.Response:
        """Run one call, awaited."""
        router = self._router()
        route, client = router.resolve()
        with router.guard(route):
            return self._record(await client.acomplete(request, route))

    def stream(self, request: lm15.Request) -> Iterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, blocking."""
        router = self._router()
        route, client = router.resolve()
        with router.guard(route):
            for event in client.stream(request, route):
                if isinstance(event, lm15.StreamEndEvent):
                    self.totals.add(_usage_of_end(event))
                yield event

    async def astream(self, request: lm15.Request) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call as a stream of lm15 events, awaited."""
        router = self._router()
        route, client = router.resolve()
        with router.guard(route):
            async for event in client.astream(request, route):
                if isinstance(event, lm15.StreamEndEvent):
                    self.totals.add(_usage_of_end(event))
                yield event

    def close(self) -> None:
        """Close connection pools."""
        if self._local is not None:
            self._local.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonRuntime:
        # Deep copies of an LM (optimizers, Refine) must share usage and, later, budgets.
        return self


def _usage_of_end(event: lm15.StreamEndEvent) -> LmUsage:
    usage = event.usage or lm15.Usage()
    prompt, completion = usage.input_tokens or 0, usage.output_tokens or 0
    return LmUsage(prompt, completion, usage.total_tokens or prompt + completion, cost_of(event.provider_data))


class PylonEngine:
    """DSPy sync engine: one attempt per call; DSPy owns retries, cache and history."""

    def __init__(self, runtime: PylonRuntime) -> None:
        self.runtime = runtime

    def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return self.runtime.complete(request)

    def stream(self, request: lm15.Request) -> Iterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        return self.runtime.stream(request)

    def close(self) -> None:
        """Nothing to do: the runtime is shared with copies and outlives one LM."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PylonEngine:
        # Optimizers and Refine deep-copy programs; a copied engine would split usage
        # totals (and, with payments, budgets). All copies share this one.
        return self


class AsyncPylonEngine:
    """DSPy async engine over the same runtime as :class:`PylonEngine`."""

    def __init__(self, runtime: PylonRuntime) -> None:
        self.runtime = runtime

    async def complete(self, request: lm15.Request) -> lm15.Response:
        """Run one call."""
        return await self.runtime.acomplete(request)

    def stream(self, request: lm15.Request) -> AsyncIterator[lm15.StreamEvent]:
        """Run one call, streaming."""
        return self.runtime.astream(request)

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
            config = PylonConfig(
                venue=venue,
                model=spec.model,
                timeout=60.0 if timeout is None else timeout,
                budget_sats=0 if budget_sats is None else budget_sats,
            )
        elif timeout is not None or budget_sats is not None or embedded_fallback is not None:
            raise ConfigError("pass timeout, budget_sats and embedded_fallback inside config=, not beside it")
        self.config = config
        self.runtime = PylonRuntime(config)
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

    def route(self) -> Route:
        """The route the next call will take (probes local servers on first use)."""
        return self.runtime.route()

    def usage(self) -> LmUsage:
        """Tokens and cost summed over every call this LM and its copies ran (cache hits excluded)."""
        return self.runtime.totals.total

    def total_spent_msats(self) -> int:
        """Millisatoshis spent by this LM and its copies so far (0 on the local venue)."""
        return self.runtime.totals.total.cost_msats

    def remaining_budget_msats(self) -> int | None:
        """Millisatoshis left in the budget, or None when the budget is unlimited."""
        budget = self.config.budget_msats
        return None if budget == 0 else max(0, budget - self.total_spent_msats())

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


def LM(model: str = "pylon:local", **kwargs: Any) -> PylonLM:  # noqa: N802 - mirrors dspy.LM
    """Build a :class:`PylonLM` from a model string.

    ``pylon:local[:<backend>[:<model>]]``, ``pylon:swarm[:<model>]``,
    ``pylon:hybrid[:<backend>[:<model>]]`` or the same with ``/``. ``kwargs`` are
    ``timeout``, ``budget_sats``, ``embedded_fallback`` and DSPy LM settings.
    """
    return PylonLM(model, **kwargs)
