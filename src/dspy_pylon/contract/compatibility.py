"""A manifest's requirements against what a runtime offers: pure checks over plain facts.

:func:`check` returns every unmet requirement (not only the first), each a code and the
words for it; :mod:`dspy_pylon.contract.loading` gathers the facts from a real LM and
raises :class:`~dspy_pylon.errors.CompatibilityError` with all of them. The same route
table decides call-time refusals (:func:`destination_allowed`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dspy_pylon.contract.manifest import Compatibility
from dspy_pylon.contract.modes import Destination, Lane, PrivacyMode, allowed_destinations


class Requirement(enum.StrEnum):
    """Which kind of requirement failed."""

    TOOL = "tool"
    LANE = "lane"
    PRIVACY = "privacy"
    REPUTATION = "reputation"


@dataclass(frozen=True)
class Unmet:
    """One requirement the runtime does not meet, and why, in words."""

    requirement: Requirement
    detail: str

    def __str__(self) -> str:
        return f"{self.requirement.value}: {self.detail}"


@dataclass(frozen=True)
class RuntimeFacts:
    """What a runtime offers a compiled program.

    ``lm``: how to name the LM in messages. ``lanes``: the pylon lanes it offers (none for an
    LM that is not pylon's). ``routes``: where its calls can go. ``tools``: tool names given.
    ``provider_reputations``: the reputation of each provider the LM targets (empty when it
    targets none; untargeted swarm calls are filtered when providers are chosen).
    """

    lm: str
    lanes: frozenset[Lane]
    routes: frozenset[Destination]
    tools: frozenset[str] = frozenset()
    provider_reputations: Mapping[str, float] = field(default_factory=dict)


def check(requirements: Compatibility, facts: RuntimeFacts) -> tuple[Unmet, ...]:
    """Every requirement of ``requirements`` that ``facts`` do not meet (empty: compatible)."""
    unmet: list[Unmet] = []
    for tool in requirements.required_tools:
        if tool not in facts.tools:
            given = ", ".join(sorted(facts.tools)) or "none"
            unmet.append(
                Unmet(Requirement.TOOL, f"the program calls tool {tool!r}, which was not given (given: {given})")
            )
    for lane in requirements.required_lanes:
        if lane not in facts.lanes:
            offers = ", ".join(sorted(lane.value for lane in facts.lanes)) or "no pylon lane"
            unmet.append(
                Unmet(Requirement.LANE, f"the program needs the {lane.value!r} lane; {facts.lm} offers {offers}")
            )
    if requirements.privacy_modes_allowed:
        mode = requirements.privacy_floor()
        if not facts.routes and mode is not PrivacyMode.PUBLIC_OK:
            # Nothing to hold to the mode: an LM configured later would run the program unchecked.
            unmet.append(
                Unmet(
                    Requirement.PRIVACY,
                    f"under {mode.value!r} the program needs its LM given (load_compiled(lm=...)) or configured, "
                    "so that every call is held to the mode",
                )
            )
        elif facts.routes and not facts.routes & allowed_destinations(mode):
            routes = ", ".join(sorted(route.value for route in facts.routes))
            unmet.append(
                Unmet(
                    Requirement.PRIVACY,
                    f"under {mode.value!r} calls may only run locally or encrypted to one provider; "
                    f"{facts.lm} sends them {routes}",
                )
            )
    else:
        unmet.append(Unmet(Requirement.PRIVACY, "the manifest allows no privacy mode at all"))
    floor = requirements.min_provider_reputation
    if floor is not None:
        for pubkey, score in sorted(facts.provider_reputations.items()):
            if score < floor:
                unmet.append(
                    Unmet(
                        Requirement.REPUTATION,
                        f"provider {pubkey} has reputation {score:.2f}, below the minimum {floor:.2f}",
                    )
                )
    return tuple(unmet)
