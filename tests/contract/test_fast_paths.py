"""The two shortcuts the compiled_id takes for speed give exactly what the references give:
``json.dumps`` against the rfc8785 package, and ``predictor_state`` against DSPy's ``dump_state``."""

from __future__ import annotations

from typing import Any

import dspy
import pydantic
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_pylon.contract.artifact import predictor_state
from dspy_pylon.contract.hashing import _standard_json_is_canonical, canonical_json, jsonable

# Text over the whole of Unicode except lone surrogates (not encodable): controls, U+2028,
# astral characters (whose keys RFC 8785 sorts by UTF-16 code units) included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | TEXT | st.floats(allow_nan=False)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4))


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_canonical_json_is_rfc8785_wherever_it_can_be_written(value: Any) -> None:
    try:
        expected: bytes | None = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        expected = None
    if expected is None:
        try:
            canonical_json(value)
        except Exception as exc:  # the same refusal, as a ManifestError
            assert type(exc).__name__ == "ManifestError"
        else:
            raise AssertionError(f"{value!r} was hashed although RFC 8785 cannot write it")
    else:
        assert canonical_json(value) == expected


def test_the_fast_path_is_taken_for_text_and_refused_for_what_json_dumps_writes_differently() -> None:
    assert _standard_json_is_canonical({"question": "é\n\u2028\x1f", "n": [1, -(2**53) + 1, True, None]})
    assert not _standard_json_is_canonical({"x": 1.0})  # repr "1.0", ECMAScript "1"
    assert not _standard_json_is_canonical({"x": 2**53})  # beyond what a JSON number carries exactly
    assert not _standard_json_is_canonical({"\U0001f600": 1, "\uff61": 2})  # UTF-16 order differs
    assert canonical_json({"\U0001f600": 1, "\uff61": 2}) == rfc8785.dumps({"\U0001f600": 1, "\uff61": 2})


class Answer(pydantic.BaseModel):
    value: int
    note: str


def test_predictor_state_equals_dspy_dump_state() -> None:
    class Typed(dspy.Signature):
        """Answer with a typed value."""

        question: str = dspy.InputField(desc="the question")
        answer: Answer = dspy.OutputField()

    plain = dspy.Predict("question -> answer")
    plain.demos = [
        dspy.Example(question="q", answer="a", augmented=True),
        {"question": "dict demo", "answer": "b"},
        dspy.Example(question="x", answer=["list", 1, 2.5]).with_inputs("question"),
    ]
    typed = dspy.Predict(Typed)
    typed.demos = [dspy.Example(question="q", answer=Answer(value=1, note="é"))]
    for predictor in (plain, typed):
        reference = dict(predictor.dump_state(json_mode=True))
        reference.pop("lm")
        assert jsonable(predictor_state(predictor)) == jsonable(reference)
