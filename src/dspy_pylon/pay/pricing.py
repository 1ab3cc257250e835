"""One price rule, for providers pricing a job and customers reading an announcement (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

Default = TypeVar("Default", int, int | None)


def price_for(model: str | None, default_msats: Default, prices: Iterable[tuple[str, int]]) -> int | Default:
    """What a job for ``model`` costs (msats): that model's own price, its name compared
    case-insensitively, else ``default_msats`` (also when no model is named; None for a
    provider that announced no price: unknown, not free)."""
    if model:
        wanted = model.lower()
        for name, price in prices:
            if name.lower() == wanted:
                return price
    return default_msats
