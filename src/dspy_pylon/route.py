"""Where a call went: the venue, the backend and the model that served it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """The route one call took. Recorded in ``provider_data["pylon"]`` of every response."""

    venue: str
    backend: str
    base_url: str
    model: str

    def as_dict(self) -> dict[str, Any]:
        """The route as plain JSON data."""
        return asdict(self)
