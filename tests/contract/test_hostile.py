"""What a review found: hostile directories, unstable types, secrets, NaN, and holds that slipped.

A "hostile" directory here is one whose program.json was edited and whose manifest was made to
match again (digest, compiled_id, structure recomputed, signature dropped): it passes the hash
checks, so everything after them must still refuse it with a PylonError, never a traceback.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NewType

import dspy
import pydantic
import pytest

import dspy_pylon as pylon
from dspy_pylon.cli_manifest import manifest_table
from dspy_pylon.contract.artifact import compiled_id, describe_type, structure
from dspy_pylon.contract.files import MANIFEST_FILE, PROGRAM_FILE
from dspy_pylon.contract.hashing import sha256_hex
from tests.cli_run import run_pylon


def _saved(tmp_path: Path) -> Path:
    program = dspy.ChainOfThought("question -> answer")
    program.predict.demos = [dspy.Example(question="1+1", answer="2", reasoning="add")]
    return pylon.save_compiled(program, None, tmp_path / "p")


def _rewrite(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit program.json's artifact, then make the manifest agree with it (as an attacker would)."""
    document = json.loads((directory / PROGRAM_FILE).read_text())
    change(document["artifact"])
    data = (json.dumps(document) + "\n").encode()
    (directory / PROGRAM_FILE).write_bytes(data)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["program_sha256"] = sha256_hex(data)
    try:
        manifest["compiled_id"] = compiled_id(document["artifact"])
        manifest["structure"] = structure(document["artifact"])
    except Exception:  # an artifact too broken to hash: the reader must still refuse it cleanly
        pass
    manifest["signature"] = None
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _predictor(artifact: dict[str, Any]) -> dict[str, Any]:
    predictor: dict[str, Any] = artifact["predictors"][0]
    return predictor


HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "state is a list": lambda a: _predictor(a).__setitem__("state", [1]),
    "signature without fields": lambda a: _predictor(a)["signature"].pop("fields"),
    "fields are numbers": lambda a: _predictor(a)["signature"].__setitem__("fields", [1, 2]),
    "fields are empty objects": lambda a: _predictor(a)["signature"].__setitem__("fields", [{}]),
    "demos is a number": lambda a: _predictor(a)["state"].__setitem__("demos", 5),
    "an extra state key": lambda a: _predictor(a)["state"].__setitem__("config", {"temperature": 2.0, "n": 9}),
    "saved signature of the wrong type": lambda a: _predictor(a)["state"].__setitem__("signature", "x"),
    "no predictors": lambda a: a.__setitem__("predictors", []),
    "a demo nested 500 deep": lambda a: _predictor(a)["state"]["demos"][0].__setitem__(
        "answer", json.loads("[" * 500 + "]" * 500)
    ),
}


