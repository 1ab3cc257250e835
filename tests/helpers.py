"""Test helpers shared across the suite."""

from __future__ import annotations

from typing import Any, TypeVar

import dspy


class WholeAnswerAdapter(dspy.ChatAdapter):
    """ChatAdapter that takes the whole completion as the first output field.

    The tiny model writes noise, not DSPy's field markers; this keeps the real prompt
    formatting and LM path while making parsing total, so tests check routing, usage
    and concurrency rather than the model's skill.
    """

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        names = list(signature.output_fields)
        return {name: completion if i == 0 else "" for i, name in enumerate(names)}


E = TypeVar("E", bound=BaseException)


def pylon_cause(error: BaseException, kind: type[E]) -> E:
    """The pylon error of type ``kind`` that DSPy wrapped (``LM*Error`` from the pylon error)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, kind):
            return current
        current = current.__cause__
    raise AssertionError(f"{type(error).__name__}: {error} was not caused by a {kind.__name__}")
