"""One price rule, for providers pricing a job and customers reading an announcement (pure)."""

from __future__ import annotations

from collections.abc import Iterable


def price_for(model: str | None, default_msats: int, prices: Iterable[tuple[str, int]]) -> int:
    """What a job for ``model`` costs (msats): that model's own price, its name compared
    case-insensitively, else ``default_msats`` (also when no model is named)."""
    if model:
        wanted = model.lower()
        for name, price in prices:
            if name.lower() == wanted:
                return price
    return default_msats
