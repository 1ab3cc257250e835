"""What a module tells the trace about its own call (an operator's attempts, whether it used its
fallback), keyed by DSPy's call id: ``annotate(**attributes)`` inside the call, where DSPy's
``ACTIVE_CALL_ID`` is that call's id; every recorder adds them to the node when the call ends.
Bounded: the oldest are forgotten. Nothing happens outside a traced call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from dspy.utils.callback import ACTIVE_CALL_ID

_LIMIT = 4096
_notes: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()


def annotate(**attributes: Any) -> None:
    """Attach plain-JSON ``attributes`` to the node of the call running now (when traced)."""
    call_id = ACTIVE_CALL_ID.get()
    if call_id is None:
        return
    with _lock:
        _notes.setdefault(call_id, {}).update(attributes)
        _notes.move_to_end(call_id)
        while len(_notes) > _LIMIT:
            _notes.popitem(last=False)


#: Reserved note keys: a swarm job the call ran (its route) and what it cost, for calls that are
#: no LM call (a sandbox run): the recorder moves them to the node's ``route`` and ``usage``.
ROUTE = "__pylon_route__"
COST = "__pylon_cost_msats__"


def annotate_job(route: dict[str, Any], *, cost_msats: int | None) -> None:
    """Tell the trace which swarm job the call running now ran (``route``: venue, provider,
    job_id, result_id, relay...) and what it cost: a receipt then links the node to that job."""
    annotate(**{ROUTE: dict(route), COST: cost_msats})


def get(call_id: str) -> dict[str, Any] | None:
    """What was attached to ``call_id`` (every recorder may read it)."""
    if not _notes:  # nothing was ever annotated: no lock on the recorder's path
        return None
    with _lock:
        found = _notes.get(call_id)
        return None if found is None else dict(found)
