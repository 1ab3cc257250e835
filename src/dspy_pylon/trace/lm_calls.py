"""What a pylon LM call reports about itself to the trace recorder, keyed by DSPy's call id.

A pylon engine runs inside the LM call, where DSPy's ``ACTIVE_CALL_ID`` holds that call's id:
each response it returns (``n`` of them for ``n > 1``) adds its tokens, exact cost and route
here (:func:`add`), whether or not DSPy keeps history (``disable_history`` skips
``update_history``). ``PylonLM.update_history`` records what the engine could not see: a cache
hit, a streamed call. The recorder takes the total at ``on_lm_end`` (any number of recorders,
and any :class:`~dspy_pylon.callbacks.PylonCallback` through ``lm_call_info``). Bounded: the
oldest calls are forgotten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_LIMIT = 4096
ROUTE_KEYS = ("venue", "backend", "model", "provider", "job_id", "result_id", "relay", "encryption")


def _route(provider_data: Any) -> dict[str, Any]:
    from dspy_pylon.usage import pylon_data

    data = pylon_data(provider_data)
    return {key: data[key] for key in ROUTE_KEYS if data.get(key) is not None}


def _exact(cost: Any) -> int | None:
    return cost if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0 else None


@dataclass(frozen=True)
class LmCallInfo:
    """One LM call's usage (tokens, exact cost in msats) and route."""

    prompt_tokens: int
    completion_tokens: int
    cost_msats: int | None  # None: not known (an LM that is not pylon's reports no exact cost)
    cache_hit: bool
    route: dict[str, Any]
    responses: int = 1

    @classmethod
    def from_response(cls, response: Any) -> LmCallInfo:
        """From one lm15 response a pylon engine returned (its route in ``provider_data["pylon"]``)."""
        from dspy_pylon.usage import cost_of

        usage = getattr(response, "usage", None)
        provider_data = getattr(response, "provider_data", None)
        return cls(
            prompt_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            cost_msats=cost_of(provider_data),
            cache_hit=False,
            route=_route(provider_data),
        )

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LmCallInfo:
        """From a DSPy history entry (pylon's fills ``cost`` and ``provider_data["pylon"]``; with
        ``n > 1`` its ``response`` is a tuple of responses)."""
        usage = entry.get("usage") or {}
        response = entry.get("response")
        first = response[0] if isinstance(response, (tuple, list)) and response else response
        exact = (entry.get("cost_details") or {}).get("currency") == "msat"  # pylon's; litellm's is USD
        route = _route(getattr(first, "provider_data", None))
        if not usage:  # a cache hit: no job ran now, so it links to none (the cached one was another call's)
            route = {k: v for k, v in route.items() if k not in ("job_id", "result_id", "relay")}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cost_msats=_exact(entry.get("cost")) if exact else None,
            cache_hit=not usage,
            route=route,
        )

    @classmethod
    def cache_hit_info(cls) -> LmCallInfo:
        """A call DSPy answered from its cache: nothing spent now."""
        return cls(0, 0, 0, True, {}, responses=0)

    def plus(self, other: LmCallInfo) -> LmCallInfo:
        """Both responses of one call together (``n > 1``): tokens and cost add up; the route is the first's."""
        cost = None if self.cost_msats is None or other.cost_msats is None else self.cost_msats + other.cost_msats
        return LmCallInfo(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cost,
            self.cache_hit and other.cache_hit,
            self.route or other.route,
            self.responses + other.responses,
        )


def total_cost(responses: Iterable[Any]) -> int:
    """The exact cost (msats) of a call's responses together."""
    from dspy_pylon.usage import cost_of

    return sum(cost_of(getattr(response, "provider_data", None)) for response in responses)


_calls: OrderedDict[str, LmCallInfo] = OrderedDict()
_lock = threading.Lock()


def _keep(call_id: str, info: LmCallInfo) -> None:
    _calls[call_id] = info
    _calls.move_to_end(call_id)
    while len(_calls) > _LIMIT:
        _calls.popitem(last=False)


def add(call_id: str | None, info: LmCallInfo) -> None:
    """Add one response's ``info`` to the call ``call_id`` (nothing outside a traced call)."""
    if call_id is None:
        return
    with _lock:
        earlier = _calls.get(call_id)
        _keep(call_id, info if earlier is None else earlier.plus(info))


def record_if_unseen(call_id: str | None, info: LmCallInfo) -> None:
    """Leave ``info`` for ``call_id`` unless its engine already reported the call's responses."""
    if call_id is None:
        return
    with _lock:
        if call_id not in _calls:
            _keep(call_id, info)


def get(call_id: str) -> LmCallInfo | None:
    """The info left for ``call_id`` (every recorder may read it; the oldest are forgotten)."""
    with _lock:
        return _calls.get(call_id)
