"""Real parts for trying and testing pylon on one machine: a whole local swarm and tiny GGUF models.

:class:`LocalSwarm` (a relay, the development wallet, provider nodes and paying LMs) and
:func:`write_tiny_gguf` (a random-weight llama model of a few hundred KB) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspy_pylon.testing.local_swarm import LocalSwarm
    from dspy_pylon.testing.tiny_gguf import write_tiny_gguf

__all__ = ["LocalSwarm", "write_tiny_gguf"]

_EXPORTS = {"LocalSwarm": "dspy_pylon.testing.local_swarm", "write_tiny_gguf": "dspy_pylon.testing.tiny_gguf"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
