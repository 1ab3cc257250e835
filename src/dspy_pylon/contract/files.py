"""``program.json`` and ``manifest.json`` in a directory: writing them, reading and verifying them.

The I/O edge of the contract, and without DSPy: ``pylon manifest verify`` checks a directory
(digest, ``compiled_id``, signature) from the files alone. Writes are atomic per file
(a temporary file, fsynced, renamed over), ``program.json`` first: a crash between the two
leaves a manifest that no longer matches, which verification refuses, never a half file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspy_pylon.contract.artifact import ARTIFACT_VERSION, compiled_id, structure
from dspy_pylon.contract.hashing import sha256_hex
from dspy_pylon.contract.manifest import CompiledModuleManifest, parse_manifest
from dspy_pylon.contract.signing import signer_keys, verify_signature
from dspy_pylon.durable import fsync_dir, write_atomic
from dspy_pylon.plain_errors import IntegrityError, ManifestError, SignatureError

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


def parse_program(data: bytes, where: str = PROGRAM_FILE) -> dict[str, Any]:
    """The artifact inside ``program.json`` bytes; anything malformed is a :class:`ManifestError`."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON (truncated or corrupted?): {exc}") from None
    if not isinstance(document, dict) or document.get("format") != PROGRAM_FORMAT:
        raise ManifestError(f"{where} is not a dspy-pylon compiled program (no format {PROGRAM_FORMAT!r})")
    version = document.get("schema_version")
    if version != ARTIFACT_VERSION:
        raise ManifestError(f"{where} has schema_version {version!r}; this dspy-pylon reads {ARTIFACT_VERSION}")
    artifact = document.get("artifact")
    if (
        not isinstance(artifact, dict)
        or not isinstance(artifact.get("predictors"), list)
        or not all(
            isinstance(p, dict) and {"name", "kind", "signature", "state"} <= p.keys() for p in artifact["predictors"]
        )
    ):
        raise ManifestError(f"{where} has no valid artifact (a list of predictors with name, kind, signature, state)")
    return artifact


def write_files(directory: Path, program: bytes, manifest: bytes) -> None:
    """Write both files into ``directory`` (created if needed), each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / PROGRAM_FILE, program)
    write_atomic(directory / MANIFEST_FILE, manifest)
    fsync_dir(directory)


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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: not a compiled program directory") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def verify_compiled(
    directory: Path | str, trusted_signers: Iterable[str] = (), require_signature: bool = False
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
    manifest = parse_manifest(manifest_bytes, str(directory / MANIFEST_FILE))
    program_bytes = _read(directory / PROGRAM_FILE)
    digest = sha256_hex(program_bytes)
    if digest != manifest.program_sha256:
        raise IntegrityError(
            f"{directory / PROGRAM_FILE} has SHA-256 {digest}, its manifest says {manifest.program_sha256}: "
            "the file was changed after the manifest was written",
            expected=manifest.program_sha256,
            actual=digest,
        )
    artifact = parse_program(program_bytes, str(directory / PROGRAM_FILE))
    found = compiled_id(artifact)
    if found != manifest.compiled_id:
        raise IntegrityError(
            f"{directory / PROGRAM_FILE} hashes to compiled_id {found}, its manifest says {manifest.compiled_id}",
            expected=manifest.compiled_id,
            actual=found,
        )
    if [p.model_dump(mode="json") for p in manifest.structure] != structure(artifact):
        raise IntegrityError(f"{directory / MANIFEST_FILE} describes other predictors than {PROGRAM_FILE} holds")
    trusted = signer_keys(trusted_signers)
    signer = None
    if manifest.signature is not None:
        # Over the manifest as read: re-serialising through the model could reformat a value.
        signer = verify_signature(json.loads(manifest_bytes), manifest.signature)
        if trusted and signer not in trusted:
            raise SignatureError(
                f"the manifest is signed by {signer}, which is not one of the trusted signers", signer=signer
            )
    elif trusted or require_signature:
        raise SignatureError(f"{directory / MANIFEST_FILE} is unsigned, and a signature is required")
    return Verified(manifest=manifest, artifact=artifact, signer=signer)
