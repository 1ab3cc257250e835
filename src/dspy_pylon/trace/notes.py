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


def get(call_id: str) -> dict[str, Any] | None:
    """What was attached to ``call_id`` (every recorder may read it)."""
    if not _notes:  # nothing was ever annotated: no lock on the recorder's path
        return None
    with _lock:
        found = _notes.get(call_id)
        return None if found is None else dict(found)
