"""program.json + manifest.json on disk: any tampering is refused with the right typed error."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.contract.manifest import parse_manifest
from tests.contract.programs import qa_cot

SIGNER = pylon.Identity(bytes.fromhex("11" * 32))
OTHER = pylon.Identity(bytes.fromhex("22" * 32))


def _save(directory: Path, identity: pylon.Identity | None = None) -> pylon.CompiledModuleManifest:
    program = qa_cot()
    manifest = pylon.build_manifest(program, optimizer="BootstrapFewShot", seed=7)
    pylon.save_compiled(program, manifest, directory, identity=identity)
    return parse_manifest((directory / "manifest.json").read_bytes())


def _edit_manifest(directory: Path, change: Callable[[dict[str, object]], None]) -> None:
    path = directory / "manifest.json"
    document = json.loads(path.read_bytes())
    change(document)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def test_a_saved_directory_verifies_and_loads(tmp_path: Path) -> None:
    manifest = _save(tmp_path)
    verified = pylon.verify_compiled(tmp_path)
    assert verified.manifest == manifest
    assert not verified.signed and verified.signer is None
    program, loaded = pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer"))
    assert loaded == manifest
    assert [dict(d) for d in program.predict.demos] == [d.toDict() for d in qa_cot().predict.demos]


def test_flipping_one_byte_of_program_json_is_an_integrity_error(tmp_path: Path) -> None:
    manifest = _save(tmp_path)
    path = tmp_path / "program.json"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for attempt in (
        lambda: pylon.verify_compiled(tmp_path),
        lambda: pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer")),
    ):
        with pytest.raises(pylon.IntegrityError) as info:
            attempt()
        assert not isinstance(info.value, pylon.SignatureError)
        assert info.value.expected == manifest.program_sha256
        assert info.value.actual == hashlib.sha256(bytes(data)).hexdigest()
        assert manifest.program_sha256 in str(info.value)


def test_an_edited_demo_with_a_fixed_digest_is_caught_by_the_compiled_id(tmp_path: Path) -> None:
    manifest = _save(tmp_path)
    path = tmp_path / "program.json"
    text = path.read_text(encoding="utf-8")
    assert text.count('"answer": "Paris"') == 1
    edited = text.replace('"answer": "Paris"', '"answer": "Lyon"').encode()
    path.write_bytes(edited)
    _edit_manifest(tmp_path, lambda m: m.update(program_sha256=hashlib.sha256(edited).hexdigest()))
    # What the edited file now holds: the same program with that demo changed.
    tampered = qa_cot()
    tampered.predict.demos[1] = dspy.Example(question="Capital of France?", answer="Lyon")
    with pytest.raises(pylon.IntegrityError) as info:
        pylon.verify_compiled(tmp_path)
    assert info.value.expected == manifest.compiled_id
    assert info.value.actual == pylon.compiled_id_of(tampered)
    assert manifest.compiled_id in str(info.value)
    with pytest.raises(pylon.IntegrityError):
        pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set(key: str, value: object) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        document = json.loads(path.read_bytes())
        document[key] = value
        path.write_text(json.dumps(document), encoding="utf-8")

    return change


def _drop(key: str) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        document = json.loads(path.read_bytes())
        del document[key]
        path.write_text(json.dumps(document), encoding="utf-8")

    return change


BROKEN_MANIFESTS: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "not JSON": lambda p: p.write_text("compiled_id = abc\n", encoding="utf-8"),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe{}"),
    "empty": lambda p: p.write_bytes(b""),
    "a JSON list": lambda p: p.write_text("[1, 2, 3]", encoding="utf-8"),
    "compiled_id not hex": _set("compiled_id", "z" * 64),
    "compiled_id upper-case hex": _set("compiled_id", "AB" * 32),
    "program_sha256 a number": _set("program_sha256", 12),
    "seed a string of letters": _set("seed", "seven"),
    "unknown extra key": _set("trust_me", True),
    "unknown privacy mode": _set("compatibility", {"privacy_modes_allowed": ["whatever"]}),
    "reputation above 1": _set("compatibility", {"min_provider_reputation": 1.5}),
    "schema_version 0": _set("schema_version", 0),
    "schema_version missing": _drop("schema_version"),
    "structure missing": _drop("structure"),
}


@pytest.mark.parametrize("breakage", list(BROKEN_MANIFESTS))
def test_a_broken_manifest_is_a_manifest_error_not_an_integrity_error(tmp_path: Path, breakage: str) -> None:
    _save(tmp_path)
    BROKEN_MANIFESTS[breakage](tmp_path / "manifest.json")
    with pytest.raises(pylon.ManifestError) as info:
        pylon.verify_compiled(tmp_path)
    assert not isinstance(info.value, pylon.IntegrityError)
    assert "manifest.json" in str(info.value)
    with pytest.raises(pylon.ManifestError) as loading:
        pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer"))
    assert not isinstance(loading.value, pylon.IntegrityError)


def test_a_newer_schema_version_is_a_manifest_error_naming_the_version(tmp_path: Path) -> None:
    _save(tmp_path)
    _set("schema_version", 2)(tmp_path / "manifest.json")
    with pytest.raises(pylon.ManifestError) as info:
        pylon.verify_compiled(tmp_path)
    assert type(info.value) is pylon.ManifestError
    assert "2" in str(info.value)


@pytest.mark.parametrize("missing", ["program.json", "manifest.json"])
def test_a_missing_file_is_a_manifest_error_naming_it(tmp_path: Path, missing: str) -> None:
    _save(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(pylon.ManifestError) as info:
        pylon.verify_compiled(tmp_path)
    assert not isinstance(info.value, pylon.IntegrityError)
    assert missing in str(info.value)


def test_a_directory_that_does_not_exist_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(pylon.ManifestError):
        pylon.verify_compiled(tmp_path / "nowhere")


def test_a_signed_manifest_verifies_with_its_signer_as_npub_or_hex(tmp_path: Path) -> None:
    _save(tmp_path, identity=SIGNER)
    for trusted in ([SIGNER.npub], [SIGNER.public_key_hex], [SIGNER.public_key_hex.upper()], [OTHER.npub, SIGNER.npub]):
        verified = pylon.verify_compiled(tmp_path, trusted_signers=trusted)
        assert verified.signed
        assert verified.signer == SIGNER.public_key_hex
    assert pylon.verify_compiled(tmp_path, require_signature=True).signer == SIGNER.public_key_hex
    _program, manifest = pylon.load_compiled(
        tmp_path, dspy.ChainOfThought("question -> answer"), trusted_signers=[SIGNER.npub]
    )
    assert manifest.signature is not None and manifest.signature.public_key == SIGNER.public_key_hex


def test_a_signed_manifest_without_requirements_still_has_its_signature_checked(tmp_path: Path) -> None:
    _save(tmp_path, identity=SIGNER)
    assert pylon.verify_compiled(tmp_path).signer == SIGNER.public_key_hex
    _edit_manifest(tmp_path, lambda m: m.update(seed=8))
    with pytest.raises(pylon.SignatureError) as info:
        pylon.verify_compiled(tmp_path)
    assert info.value.signer == SIGNER.public_key_hex


def test_a_signature_by_an_untrusted_key_is_refused_naming_the_signer(tmp_path: Path) -> None:
    _save(tmp_path, identity=OTHER)
    with pytest.raises(pylon.SignatureError) as info:
        pylon.verify_compiled(tmp_path, trusted_signers=[SIGNER.npub])
    assert info.value.signer == OTHER.public_key_hex
    assert OTHER.public_key_hex in str(info.value)
    with pytest.raises(pylon.SignatureError):
        pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer"), trusted_signers=[SIGNER.npub])


@pytest.mark.parametrize(
    "requirement", [{"require_signature": True}, {"trusted_signers": [SIGNER.npub]}], ids=["required", "trusted"]
)
def test_an_unsigned_manifest_is_refused_when_a_signature_is_required(
    tmp_path: Path, requirement: dict[str, object]
) -> None:
    _save(tmp_path)
    with pytest.raises(pylon.SignatureError) as info:
        pylon.verify_compiled(tmp_path, **requirement)  # type: ignore[arg-type]
    assert info.value.signer is None
    with pytest.raises(pylon.SignatureError):
        pylon.load_compiled(tmp_path, dspy.ChainOfThought("question -> answer"), **requirement)  # type: ignore[arg-type]


def test_an_unsigned_manifest_verifies_without_requirements(tmp_path: Path) -> None:
    _save(tmp_path)
    verified = pylon.verify_compiled(tmp_path)
    assert verified.signed is False
    assert verified.signer is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer", "MIPROv2"),
        ("seed", 8),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("compatibility", {"privacy_modes_allowed": ["public_ok"], "required_tools": ["shell"]}),
    ],
)
def test_changing_one_field_of_a_signed_manifest_breaks_its_signature(
    tmp_path: Path, field: str, value: object
) -> None:
    _save(tmp_path, identity=SIGNER)
    _edit_manifest(tmp_path, lambda m: m.update({field: value}))
    with pytest.raises(pylon.SignatureError) as info:
        pylon.verify_compiled(tmp_path, trusted_signers=[SIGNER.npub])
    assert info.value.signer == SIGNER.public_key_hex


def test_a_signature_moved_to_another_key_does_not_verify(tmp_path: Path) -> None:
    _save(tmp_path, identity=SIGNER)
    _edit_manifest(tmp_path, lambda m: m["signature"].update(public_key=OTHER.public_key_hex))  # type: ignore[union-attr]
    with pytest.raises(pylon.SignatureError) as info:
        pylon.verify_compiled(tmp_path)
    assert info.value.signer == OTHER.public_key_hex


def test_a_bad_trusted_signer_is_a_config_error(tmp_path: Path) -> None:
    _save(tmp_path, identity=SIGNER)
    with pytest.raises(pylon.ConfigError):
        pylon.verify_compiled(tmp_path, trusted_signers=["not-a-key"])


def test_the_saved_files_hold_no_secret_and_no_pickle(tmp_path: Path) -> None:
    _save(tmp_path, identity=SIGNER)
    secret_hex = SIGNER.secret.hex()
    for name in ("program.json", "manifest.json"):
        data = (tmp_path / name).read_bytes()
        assert secret_hex.encode() not in data
        assert secret_hex.upper().encode() not in data
        assert SIGNER.secret not in data
        json.loads(data)  # plain JSON, not a pickle
    program = json.loads((tmp_path / "program.json").read_bytes())
    assert program["format"] == "dspy-pylon/compiled-program"


def test_a_program_with_an_lm_saves_no_lm_and_no_key(tmp_path: Path) -> None:
    program = qa_cot()
    program.predict.lm = pylon.LM("pylon:swarm", private_key="33" * 32, relays=["ws://127.0.0.1:9"])
    pylon.save_compiled(program, None, tmp_path)
    for name in ("program.json", "manifest.json"):
        data = (tmp_path / name).read_bytes()
        assert b"33" * 32 not in data
        assert b"ws://127.0.0.1:9" not in data


def test_a_save_leaves_exactly_the_two_files_and_no_temporary_file(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "compiled"
    _save(directory)
    _save(directory, identity=SIGNER)  # a second save replaces both files
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "program.json"]
    assert pylon.verify_compiled(directory).signer == SIGNER.public_key_hex


def test_saving_the_same_program_twice_writes_byte_identical_program_json(tmp_path: Path) -> None:
    pylon.save_compiled(qa_cot(), None, tmp_path / "a")
    pylon.save_compiled(qa_cot(), None, tmp_path / "b", identity=SIGNER)
    assert (tmp_path / "a" / "program.json").read_bytes() == (tmp_path / "b" / "program.json").read_bytes()


def test_a_manifest_of_an_older_state_of_the_program_cannot_be_saved_with_it(tmp_path: Path) -> None:
    program = qa_cot()
    manifest = pylon.build_manifest(program)
    program.predict.demos.append(dspy.Example(question="1 + 1?", answer="2"))
    with pytest.raises(pylon.IntegrityError) as info:
        pylon.save_compiled(program, manifest, tmp_path / "compiled")
    assert info.value.expected == manifest.compiled_id
    assert info.value.actual == pylon.compiled_id_of(program)
    assert not (tmp_path / "compiled").exists()
