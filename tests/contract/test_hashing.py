"""Canonical JSON (RFC 8785) and content ids: the same content hashes the same, anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.contract.hashing import canonical_json, content_id, examples_id, jsonable

ROOT = Path(__file__).resolve().parents[2]


def test_key_order_does_not_matter() -> None:
    a = {"b": 1, "a": {"y": [1, 2], "x": None}, "c": "z"}
    b = {"c": "z", "a": {"x": None, "y": [1, 2]}, "b": 1}
    assert canonical_json(a) == canonical_json(b) == b'{"a":{"x":null,"y":[1,2]},"b":1,"c":"z"}'
    assert content_id(a) == content_id(b)


def test_rfc8785_example_serialises_exactly() -> None:
    # The example of RFC 8785 section 3.2.3 (numbers, escapes, literals).
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": '\u20ac$\u000f\nA\'B"\\\\"/',
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(value) == expected


def test_keys_sort_by_utf16_code_units() -> None:
    # RFC 8785 section 3.2.3's sorting example: U+1F600 (a surrogate pair) sorts before U+FB33.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6", "</script>"]
    ordered = ["\r", "1", "</script>", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    text = canonical_json({key: i for i, key in enumerate(keys)}).decode()
    positions = [text.index(canonical_json(key).decode() + ":") for key in ordered]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0.1, b"0.1"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (-0.0, b"0"),
        (1.0, b"1"),
        (1e-7, b"1e-7"),
        (5e-324, b"5e-324"),
        (2**53 - 1, b"9007199254740991"),
        ("é", '"é"'.encode()),
        ("\u2028", '"\u2028"'.encode()),
        ("\U0001f600", '"\U0001f600"'.encode()),
        ("\x1f", b'"\\u001f"'),
        ((1, "a"), b'[1,"a"]'),
    ],
)
def test_numbers_and_strings_are_stable(value: object, encoded: bytes) -> None:
    assert canonical_json(value) == encoded


def test_same_unicode_in_different_normal_forms_is_different_content() -> None:
    # No silent normalisation: "é" precomposed and decomposed are different text.
    assert content_id("\u00e9") != content_id("e\u0301")


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), 2**60, -(2**60), {"a": [float("nan")]}, {1: "x"}, object()],
    ids=["nan", "inf", "-inf", "2**60", "-2**60", "nested-nan", "int-key", "object"],
)
def test_what_json_cannot_carry_exactly_is_a_manifest_error(value: object) -> None:
    with pytest.raises(pylon.ManifestError):
        canonical_json(value)
    with pytest.raises(pylon.ManifestError):
        content_id(value)


def test_jsonable_names_where_an_unsupported_value_sits() -> None:
    with pytest.raises(pylon.ManifestError) as info:
        jsonable({"demos": [{"question": "q"}, {"answer": object()}]}, "predictor 'qa'")
    assert "predictor 'qa'.demos[1].answer" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_jsonable_refuses_non_finite_floats(value: float) -> None:
    with pytest.raises(pylon.ManifestError) as info:
        jsonable({"score": value}, "demo")
    assert "demo.score" in str(info.value)


def test_jsonable_turns_tuples_examples_and_models_into_plain_json() -> None:
    import pydantic

    class Point(pydantic.BaseModel):
        x: int
        y: float

    value = {"t": (1, 2), "example": dspy.Example(question="q", answer="a"), "point": Point(x=1, y=0.5)}
    assert jsonable(value) == {"t": [1, 2], "example": {"question": "q", "answer": "a"}, "point": {"x": 1, "y": 0.5}}


def _trainset() -> list[dspy.Example]:
    return [
        dspy.Example(question="What is 2 + 2?", answer="4").with_inputs("question"),
        dspy.Example(question="Capital of France?", answer="Paris", meta={"z": 1, "a": 0.1}).with_inputs("question"),
        dspy.Example(question="Où ?", answer="ici \u2028").with_inputs("question"),
    ]


def test_examples_id_is_a_stable_hex_digest() -> None:
    first, second = examples_id(_trainset()), examples_id(_trainset())
    assert first == second
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)


def test_examples_id_preserves_order() -> None:
    examples = _trainset()
    assert examples_id(examples) != examples_id(list(reversed(examples)))
    assert examples_id(examples) != examples_id(examples[:2])


def test_examples_id_changes_when_a_label_changes() -> None:
    examples = _trainset()
    relabelled = _trainset()
    relabelled[1] = dspy.Example(question="Capital of France?", answer="Lyon", meta={"z": 1, "a": 0.1}).with_inputs(
        "question"
    )
    assert examples_id(examples) != examples_id(relabelled)


def test_examples_id_changes_when_the_inputs_differ() -> None:
    as_inputs = [dspy.Example(question="q", context="c", answer="a").with_inputs("question")]
    more_inputs = [dspy.Example(question="q", context="c", answer="a").with_inputs("question", "context")]
    no_inputs = [dspy.Example(question="q", context="c", answer="a")]
    ids = {examples_id(as_inputs), examples_id(more_inputs), examples_id(no_inputs)}
    assert len(ids) == 3


def test_examples_id_ignores_field_insertion_order() -> None:
    a = [dspy.Example(question="q", answer="a").with_inputs("question")]
    b = [dspy.Example(answer="a", question="q").with_inputs("question")]
    assert examples_id(a) == examples_id(b)


def test_examples_id_is_the_same_in_other_processes_and_hash_seeds() -> None:
    code = (
        "import dspy\n"
        "from dspy_pylon.contract.hashing import examples_id\n"
        "keys = {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'}\n"
        "rows = [dspy.Example(question=k, answer={j: len(j) * 0.1 for j in keys}, tags=sorted(keys))"
        ".with_inputs('question', 'tags') for k in keys]\n"
        "rows.sort(key=lambda e: e.question)\n"
        "print(examples_id(rows))\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "4242")
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        outputs.append(out.strip())
    local: dict[str, object] = {}
    exec(code.replace("print(examples_id(rows))", "result = examples_id(rows)"), local)
    assert outputs[0] == outputs[1] == local["result"]
