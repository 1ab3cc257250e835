"""Real DSPy programs the contract tests compile, hash, save and load (shared with subprocesses)."""

from __future__ import annotations

import sys
from pathlib import Path

import dspy

#: Keys whose iteration order (as a set) depends on PYTHONHASHSEED: demo dicts built from it
#: are filled in a different order in every process.
SEEDED_KEYS = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}


class TwoSteps(dspy.Module):
    """A program with two predictors under chosen attribute names."""

    def __init__(self, first: str = "draft", second: str = "refine") -> None:
        super().__init__()
        setattr(self, first, dspy.Predict("question -> notes"))
        setattr(self, second, dspy.ChainOfThought("question, notes -> answer"))
        self._names = (first, second)

    def forward(self, question: str) -> dspy.Prediction:
        first, second = (getattr(self, name) for name in self._names)
        notes = first(question=question).notes
        return second(question=question, notes=notes)


def qa_demos() -> list[dspy.Example]:
    return [
        dspy.Example(question="What is 2 + 2?", answer="4"),
        dspy.Example(question="Capital of France?", answer="Paris"),
    ]


def qa_predict() -> dspy.Predict:
    """A bare ``dspy.Predict`` with two demos."""
    program = dspy.Predict("question -> answer")
    program.demos = qa_demos()
    return program


def qa_cot() -> dspy.ChainOfThought:
    """A ``dspy.ChainOfThought`` with two demos."""
    program = dspy.ChainOfThought("question -> answer")
    program.predict.demos = qa_demos()
    return program


def rich_program() -> dspy.ChainOfThought:
    """A program whose demos hold dicts with many keys (filled in hash-seed order), floats and unicode."""
    program = dspy.ChainOfThought("question, context -> answer")
    meta = {key: {"score": 0.1 * len(key), "big": 1e21, "neg": -0.0, "tag": key.upper()} for key in SEEDED_KEYS}
    program.predict.demos = [
        dspy.Example(
            question="Où est la gare ? 日本語 \u2028 ✓ 🚉",
            context={key: meta[key] for key in SEEDED_KEYS},
            answer="Près de l'église — « ici »",
            reasoning="café é\u00e9 e\u0301",
        ),
        dspy.Example(question="π?", context={"values": [3.14159, 2.5e-8, 1e300, 7, -1]}, answer="3.14"),
    ]
    return program


if __name__ == "__main__":
    # `python -m tests.contract.programs OUT_DIR`: save rich_program() there and print its id.
    import dspy_pylon as pylon

    built = rich_program()
    pylon.save_compiled(built, None, Path(sys.argv[1]))
    print(pylon.compiled_id_of(built))
