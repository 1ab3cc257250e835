"""The manifest of a compiled program: what it is, how it was made, how well it scored, what it needs.

Typed with pydantic (frozen, unknown keys refused) so a file is either fully valid or a
:class:`ManifestError` that says which field is wrong; :func:`manifest_json_schema` is the
published JSON Schema (``pylon manifest schema``). ``schema_version`` is checked before
anything else, so a manifest from a newer dspy-pylon gets "upgrade", not a field error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from dspy_pylon.contract.modes import PRIVACY_ORDER, Lane, PrivacyMode
from dspy_pylon.plain_errors import ManifestError

#: The manifest format this dspy-pylon writes and reads.
SCHEMA_VERSION: Final = 1

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Hex128 = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]


class _Model(BaseModel):
    # NaN and infinities have no JSON form: a metric returning NaN is refused, not written.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Scorecard(_Model):
    """How well a compiled program scored on its validation set, over ``rollouts`` runs.

    ``proxy_metrics`` summarise the optimizer's metric over the rollouts: the median under
    the metric's name, and ``<name>_mean``, ``<name>_min``, ``<name>_max``;
    ``truth_metrics`` the same for the ground-truth metric, when one was given. A rollout's
    score is the metric's mean over the examples (``dspy.Evaluate``'s score / 100);
    ``median_score`` is the median of those, ``scores`` each of them. ``p_fail`` is the
    share of (example, rollout) runs that raised or scored 0.
    """

    proxy_metrics: dict[str, float]
    truth_metrics: dict[str, float] = Field(default_factory=dict)
    rollouts: int = Field(ge=1)
    examples: int = Field(ge=0)
    median_score: float
    p_fail: float = Field(ge=0.0, le=1.0)
    scores: tuple[float, ...] = ()


class Compatibility(_Model):
    """What a compiled program needs from the runtime that loads it.

    ``required_tools``: tool names the program calls (given to ``load_compiled(tools=...)``).
    ``required_lanes``: lanes the configured LM must offer (empty: any). ``privacy_modes_allowed``:
    the modes the program may run under (the least strict of them is enforced on every call).
    ``min_provider_reputation``: swarm providers below this reputation (0..1) are never used.
    """

    required_tools: tuple[str, ...] = ()
    required_lanes: tuple[Lane, ...] = ()
    privacy_modes_allowed: tuple[PrivacyMode, ...] = tuple(PRIVACY_ORDER)
    min_provider_reputation: float | None = Field(default=None, ge=0.0, le=1.0)

    def privacy_floor(self) -> PrivacyMode:
        """The least strict allowed mode: what every call of the program is held to.

        An LM whose own mode is stricter keeps its own; one looser (or unset) is tightened to this.
        """
        if not self.privacy_modes_allowed:
            raise ManifestError("compatibility.privacy_modes_allowed is empty: no mode would let the program run")
        return min(self.privacy_modes_allowed, key=PRIVACY_ORDER.index)


class ModelRef(_Model):
    """A model the program was compiled or scored against."""

    model: str
    served_model: str | None = None
    gguf_sha256: Hex64 | None = None


class PredictorInfo(_Model):
    """One predictor of the program: its name, class and full signature (as in ``program.json``)."""

    name: str
    kind: str
    signature: dict[str, Any]


class ManifestSignature(_Model):
    """A BIP-340 Schnorr signature by a Nostr key over the manifest's in-toto statement."""

    scheme: Literal["bip340-in-toto-v1"] = "bip340-in-toto-v1"
    public_key: Hex64
    sig: Hex128


class CompiledModuleManifest(_Model):
    """Everything a user needs to trust a compiled program; stored as ``manifest.json``.

    ``compiled_id`` is the SHA-256 of the program's canonical artifact (instructions, demos,
    signatures, structure; see :mod:`dspy_pylon.contract.artifact`), ``program_sha256`` the
    digest of the ``program.json`` bytes. Neither covers ``created_at`` or the scorecard;
    the signature (when present) covers everything here but itself.
    """

    schema_version: Literal[1]
    signature_name: str
    compiled_id: Hex64
    program_sha256: Hex64
    optimizer: str | None = None
    optimizer_settings: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    trainset_id: Hex64 | None = None
    trainset_size: int | None = Field(default=None, ge=0)
    valset_id: Hex64 | None = None
    valset_size: int | None = Field(default=None, ge=0)
    scorecard: Scorecard | None = None
    baseline_scorecard: Scorecard | None = None
    compatibility: Compatibility = Field(default_factory=Compatibility)
    models: tuple[ModelRef, ...] = ()
    dspy_version: str
    dspy_pylon_version: str
    structure: tuple[PredictorInfo, ...]
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    signature: ManifestSignature | None = None

    def unsigned(self) -> CompiledModuleManifest:
        """This manifest without its signature (what a signature covers)."""
        return self.model_copy(update={"signature": None})

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types, ``None`` fields included (so the file shows every field)."""
        return self.model_dump(mode="json")


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``manifest.json`` (draft 2020-12, as pydantic writes it)."""
    schema = CompiledModuleManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://dspy-pylon.dev/schemas/manifest-v{SCHEMA_VERSION}.json"
    return schema


def load_json(data: bytes, where: str) -> Any:
    """JSON bytes, or a :class:`ManifestError` (not JSON, truncated, nested beyond what Python parses)."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where} is not valid JSON (truncated or corrupted?): {exc}") from None
    except RecursionError:
        raise ManifestError(f"{where} is nested too deeply to be a compiled program") from None


def parse_manifest(data: bytes, where: str = "manifest.json") -> CompiledModuleManifest:
    """Read a manifest from its JSON bytes; anything wrong is a :class:`ManifestError`."""
    return manifest_from_data(load_json(data, where), where)


def manifest_from_data(raw: Any, where: str = "manifest.json") -> CompiledModuleManifest:
    """A manifest from its parsed JSON; anything wrong is a :class:`ManifestError`."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} holds a JSON {type(raw).__name__}, not an object")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise ManifestError(
                f"{where} has schema_version {version}; this dspy-pylon reads {SCHEMA_VERSION}: upgrade dspy-pylon"
            )
        raise ManifestError(f"{where} has schema_version {version!r}; this dspy-pylon reads {SCHEMA_VERSION}")
    try:
        return CompiledModuleManifest.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()[:8]
        )
        raise ManifestError(f"{where} is not a valid manifest: {problems}") from None
