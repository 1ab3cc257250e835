"""How backend options and the served route ride through DSPy's canonicalisation (pure).

DSPy turns a call's keyword arguments into an lm15 ``Request`` before a custom engine
sees it, and lm15 refuses every key it has no verdict for (``repeat_penalty``, ``min_p``,
llama.cpp's other sampler options). DSPy's own client gets such keys to an
OpenAI-compatible server only by falling back to LiteLLM, which a custom engine cannot.
lm15 does pass a few top-level keys verbatim into ``Config.extensions``; pylon folds its
options into one of them (``provider``, OpenRouter's routing object, which no local
server reads) under a ``pylon`` name, and the engine reads them back. Because that
key is part of the call, DSPy's cache key holds the options and the served route too: a
cached answer of one model is never returned for a call routed to another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspy import lm15

from dspy_pylon.capabilities import LLAMACPP_OPTIONS, OLLAMA_OPTIONS

CARRIER_KEY = "provider"
CARRIER_NAME = "pylon"

#: Every backend option pylon can carry; each backend's capabilities say which it reads.
OPTION_NAMES = LLAMACPP_OPTIONS | OLLAMA_OPTIONS


def fold(defaults: Mapping[str, Any], kwargs: Mapping[str, Any], route: str) -> dict[str, Any]:
    """The call's keyword arguments with pylon's options moved into the carrier.

    ``defaults`` are the LM's own settings (``lm.kwargs``), which DSPy merges under the
    call's: an option set there is cancelled with ``None`` (DSPy drops ``None`` values
    before canonicalising) and carried like one given to the call.
    """
    merged = {**defaults, **kwargs}
    options = {k: v for k, v in merged.items() if k in OPTION_NAMES and v is not None}
    folded = {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
    for key in OPTION_NAMES & set(merged):
        folded[key] = None
    carried: dict[str, Any] = {"route": route}
    if options:
        carried["options"] = dict(sorted(options.items()))
    folded[CARRIER_KEY] = {CARRIER_NAME: carried}
    return folded


def carried(extensions: Mapping[str, Any] | None) -> bool:
    """Whether ``extensions[CARRIER_KEY]`` is pylon's carrier (not a caller's own value)."""
    value = (extensions or {}).get(CARRIER_KEY)
    return isinstance(value, Mapping) and set(value) == {CARRIER_NAME} and isinstance(value[CARRIER_NAME], Mapping)


def options_of(request: lm15.Request) -> dict[str, Any]:
    """The backend options ``request`` carries. The request itself is left as it is:
    rebuilding it re-runs lm15's validation on every call, so the codecs skip the carrier."""
    extensions = request.config.extensions
    if extensions is None or not carried(extensions):
        return {}
    return dict(extensions[CARRIER_KEY][CARRIER_NAME].get("options") or {})
