"""``pylon compile SCRIPT.py:PROGRAM``: a real compile from the command line, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import dspy_pylon as pylon
from tests.cli_run import run_pylon

SCRIPT = """
import dspy

program = dspy.Predict("question -> answer")

def metric(example, prediction, trace=None):
    return bool(prediction.answer)
"""


def _files(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "qa.py"
    script.write_text(SCRIPT)
    train = tmp_path / "train.jsonl"
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(1, 6)]
    train.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return script, train


def test_compile_from_the_command_line(tmp_path: Path, llamacpp_url: str) -> None:
    script, train = _files(tmp_path)
    out = tmp_path / "qa-compiled"
    result = run_pylon(
        *("compile", f"{script}:program", "--trainset", str(train), "--inputs", "question"),
        *("--optimizer", "LabeledFewShot", "--option", "k=2", "--lm", "pylon:local:llamacpp"),
        *("--max-tokens", "4", "--rollouts", "1", "--out", str(out)),
    )
    assert result.returncode == 0, result.stderr
    verified = pylon.verify_compiled(out)
    manifest = verified.manifest
    assert manifest.compiled_id in result.stdout and "saved" in result.stdout
    assert manifest.optimizer == "LabeledFewShot" and manifest.optimizer_settings["k"] == 2
    assert len(verified.artifact["predictors"][0]["state"]["demos"]) == 2
    assert manifest.scorecard is not None and manifest.valset_id == manifest.trainset_id  # scored on the trainset
    assert manifest.signature is None  # --sign not given


def test_compile_refusals_are_clear(tmp_path: Path) -> None:
    script, train = _files(tmp_path)
    common = ("--trainset", str(train), "--inputs", "question")
    cases = {
        "no name": run_pylon("compile", str(script), *common),
        "unknown name": run_pylon("compile", f"{script}:nothing", *common),
        "not a module": run_pylon("compile", f"{script}:metric", *common, "--metric", f"{script}:metric"),
        "unknown optimizer": run_pylon("compile", f"{script}:program", *common, "--optimizer", "Nope"),
        "bad option": run_pylon("compile", f"{script}:program", *common, "--option", "k"),
        "missing input": run_pylon("compile", f"{script}:program", "--trainset", str(train), "--inputs", "query"),
    }
    for name, result in cases.items():
        assert result.returncode == 1, name
        assert "ConfigError" in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\nnot json\n')
    result = run_pylon("compile", f"{script}:program", "--trainset", str(bad), "--inputs", "question")
    assert result.returncode == 1 and f"{bad}:2" in result.stderr
