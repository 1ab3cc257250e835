"""``pylon manifest schema | show | verify | diff`` on real compiled directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dspy

import dspy_pylon as pylon
from dspy_pylon.contract.diffing import diff_programs
from dspy_pylon.contract.files import MANIFEST_FILE, PROGRAM_FILE
from tests.cli_run import run_pylon


def _saved(directory: Path, demos: list[dict[str, str]], instructions: str | None = None, **kwargs: object) -> Path:
    program = dspy.Predict("question -> answer")
    if instructions is not None:
        program.signature = program.signature.with_instructions(instructions)
    program.demos = [dspy.Example(**d) for d in demos]
    return pylon.save_compiled(program, pylon.build_manifest(program, optimizer="LabeledFewShot"), directory, **kwargs)


def test_schema_is_the_published_json_schema() -> None:
    result = run_pylon("manifest", "schema")
    assert result.returncode == 0
    assert json.loads(result.stdout) == pylon.manifest_json_schema()


def test_verify_exit_codes(tmp_path: Path) -> None:
    signer = pylon.Identity(os.urandom(32))
    other = pylon.Identity(os.urandom(32))
    directory = _saved(tmp_path / "p", [{"question": "1+1", "answer": "2"}], identity=signer)
    ok = run_pylon("manifest", "verify", str(directory), "--signer", signer.npub)
    assert ok.returncode == 0 and signer.npub in ok.stdout
    assert run_pylon("manifest", "verify", str(directory), "--signer", other.npub).returncode == 1
    unsigned = _saved(tmp_path / "u", [{"question": "1+1", "answer": "2"}])
    assert run_pylon("manifest", "verify", str(unsigned)).returncode == 0
    assert run_pylon("manifest", "verify", str(unsigned), "--require-signature").returncode == 1
    (unsigned / PROGRAM_FILE).write_text((unsigned / PROGRAM_FILE).read_text().replace("1+1", "1+2"))
    tampered = run_pylon("manifest", "verify", str(unsigned))
    assert tampered.returncode == 1 and "IntegrityError" in tampered.stderr
    (unsigned / MANIFEST_FILE).write_text("{")
    broken = run_pylon("manifest", "verify", str(unsigned))
    assert broken.returncode == 1 and "ManifestError" in broken.stderr and "Traceback" not in broken.stderr


def test_show_prints_the_manifest(tmp_path: Path) -> None:
    signer = pylon.Identity(os.urandom(32))
    directory = _saved(tmp_path / "p", [{"question": "1+1", "answer": "2"}], identity=signer)
    manifest = pylon.verify_compiled(directory).manifest
    result = run_pylon("manifest", "show", str(directory))
    assert result.returncode == 0
    assert manifest.compiled_id in result.stdout and signer.npub in result.stdout and "LabeledFewShot" in result.stdout


def test_diff_names_what_changed(tmp_path: Path) -> None:
    a = _saved(tmp_path / "a", [{"question": "1+1", "answer": "2"}, {"question": "2+2", "answer": "4"}])
    b = _saved(tmp_path / "b", [{"question": "1+1", "answer": "2"}, {"question": "3+3", "answer": "6"}], "Add.")
    va, vb = pylon.verify_compiled(a), pylon.verify_compiled(b)
    changes = {c.where: c for c in diff_programs(va.manifest, va.artifact, vb.manifest, vb.artifact)}
    assert set(changes) == {"compiled_id", "self.instructions", "self.demos (removed)", "self.demos (added)"}
    assert changes["self.demos (removed)"].before == {"question": "2+2", "answer": "4"}
    assert changes["self.demos (added)"].after == {"question": "3+3", "answer": "6"}
    assert changes["self.instructions"].after == "Add."
    assert diff_programs(va.manifest, va.artifact, va.manifest, va.artifact) == []
    result = run_pylon("manifest", "diff", str(a), str(b))
    assert result.returncode == 0 and "self.instructions" in result.stdout and "3+3" in result.stdout
    same = run_pylon("manifest", "diff", str(a), str(a))
    assert same.returncode == 0 and "no differences" in same.stdout


def test_diff_reports_scores(tmp_path: Path) -> None:
    program = dspy.Predict("question -> answer")
    card = pylon.Scorecard(proxy_metrics={"m": 0.5}, rollouts=1, examples=2, median_score=0.5, p_fail=0.5)
    better = card.model_copy(update={"median_score": 1.0, "p_fail": 0.0, "proxy_metrics": {"m": 1.0}})
    a = pylon.save_compiled(program, pylon.build_manifest(program, scorecard=card), tmp_path / "a")
    b = pylon.save_compiled(program, pylon.build_manifest(program, scorecard=better), tmp_path / "b")
    va, vb = pylon.verify_compiled(a), pylon.verify_compiled(b)
    changes = {c.where: (c.before, c.after) for c in diff_programs(va.manifest, va.artifact, vb.manifest, vb.artifact)}
    assert changes == {
        "scorecard.median_score": (0.5, 1.0),
        "scorecard.p_fail": (0.5, 0.0),
        "scorecard.proxy_metrics.m": (0.5, 1.0),
    }
