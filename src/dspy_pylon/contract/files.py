"""``program.json`` and ``manifest.json`` in a directory: writing them, reading and verifying them.

The I/O edge of the contract, and without DSPy: ``pylon manifest verify`` checks a directory
(digest, ``compiled_id``, signature) from the files alone. Writes are atomic per file
(a temporary file, fsynced, renamed over), ``program.json`` first: a crash between the two
leaves a manifest that no longer matches, which verification refuses, never a half file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from dspy_pylon.contract.artifact import ARTIFACT_VERSION, compiled_id, structure
from dspy_pylon.contract.hashing import sha256_hex
from dspy_pylon.contract.manifest import CompiledModuleManifest, load_json, manifest_from_data
from dspy_pylon.contract.signing import signer_keys, verify_signature
from dspy_pylon.durable import fsync_dir, write_atomic
from dspy_pylon.plain_errors import (
    IntegrityError,
    IntegrityProblem,
    ManifestError,
    SignatureError,
    SignatureProblem,
)

PROGRAM_FILE = "program.json"
MANIFEST_FILE = "manifest.json"
PROGRAM_FORMAT = "dspy-pylon/compiled-program"


def render_program(artifact: dict[str, Any]) -> bytes:
    """The bytes of ``program.json`` for ``artifact`` (stable: sorted keys, fixed indent)."""
    document = {"format": PROGRAM_FORMAT, "schema_version": ARTIFACT_VERSION, "artifact": artifact}
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def render_manifest(manifest: CompiledModuleManifest) -> bytes:
    """The bytes of ``manifest.json``."""
    return (json.dumps(manifest.to_json_dict(), indent=2, ensure_ascii=False) + "\n").encode()


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


class _Field(_Model):
    name: str
    role: str | None
    prefix: str | None
    description: str | None
    type: str


class _Signature(_Model):
    name: str
    instructions: str
    fields: list[_Field]
    models: dict[str, Any] | None = None


class _SavedField(_Model):
    prefix: str
    description: str


class _SavedSignature(_Model):
    instructions: str
    fields: list[_SavedField]


class _State(_Model):
    # Exactly what loading applies (artifact.STATE_KEYS): a key more would set an attribute.
    traces: list[Any]
    train: list[Any]
    demos: list[dict[str, Any]]
    signature: _SavedSignature
    fields: dict[str, Any] | None = None


class _Predictor(_Model):
    name: str
    kind: str
    signature: _Signature
    state: _State


class _Artifact(_Model):
    program: str
    predictors: list[_Predictor] = pydantic.Field(min_length=1)


def parse_program(data: bytes, where: str = PROGRAM_FILE) -> dict[str, Any]:
    """The artifact inside ``program.json`` bytes; anything malformed is a :class:`ManifestError`.

    Its shape is checked in full (predictors, signatures, fields, state keys), so nothing
    later meets a list where a dict belongs; the artifact itself is returned as read.
    """
    document = load_json(data, where)
    if not isinstance(document, dict) or document.get("format") != PROGRAM_FORMAT:
        raise ManifestError(f"{where} is not a dspy-pylon compiled program (no format {PROGRAM_FORMAT!r})")
    version = document.get("schema_version")
    if version != ARTIFACT_VERSION:
        upgrade = (
            ": upgrade dspy-pylon" if isinstance(version, int) and not isinstance(version, bool) and version > 1 else ""
        )
        raise ManifestError(
            f"{where} has schema_version {version!r}; this dspy-pylon reads {ARTIFACT_VERSION}{upgrade}"
        )
    artifact = document.get("artifact")
    try:
        _Artifact.model_validate(artifact)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()[:6]
        )
        raise ManifestError(f"{where} holds no valid artifact: {problems}") from None
    assert isinstance(artifact, dict)
    return artifact


def write_files(directory: Path, program: bytes, manifest: bytes) -> None:
    """Write both files into ``directory`` (created if needed), each atomically, readable by all
    (an artifact is meant to be shared; it holds no secret)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in ((PROGRAM_FILE, program), (MANIFEST_FILE, manifest)):
            write_atomic(directory / name, data)
            os.chmod(directory / name, 0o644)
        fsync_dir(directory)
    except OSError as exc:
        raise ManifestError(f"cannot write the compiled program to {directory}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Verified:
    """A directory that passed verification: its manifest, artifact and who signed it (if anyone)."""

    manifest: CompiledModuleManifest
    artifact: dict[str, Any]
    signer: str | None

    @property
    def signed(self) -> bool:
        """Whether the manifest carries a (valid) signature."""
        return self.signer is not None


#: The largest file read as a compiled program (a 10-predictor, 1,000-demo program is ~0.4 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024


def _read(path: Path) -> bytes:
    # Opened without blocking and checked to be a regular file of a sane size: a FIFO or a
    # device (say, a symlink to /dev/zero) in a downloaded directory must not hang or fill memory.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: not a compiled program directory") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ManifestError(f"{path} is {info.st_size} bytes, more than a compiled program may be")
        try:
            return f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def verify_compiled(
    directory: Path | str, trusted_signers: Iterable[str] | str = (), require_signature: bool = False
) -> Verified:
    """Check a compiled program directory from its files alone.

    ``program.json``'s digest and recomputed ``compiled_id`` must be the manifest's
    (:class:`IntegrityError` naming both), the manifest's structure the artifact's, and a
    signature, when present, must verify. With ``trusted_signers`` (npubs or hex keys) the
    manifest must be signed by one of them; ``require_signature`` refuses an unsigned one
    (:class:`SignatureError`).
    """
    directory = Path(directory)
    manifest_bytes = _read(directory / MANIFEST_FILE)
    raw_manifest = load_json(manifest_bytes, str(directory / MANIFEST_FILE))
    manifest = manifest_from_data(raw_manifest, str(directory / MANIFEST_FILE))
    program_bytes = _read(directory / PROGRAM_FILE)
    digest = sha256_hex(program_bytes)
    if digest != manifest.program_sha256:
        raise IntegrityError(
            f"{directory / PROGRAM_FILE} has SHA-256 {digest}, its manifest says {manifest.program_sha256}: "
            "the file was changed after the manifest was written",
            reason=IntegrityProblem.PROGRAM_DIGEST,
            expected=manifest.program_sha256,
            actual=digest,
        )
    artifact = parse_program(program_bytes, str(directory / PROGRAM_FILE))
    try:
        found = compiled_id(artifact)
    except RecursionError:
        raise ManifestError(f"{directory / PROGRAM_FILE} is nested too deeply to be a compiled program") from None
    if found != manifest.compiled_id:
        raise IntegrityError(
            f"{directory / PROGRAM_FILE} hashes to compiled_id {found}, its manifest says {manifest.compiled_id}",
            reason=IntegrityProblem.COMPILED_ID,
            expected=manifest.compiled_id,
            actual=found,
        )
    if [p.model_dump(mode="json") for p in manifest.structure] != structure(artifact):
        raise IntegrityError(
            f"{directory / MANIFEST_FILE} describes other predictors than {PROGRAM_FILE} holds",
            reason=IntegrityProblem.STRUCTURE,
        )
    trusted = signer_keys(trusted_signers)
    signer = None
    if manifest.signature is not None:
        # Over the manifest as read: re-serialising through the model could reformat a value.
        signer = verify_signature(raw_manifest, manifest.signature)
        if trusted and signer not in trusted:
            raise SignatureError(
                f"the manifest is signed by {signer}, which is not one of the trusted signers",
                problem=SignatureProblem.UNTRUSTED,
                signer=signer,
            )
    elif trusted or require_signature:
        raise SignatureError(
            f"{directory / MANIFEST_FILE} is unsigned, and a signature is required", problem=SignatureProblem.UNSIGNED
        )
    return Verified(manifest=manifest, artifact=artifact, signer=signer)
