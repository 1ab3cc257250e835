"""The manifest model: its published JSON Schema, its JSON round trip, its privacy floor."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dspy
import jsonschema
import pydantic
import pytest

import dspy_pylon as pylon
from dspy_pylon.contract.files import render_manifest
from dspy_pylon.contract.manifest import parse_manifest
from dspy_pylon.contract.modes import PRIVACY_ORDER
from tests.contract.programs import TwoSteps, qa_cot

PrivacyMode = pylon.PrivacyMode


def _full_manifest() -> pylon.CompiledModuleManifest:
    trainset = [dspy.Example(question="q", answer="a").with_inputs("question")]
    card = pylon.Scorecard(
        proxy_metrics={"exact_match": 0.75, "mean": 0.7, "min": 0.5, "max": 0.9},
        truth_metrics={"judge": 0.6},
        rollouts=3,
        examples=4,
        median_score=0.75,
        p_fail=0.25,
        scores=(0.5, 0.75, 0.9),
    )
    return pylon.build_manifest(
        TwoSteps(),
        optimizer="BootstrapFewShot",
        optimizer_settings={"max_bootstrapped_demos": 4, "teacher": {"temperature": 0.7}},
        seed=11,
        trainset=trainset,
        valset=trainset * 2,
        scorecard=card,
        baseline_scorecard=card.model_copy(update={"median_score": 0.5}),
        compatibility=pylon.Compatibility(
            required_tools=("search",),
            required_lanes=(pylon.Lane.LOCAL,),
            privacy_modes_allowed=(PrivacyMode.NO_PII, PrivacyMode.PRIVATE_REPO_REDACTED),
            min_provider_reputation=0.8,
        ),
        models=[pylon.ModelRef(model="llama3.2", served_model="llama3.2:1b", gguf_sha256="ab" * 32)],
    )


def _validator() -> jsonschema.protocols.Validator:
    schema = pylon.manifest_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = pylon.manifest_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_the_schema_validates_the_json_of_a_real_saved_manifest(tmp_path: Path, signed: bool) -> None:
    program = TwoSteps()
    identity = pylon.Identity(bytes.fromhex("11" * 32)) if signed else None
    pylon.save_compiled(program, _full_manifest(), tmp_path, identity=identity)
    document = json.loads((tmp_path / "manifest.json").read_bytes())
    assert (document["signature"] is not None) is signed
    errors = [error.message for error in _validator().iter_errors(document)]
    assert errors == []


def test_the_schema_validates_a_minimal_manifest() -> None:
    document = pylon.build_manifest(qa_cot()).to_json_dict()
    assert [error.message for error in _validator().iter_errors(document)] == []


def test_the_schema_names_every_field_of_the_manifest() -> None:
    schema = pylon.manifest_json_schema()
    document = _full_manifest().to_json_dict()
    assert set(schema["properties"]) == set(document)
    assert set(schema["required"]) <= set(document)
    assert schema.get("additionalProperties") is False


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda document: document.update({key: value})


def _drop(key: str) -> Callable[[dict[str, object]], None]:
    return lambda document: document.pop(key)


REFUSED: dict[str, Callable[[dict[str, object]], None]] = {
    "compiled_id not hex": _set("compiled_id", "z" * 64),
    "program_sha256 too short": _set("program_sha256", "ab"),
    "unknown extra key": _set("trust_me", True),
    "schema_version 2": _set("schema_version", 2),
    "schema_version missing": _drop("schema_version"),
    "compiled_id missing": _drop("compiled_id"),
    "unknown lane": _set("compatibility", {"required_lanes": ["moon"]}),
    "reputation above 1": _set("compatibility", {"min_provider_reputation": 1.5}),
    "p_fail above 1": _set(
        "scorecard", {"proxy_metrics": {}, "rollouts": 1, "examples": 1, "median_score": 1.0, "p_fail": 2.0}
    ),
}


@pytest.mark.parametrize("change", list(REFUSED))
def test_the_schema_refuses_what_the_reader_refuses(change: str) -> None:
    document = _full_manifest().to_json_dict()
    REFUSED[change](document)
    with pytest.raises(pylon.ManifestError):
        parse_manifest(json.dumps(document).encode())
    assert list(_validator().iter_errors(document)), f"the published schema accepts a manifest with {change}"


def test_a_manifest_round_trips_through_its_json() -> None:
    manifest = _full_manifest()
    again = parse_manifest(render_manifest(manifest))
    assert again == manifest
    assert render_manifest(again) == render_manifest(manifest)
    assert again.compatibility.privacy_modes_allowed == (PrivacyMode.NO_PII, PrivacyMode.PRIVATE_REPO_REDACTED)
    assert again.compatibility.required_lanes == (pylon.Lane.LOCAL,)
    assert again.created_at == manifest.created_at


def test_a_signed_manifest_round_trips_through_its_file(tmp_path: Path) -> None:
    pylon.save_compiled(TwoSteps(), _full_manifest(), tmp_path, identity=pylon.Identity(bytes.fromhex("11" * 32)))
    data = (tmp_path / "manifest.json").read_bytes()
    manifest = parse_manifest(data)
    assert manifest.signature is not None
    assert render_manifest(manifest) == data


def test_the_manifest_is_frozen() -> None:
    manifest = _full_manifest()
    with pytest.raises(pydantic.ValidationError):
        manifest.seed = 12  # type: ignore[misc]


def test_the_manifest_describes_the_program_it_was_built_from() -> None:
    program = TwoSteps()
    manifest = pylon.build_manifest(program, trainset=[dspy.Example(q="1")] * 3)
    assert manifest.compiled_id == pylon.compiled_id_of(program)
    assert [p.name for p in manifest.structure] == [name for name, _ in program.named_predictors()]
    assert manifest.trainset_size == 3 and manifest.valset_id is None and manifest.valset_size is None
    assert manifest.dspy_version == dspy.__version__
    assert manifest.dspy_pylon_version == pylon.__version__


def test_by_default_every_privacy_mode_is_allowed_and_the_floor_is_public_ok() -> None:
    compatibility = pylon.Compatibility()
    assert set(compatibility.privacy_modes_allowed) == set(PrivacyMode)
    assert compatibility.privacy_floor() is PrivacyMode.PUBLIC_OK


@pytest.mark.parametrize(
    ("allowed", "floor"),
    [
        ((PrivacyMode.NO_PII,), PrivacyMode.NO_PII),
        ((PrivacyMode.PRIVATE_REPO_ALLOWED, PrivacyMode.NO_PII), PrivacyMode.NO_PII),
        ((PrivacyMode.PRIVATE_REPO_ALLOWED, PrivacyMode.PRIVATE_REPO_REDACTED), PrivacyMode.PRIVATE_REPO_REDACTED),
        ((PrivacyMode.PRIVATE_REPO_ALLOWED,), PrivacyMode.PRIVATE_REPO_ALLOWED),
        ((PrivacyMode.PRIVATE_REPO_REDACTED, PrivacyMode.PUBLIC_OK), PrivacyMode.PUBLIC_OK),
    ],
)
def test_the_privacy_floor_is_the_least_strict_allowed_mode(
    allowed: tuple[pylon.PrivacyMode, ...], floor: pylon.PrivacyMode
) -> None:
    assert pylon.Compatibility(privacy_modes_allowed=allowed).privacy_floor() is floor
    assert pylon.Compatibility(privacy_modes_allowed=tuple(reversed(allowed))).privacy_floor() is floor
    assert all(PRIVACY_ORDER.index(floor) <= PRIVACY_ORDER.index(mode) for mode in allowed)


def test_modes_given_as_names_are_modes() -> None:
    compatibility = pylon.Compatibility.model_validate({"privacy_modes_allowed": ["private_repo_allowed", "no_pii"]})
    assert compatibility.privacy_floor() is PrivacyMode.NO_PII


def test_no_allowed_privacy_mode_has_no_floor() -> None:
    with pytest.raises(pylon.ManifestError):
        pylon.Compatibility(privacy_modes_allowed=()).privacy_floor()
