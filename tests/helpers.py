"""Test helpers shared across the suite."""

from __future__ import annotations

from typing import Any

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