@pytest.mark.parametrize("change", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_directory_is_refused_with_a_pylon_error(tmp_path: Path, change: str) -> None:
    directory = _saved(tmp_path)
    _rewrite(directory, HOSTILE[change])
    fresh = dspy.ChainOfThought("question -> answer")
    before, config = fresh.dump_state(), dict(fresh.predict.config)
    with pytest.raises(pylon.PylonError):
        pylon.load_compiled(directory, fresh)
    assert fresh.dump_state() == before and fresh.predict.config == config  # the program is as it was given
    for command in (("manifest", "show", str(directory)), ("manifest", "diff", str(directory), str(directory))):
        result = run_pylon(*command)
        assert "Traceback" not in result.stderr, (command, result.stderr[-800:])


def test_json_nested_beyond_the_parser_is_a_manifest_error(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    (directory / MANIFEST_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(pylon.ManifestError):
        pylon.verify_compiled(directory)


def test_a_fifo_or_a_device_is_not_read(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    (directory / PROGRAM_FILE).unlink()
    os.mkfifo(directory / PROGRAM_FILE)  # a reader that blocked here would hang the test
    with pytest.raises(pylon.ManifestError):
        pylon.verify_compiled(directory)
    (directory / PROGRAM_FILE).unlink()
    (directory / PROGRAM_FILE).symlink_to("/dev/zero")
    with pytest.raises(pylon.ManifestError):
        pylon.verify_compiled(directory)


def test_rich_markup_in_a_manifest_is_shown_as_text(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    _rewrite(directory, lambda a: _predictor(a)["signature"].__setitem__("instructions", "[/bold] evil [link=x]"))
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["signature_name"] = "[/]"
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    show = run_pylon("manifest", "show", str(directory))
    assert show.returncode == 0 and "[/]" in show.stdout, show.stderr
    other = _saved(tmp_path / "other")
    diff = run_pylon("manifest", "diff", str(other), str(directory))
    assert diff.returncode == 0 and "[/bold] evil" in diff.stdout, diff.stderr
    manifest_table(pylon.verify_compiled(directory).manifest, None)  # the demo's table too


def test_misuse_is_a_config_error(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    with pytest.raises(pylon.ConfigError):
        pylon.load_compiled(directory, dspy.ChainOfThought)  # the class, not an instance
    with pytest.raises(pylon.ConfigError):
        pylon.save_compiled(object(), None, tmp_path / "x")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(pylon.ManifestError):
        pylon.save_compiled(dspy.Predict("q -> a"), None, blocker)


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    for name in (PROGRAM_FILE, MANIFEST_FILE):
        assert (directory / name).stat().st_mode & 0o777 == 0o644


def test_integrity_errors_say_what_failed_as_a_code(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    data = bytearray((directory / PROGRAM_FILE).read_bytes())
    data[data.index(b"1+1")] = ord("7")
    (directory / PROGRAM_FILE).write_bytes(bytes(data))
    with pytest.raises(pylon.IntegrityError) as digest:
        pylon.verify_compiled(directory)
    assert digest.value.reason is pylon.IntegrityProblem.PROGRAM_DIGEST
    signer = pylon.Identity(os.urandom(32))
    signed = pylon.save_compiled(dspy.Predict("q -> a"), None, tmp_path / "s", identity=signer)
    with pytest.raises(pylon.SignatureError) as untrusted:
        pylon.verify_compiled(signed, trusted_signers=pylon.Identity(os.urandom(32)).npub)  # one, bare
    assert untrusted.value.problem is pylon.SignatureProblem.UNTRUSTED
    assert untrusted.value.reason is pylon.IntegrityProblem.SIGNATURE
    assert pylon.verify_compiled(signed, trusted_signers=signer.npub).signer == signer.public_key_hex


class Meta:
    """An Annotated marker without settings."""


class Color(enum.Enum):
    RED = 1
    BLUE = "b"


@dataclasses.dataclass
class Point:
    x: int
    y: float


UserId = NewType("UserId", str)
TYPES: dict[str, Any] = {
    "Annotated[str, Meta()]": Annotated[str, Meta()],
    "Annotated[int, Field(gt=0)]": Annotated[int, pydantic.Field(gt=0)],
    "NewType": UserId,
    "enum": Color,
    "dataclass": Point,
    "list[dspy.Tool]": list[dspy.Tool],
}


def test_type_descriptions_hold_no_address_or_module_path() -> None:
    for name, annotation in TYPES.items():
        text = describe_type(annotation, models := {})
        everything = text + json.dumps(models)
        assert " at 0x" not in everything and __name__ not in everything, (name, everything)


def test_type_descriptions_are_the_same_in_another_process() -> None:
    code = (
        "import json; from tests.contract.test_hostile import TYPES; "
        "from dspy_pylon.contract.artifact import describe_type; "
        "print(json.dumps({n: [describe_type(t, m := {}), m] for n, t in TYPES.items()}, sort_keys=True))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] and runs[0].strip()


def test_what_a_type_holds_is_part_of_the_id() -> None:
    class Small(enum.Enum):
        A = 1

    class Larger(enum.Enum):
        A = 1
        B = 2

    small, larger = describe_type(Small, one := {}), describe_type(Larger, two := {})
    assert one[small] == {"enum": [["A", 1]]} and two[larger] == {"enum": [["A", 1], ["B", 2]]}

    def model(extra: bool) -> type[pydantic.BaseModel]:
        fields: dict[str, Any] = {"a": (int, ...)}
        if extra:
            fields["b"] = (str, ...)
        return pydantic.create_model("Same", **fields)

    both: dict[str, Any] = {}
    describe_type(model(False), both)
    key = describe_type(model(True), both)  # same name, other fields: kept apart, not overwritten
    assert len(both) == 2 and key.startswith("Same@")


def test_a_signature_with_tools_compiles_and_saves(tmp_path: Path) -> None:
    from dspy.utils.dummies import DummyLM

    class Act(dspy.Signature):
        """Answer, using tools."""

        question: str = dspy.InputField()
        tools: list[dspy.Tool] = dspy.InputField()
        answer: str = dspy.OutputField()

    examples = [dspy.Example(question=f"q{i}", tools=[], answer="a").with_inputs("question", "tools") for i in range(3)]
    with dspy.context(lm=DummyLM([{"answer": "a"}] * 50)):
        compiled, manifest = pylon.compile(
            dspy.Predict(Act),
            dspy.LabeledFewShot(k=1),
            examples,
            metric=lambda e, p, t=None: p.answer == "a",
            rollouts=1,
            baseline=False,
        )
    pylon.save_compiled(compiled, manifest, tmp_path / "tools")
    assert pylon.verify_compiled(tmp_path / "tools").manifest.compiled_id == manifest.compiled_id


def test_an_optimizer_secret_is_never_written(tmp_path: Path) -> None:
    optimizer = dspy.LabeledFewShot(k=1)
    optimizer.wandb_api_key = "WANDB-SECRET-123"  # as dspy.GEPA(wandb_api_key=...) keeps it
    optimizer.wandb_init_kwargs = {"project": "p", "api_key": "WANDB-SECRET-123", "auth_token": "T0KEN"}
    examples = [dspy.Example(question="q", answer="a").with_inputs("question")]
    from dspy.utils.dummies import DummyLM

    with dspy.context(lm=DummyLM([{"answer": "a"}] * 20)):
        compiled, manifest = pylon.compile(
            dspy.Predict("question -> answer"), optimizer, examples, metric=lambda e, p, t=None: True, rollouts=1
        )
    directory = pylon.save_compiled(compiled, manifest, tmp_path / "p")
    written = (directory / MANIFEST_FILE).read_text() + (directory / PROGRAM_FILE).read_text()
    assert "WANDB-SECRET-123" not in written and "T0KEN" not in written
    assert manifest.optimizer_settings["wandb_init_kwargs"] == {"project": "p"}


def test_a_nan_score_is_refused_not_written() -> None:
    with pytest.raises(pydantic.ValidationError):
        pylon.Scorecard(proxy_metrics={"m": math.nan}, rollouts=1, examples=1, median_score=math.nan, p_fail=0.0)


def test_copying_to_another_model_keeps_the_minimum_reputation() -> None:
    held = pylon.LM("pylon:swarm").with_min_reputation(0.9)
    copy = held.copy(model="pylon:swarm:llama3.2")
    assert copy.config.venue.min_reputation == 0.9 and copy.config.venue.encrypts


def test_a_private_program_without_any_lm_is_refused(tmp_path: Path) -> None:
    program = dspy.Predict("question -> answer")
    compat = pylon.Compatibility(privacy_modes_allowed=(pylon.PrivacyMode.NO_PII,))
    directory = pylon.save_compiled(program, pylon.build_manifest(program, compatibility=compat), tmp_path / "p")
    with pytest.raises(pylon.CompatibilityError) as refused:
        pylon.load_compiled(directory, dspy.Predict("question -> answer"))  # none given, none configured
    assert [u.requirement for u in refused.value.unmet] == [pylon.Requirement.PRIVACY]


def test_a_programs_own_predictor_lm_survives_loading(tmp_path: Path) -> None:
    directory = pylon.save_compiled(dspy.Predict("question -> answer"), None, tmp_path / "p")
    fresh = dspy.Predict("question -> answer")
    own = pylon.LM("pylon:local")
    fresh.lm = own
    loaded, _ = pylon.load_compiled(directory, fresh)
    assert loaded.lm is own
