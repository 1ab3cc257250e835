"""What a pylon LM call reports about itself to the trace recorder, keyed by DSPy's call id.

``PylonLM.update_history`` runs inside the LM call, where DSPy's ``ACTIVE_CALL_ID`` holds that
call's id: it leaves the call's usage, cost and route here, and the recorder takes them at
``on_lm_end`` (any number of recorders, and any :class:`~dspy_pylon.callbacks.PylonCallback`
through ``lm_call_info``). Bounded: the oldest calls are forgotten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

_LIMIT = 4096


@dataclass(frozen=True)
class LmCallInfo:
    """One LM call's usage (tokens, exact cost in msats) and route, as its history entry says."""

    prompt_tokens: int
    completion_tokens: int
    cost_msats: int | None  # None: not known (an LM that is not pylon's reports no exact cost)
    cache_hit: bool
    route: dict[str, Any]

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> LmCallInfo:
        """From a DSPy history entry (pylon's fills ``cost`` and ``provider_data["pylon"]``)."""
        from dspy_pylon.usage import pylon_data

        usage = entry.get("usage") or {}
        response = entry.get("response")
        data = pylon_data(getattr(response, "provider_data", None))
        route = {
            key: data[key]
            for key in ("venue", "backend", "model", "provider", "job_id", "relay", "encryption")
            if key in data
        }
        cost = entry.get("cost")
        exact = (entry.get("cost_details") or {}).get("currency") == "msat"  # pylon's; litellm's is USD
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cost_msats=cost if exact and isinstance(cost, int) and not isinstance(cost, bool) else None,
            cache_hit=not usage,
            route=route,
        )


_calls: OrderedDict[str, LmCallInfo] = OrderedDict()
_lock = threading.Lock()


def record(call_id: str | None, info: LmCallInfo) -> None:
    """Leave ``info`` for the call ``call_id`` (nothing when no callback is tracing calls)."""
    if call_id is None:
        return
    with _lock:
        _calls[call_id] = info
        while len(_calls) > _LIMIT:
            _calls.popitem(last=False)


def get(call_id: str) -> LmCallInfo | None:
    """The info left for ``call_id`` (every recorder may read it; the oldest are forgotten)."""
    with _lock:
        return _calls.get(call_id)
