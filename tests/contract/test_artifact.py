"""compiled_id: every learned or structural edit changes it; the same program always has the same one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dspy
import pydantic
import pytest

import dspy_pylon as pylon
from dspy_pylon.contract.artifact import apply_artifact, program_artifact
from tests.contract.programs import TwoSteps, qa_cot, qa_predict, rich_program

ROOT = Path(__file__).resolve().parents[2]


def _with_demo_answer(answer: str) -> dspy.Predict:
    program = qa_predict()
    program.demos[0] = dspy.Example(question="What is 2 + 2?", answer=answer)
    return program


def _with_extra_demo() -> dspy.Predict:
    program = qa_predict()
    program.demos.append(dspy.Example(question="3 * 3?", answer="9"))
    return program


def _with_instructions() -> dspy.Predict:
    program = qa_predict()
    program.signature = program.signature.with_instructions("Answer in one word.")
    return program


def _with_description() -> dspy.Predict:
    program = qa_predict()
    program.signature = program.signature.with_updated_fields("answer", desc="a short answer")
    return program


def _with_prefix() -> dspy.Predict:
    program = qa_predict()
    program.signature = program.signature.with_updated_fields("answer", prefix="Final Answer:")
    return program


def _with_int_answer() -> dspy.Predict:
    program = dspy.Predict("question -> answer: int")
    program.demos = qa_predict().demos
    return program


def _answer_model(with_confidence: bool) -> type[pydantic.BaseModel]:
    fields: dict[str, object] = {"text": (str, ...)}
    if with_confidence:
        fields["confidence"] = (float, ...)
    return pydantic.create_model("Answer", **fields)  # type: ignore[call-overload]


def _cited(with_page: bool) -> dspy.Predict:
    fields: dict[str, object] = {"source": (str, ...)}
    if with_page:
        fields["page"] = (int, ...)
    citation = pydantic.create_model("Citation", **fields)  # type: ignore[call-overload]
    answer = pydantic.create_model("Answer", text=(str, ...), citations=(list[citation], ...))
    return _typed(False, answer)


def _typed(with_confidence: bool, answer: type[pydantic.BaseModel] | None = None) -> dspy.Predict:
    answer = answer or _answer_model(with_confidence)
    fields = {"question": (str, dspy.InputField()), "answer": (list[answer], dspy.OutputField())}
    return dspy.Predict(dspy.Signature(fields, "Answer the question.", signature_name="Typed"))


def _two_steps_with_demos() -> TwoSteps:
    program = TwoSteps()
    program.refine.predict.demos = [dspy.Example(question="q", notes="n", reasoning="r", answer="a")]
    return program


EDITS: dict[str, tuple[Callable[[], dspy.Module], Callable[[], dspy.Module]]] = {
    "one demo field value": (qa_predict, lambda: _with_demo_answer("four")),
    "a demo added": (qa_predict, _with_extra_demo),
    "instructions": (qa_predict, _with_instructions),
    "a field description": (qa_predict, _with_description),
    "a field prefix": (qa_predict, _with_prefix),
    "a field type (str to int)": (qa_predict, _with_int_answer),
    "a pydantic model field in the output type": (lambda: _typed(False), lambda: _typed(True)),
    "a field of a pydantic model nested in the output type": (lambda: _cited(False), lambda: _cited(True)),
    "the values of a Literal type": (
        lambda: dspy.Predict("question -> answer: Literal['yes', 'no']"),
        lambda: dspy.Predict("question -> answer: Literal['yes', 'no', 'maybe']"),
    ),
    "a predictor's name": (lambda: TwoSteps("draft", "refine"), lambda: TwoSteps("draft", "polish")),
    "the demos of a second predictor": (
        TwoSteps,
        _two_steps_with_demos,
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_single_edit_changes_the_compiled_id(edit: str) -> None:
    original, edited = EDITS[edit]
    assert pylon.compiled_id_of(original()) != pylon.compiled_id_of(edited())


@pytest.mark.parametrize("edit", list(EDITS))
def test_the_same_program_built_twice_has_the_same_id(edit: str) -> None:
    _original, edited = EDITS[edit]
    assert pylon.compiled_id_of(edited()) == pylon.compiled_id_of(edited())


def test_the_lm_set_on_a_predictor_is_not_part_of_the_id() -> None:
    program = qa_cot()
    before = pylon.compiled_id_of(program)
    program.predict.lm = pylon.LM("pylon:local")
    assert pylon.compiled_id_of(program) == before


def test_a_program_without_predictors_cannot_be_hashed() -> None:
    class Empty(dspy.Module):
        def forward(self) -> None:
            return None

    with pytest.raises(pylon.ManifestError):
        pylon.compiled_id_of(Empty())


@pytest.mark.parametrize(
    ("build", "fresh"),
    [
        (qa_cot, lambda: dspy.ChainOfThought("question -> answer")),
        (
            _two_steps_with_demos,
            TwoSteps,
        ),
        (rich_program, lambda: dspy.ChainOfThought("question, context -> answer")),
        (qa_predict, lambda: dspy.Predict("question -> answer")),
    ],
    ids=["chain-of-thought", "two-predictors", "rich-demos", "bare-predict"],
)
def test_save_then_load_gives_back_the_same_id(
    tmp_path: Path, build: Callable[[], dspy.Module], fresh: Callable[[], dspy.Module]
) -> None:
    program = build()
    saved_id = pylon.compiled_id_of(program)
    pylon.save_compiled(program, None, tmp_path / "compiled")
    loaded, manifest = pylon.load_compiled(tmp_path / "compiled", fresh())
    assert manifest.compiled_id == saved_id
    assert pylon.compiled_id_of(loaded) == saved_id


@pytest.mark.parametrize(
    "optimize", [_with_instructions, _with_prefix, _with_description], ids=["instructions", "prefix", "description"]
)
def test_an_optimized_signature_survives_save_and_load(tmp_path: Path, optimize: Callable[[], dspy.Predict]) -> None:
    # What instruction optimizers (COPRO, MIPROv2, GEPA) learn is the signature's text: a fresh
    # instance of the program has the original text, and loading must restore the learned one.
    class Wrapped(dspy.Module):
        def __init__(self, inner: dspy.Predict) -> None:
            super().__init__()
            self.qa = inner

    program = Wrapped(optimize())
    saved_id = pylon.compiled_id_of(program)
    pylon.save_compiled(program, None, tmp_path / "compiled")
    loaded, _ = pylon.load_compiled(tmp_path / "compiled", Wrapped(dspy.Predict("question -> answer")))
    assert pylon.compiled_id_of(loaded) == saved_id
    assert loaded.qa.signature.instructions == program.qa.signature.instructions
    assert (
        loaded.qa.signature.fields["answer"].json_schema_extra
        == program.qa.signature.fields["answer"].json_schema_extra
    )


def test_the_id_is_the_same_in_other_processes_and_hash_seeds(tmp_path: Path) -> None:
    runs = {
        seed: subprocess.Popen(
            [sys.executable, "-m", "tests.contract.programs", str(tmp_path / seed)],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "31337")
    }
    ids = {}
    for seed, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        ids[seed] = out.strip().splitlines()[-1]
    here = rich_program()
    assert ids["0"] == ids["31337"] == pylon.compiled_id_of(here)
    pylon.save_compiled(here, None, tmp_path / "here")
    program_bytes = (tmp_path / "here" / "program.json").read_bytes()
    assert (tmp_path / "0" / "program.json").read_bytes() == program_bytes
    assert (tmp_path / "31337" / "program.json").read_bytes() == program_bytes


def _state(program: dspy.Module) -> list[object]:
    return [
        (name, p.signature.instructions, [dict(d) for d in p.demos], p.lm) for name, p in program.named_predictors()
    ]


def test_applying_an_artifact_to_a_different_program_is_refused_and_changes_nothing() -> None:
    source = qa_cot()
    target = dspy.ChainOfThought("question, context -> answer")
    target.predict.demos = [dspy.Example(question="q", context="c", reasoning="r", answer="a")]
    before_id, before_state = pylon.compiled_id_of(target), _state(target)
    with pytest.raises(pylon.IntegrityError) as info:
        apply_artifact(target, program_artifact(source))
    assert info.value.expected and info.value.actual and info.value.expected != info.value.actual
    assert pylon.compiled_id_of(target) == before_id
    assert _state(target) == before_state


def test_loading_into_a_different_program_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    pylon.save_compiled(qa_cot(), None, tmp_path / "compiled")
    target = TwoSteps()
    before_id, before_state = pylon.compiled_id_of(target), _state(target)
    with pytest.raises(pylon.IntegrityError):
        pylon.load_compiled(tmp_path / "compiled", target)
    assert pylon.compiled_id_of(target) == before_id
    assert _state(target) == before_state
