"""Saving a compiled DSPy program with its manifest, and loading it back with every check.

``save_compiled`` writes ``program.json`` (the artifact, JSON only) and ``manifest.json``
(signed when given an identity); ``load_compiled`` verifies the directory (digest,
``compiled_id``, signature), loads the state into a fresh instance of the program, checks
that the loaded program hashes to the same id, then checks the manifest's compatibility
against the runtime (tools, lanes, privacy, provider reputation) and raises one
:class:`~dspy_pylon.errors.CompatibilityError` listing every unmet requirement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dspy_pylon.contract.artifact import apply_artifact, compiled_id, program_artifact, signature_name, structure
from dspy_pylon.contract.compatibility import RuntimeFacts, Unmet, check
from dspy_pylon.contract.files import render_manifest, render_program, verify_compiled, write_files
from dspy_pylon.contract.hashing import examples_id, jsonable, sha256_hex
from dspy_pylon.contract.manifest import (
    SCHEMA_VERSION,
    Compatibility,
    CompiledModuleManifest,
    ModelRef,
    PredictorInfo,
    Scorecard,
)
from dspy_pylon.contract.modes import Destination, Lane, PrivacyMode
from dspy_pylon.contract.signing import sign_manifest
from dspy_pylon.plain_errors import CompatibilityError, IntegrityError, IntegrityProblem

if TYPE_CHECKING:
    from dspy_pylon.identity import Identity

#: The program type ``load_compiled`` gives back.
P = TypeVar("P")


def compiled_id_of(program: Any) -> str:
    """The ``compiled_id`` of a DSPy program as it is now (what its manifest would say)."""
    return compiled_id(program_artifact(program))


def build_manifest(
    program: Any,
    *,
    optimizer: str | None = None,
    optimizer_settings: Mapping[str, Any] | None = None,
    seed: int | None = None,
    trainset: Iterable[Any] | None = None,
    valset: Iterable[Any] | None = None,
    scorecard: Scorecard | None = None,
    baseline_scorecard: Scorecard | None = None,
    compatibility: Compatibility | None = None,
    models: Iterable[ModelRef] = (),
) -> CompiledModuleManifest:
    """The (unsigned) manifest of ``program`` as it is now, with what is known of how it was made.

    For a program optimized without :func:`dspy_pylon.compile`; ``compile`` fills all of it.
    """
    import dspy

    from dspy_pylon import __version__

    artifact = program_artifact(program)
    train = list(trainset) if trainset is not None else None
    val = list(valset) if valset is not None else None
    return CompiledModuleManifest(
        schema_version=SCHEMA_VERSION,
        signature_name=signature_name(program),
        compiled_id=compiled_id(artifact),
        program_sha256=sha256_hex(render_program(artifact)),
        optimizer=optimizer,
        optimizer_settings=jsonable(dict(optimizer_settings or {}), "optimizer_settings"),
        seed=seed,
        trainset_id=examples_id(train) if train is not None else None,
        trainset_size=len(train) if train is not None else None,
        valset_id=examples_id(val) if val is not None else None,
        valset_size=len(val) if val is not None else None,
        scorecard=scorecard,
        baseline_scorecard=baseline_scorecard,
        compatibility=compatibility or Compatibility(),
        models=tuple(models),
        dspy_version=dspy.__version__,
        dspy_pylon_version=__version__,
        structure=tuple(PredictorInfo.model_validate(p) for p in structure(artifact)),
    )


def save_compiled(
    program: Any,
    manifest: CompiledModuleManifest | None,
    directory: Path | str,
    *,
    identity: Identity | None = None,
) -> Path:
    """Write ``program.json`` and ``manifest.json`` into ``directory``; returns the directory.

    ``manifest`` defaults to :func:`build_manifest` of the program. It must describe this
    program as it is (:class:`IntegrityError` if the program changed after the manifest
    was made). With ``identity`` (a :class:`~dspy_pylon.identity.Identity`, e.g.
    ``pylon.load_identity()``), the manifest is signed with its Nostr key.
    """
    if manifest is None:
        manifest = build_manifest(program)
    artifact = program_artifact(program)
    program_bytes = render_program(artifact)
    found = compiled_id(artifact)
    if found != manifest.compiled_id:
        raise IntegrityError(
            f"the program's compiled_id is {found}, its manifest says {manifest.compiled_id}: "
            "the program changed after the manifest was made (build it again)",
            reason=IntegrityProblem.CHANGED,
            expected=manifest.compiled_id,
            actual=found,
        )
    manifest = manifest.model_copy(update={"program_sha256": sha256_hex(program_bytes), "signature": None})
    if identity is not None:
        signature = sign_manifest(manifest.to_json_dict(), identity.secret)
        manifest = manifest.model_copy(update={"signature": signature})
    directory = Path(directory)
    write_files(directory, program_bytes, render_manifest(manifest))
    return directory


def load_compiled(
    directory: Path | str,
    program: P,
    *,
    lm: Any = None,
    tools: Iterable[Any] = (),
    trusted_signers: Iterable[str] | str = (),
    require_signature: bool = False,
) -> tuple[P, CompiledModuleManifest]:
    """Load a compiled program saved by :func:`save_compiled` into ``program``, checking everything.

    ``program`` is a fresh instance of the program that was compiled (its code; the files
    hold only its state, never a pickle). ``lm`` (default: DSPy's configured LM) is checked
    against the manifest's lanes, privacy modes and provider reputation, and set on every
    predictor — held to the manifest's privacy (:meth:`~dspy_pylon.PylonLM.with_privacy`),
    so each call is refused where the mode forbids it, and to its minimum provider
    reputation (:meth:`~dspy_pylon.PylonLM.with_min_reputation`); a configured LM is set
    (held) only when the manifest restricts one of them. ``tools`` (callables, ``dspy.Tool``s or names) are
    checked against its required tools.
    ``trusted_signers`` (npubs or hex keys) requires a signature by one of them.

    Returns ``(program, manifest)``. Raises :class:`~dspy_pylon.errors.ManifestError` for
    unreadable files, :class:`~dspy_pylon.errors.IntegrityError` (or its
    :class:`~dspy_pylon.errors.SignatureError`) when content, ids or signature do not match,
    and :class:`~dspy_pylon.errors.CompatibilityError` with every unmet requirement.
    """
    import dspy

    verified = verify_compiled(directory, trusted_signers=trusted_signers, require_signature=require_signature)
    manifest = verified.manifest
    chosen = lm if lm is not None else dspy.settings.lm
    held = _held_to(chosen, manifest.compatibility)  # checked as it will run: held to the manifest
    unmet = check(manifest.compatibility, runtime_facts(held, tools))
    if unmet:
        raise CompatibilityError(_unmet_message(directory, unmet), unmet=unmet)
    as_given = program_artifact(program)  # small for a fresh program: what a refusal restores
    apply_artifact(program, verified.artifact)
    try:
        found = compiled_id(program_artifact(program))
    except BaseException:
        apply_artifact(program, as_given)
        raise
    if found != manifest.compiled_id:
        apply_artifact(program, as_given)
        raise IntegrityError(
            f"the program loaded from {directory} hashes to {found}, not {manifest.compiled_id}: "
            "DSPy did not restore every part of the saved state",
            reason=IntegrityProblem.RELOADED,
            expected=manifest.compiled_id,
            actual=found,
        )
    if lm is not None or held is not chosen:
        module: Any = program
        for _, predictor in module.named_predictors():
            predictor.lm = held
    return program, manifest


def _held_to(lm: Any, requirements: Compatibility) -> Any:
    """``lm`` held on every call to the manifest's privacy floor and minimum provider
    reputation (a pylon LM; others were checked above: only ``public_ok`` lets them run)."""
    from dspy_pylon.lm import PylonLM

    if not isinstance(lm, PylonLM):
        return lm
    floor = requirements.privacy_floor()
    if floor is not PrivacyMode.PUBLIC_OK:
        lm = lm.with_privacy(floor)
    if requirements.min_provider_reputation is not None:
        lm = lm.with_min_reputation(requirements.min_provider_reputation)
    return lm


def _unmet_message(directory: Path | str, unmet: tuple[Unmet, ...]) -> str:
    lines = "\n".join(f"  - {u}" for u in unmet)
    return f"the compiled program in {directory} cannot run here ({len(unmet)} unmet):\n{lines}"


def tool_names(tools: Iterable[Any]) -> frozenset[str]:
    """The names of tools given as ``dspy.Tool``s, callables or strings."""
    names = set()
    for tool in tools:
        if isinstance(tool, str):
            names.add(tool)
        else:
            name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
            if isinstance(name, str):
                names.add(name)
    return frozenset(names)


def runtime_facts(lm: Any, tools: Iterable[Any] = ()) -> RuntimeFacts:
    """What ``lm`` (a pylon LM, another ``dspy.LM``, or ``None``) and ``tools`` offer a program."""
    from dspy_pylon.config import Hybrid, Local, Swarm
    from dspy_pylon.lm import PylonLM

    names = tool_names(tools)
    if lm is None:
        return RuntimeFacts(
            lm="no LM (none given, none configured)", lanes=frozenset(), routes=frozenset(), tools=names
        )
    if not isinstance(lm, PylonLM):
        return RuntimeFacts(
            lm=f"the LM {getattr(lm, 'model', type(lm).__name__)!r}",
            lanes=frozenset(),
            routes=frozenset({Destination.EXTERNAL}),
            tools=names,
        )
    venue = lm.config.venue
    providers: tuple[str, ...] = ()
    if isinstance(venue, Local):
        lanes, routes = frozenset({Lane.LOCAL}), frozenset({Destination.LOCAL})
    else:
        providers = venue.providers
        swarm_route = Destination.SWARM_ENCRYPTED if venue.encrypts else Destination.SWARM_CLEAR
        if isinstance(venue, Swarm):
            lanes, routes = frozenset({Lane.SWARM}), frozenset({swarm_route})
        else:
            assert isinstance(venue, Hybrid)
            lanes = frozenset({Lane.LOCAL, Lane.SWARM, Lane.HYBRID})
            routes = frozenset({Destination.LOCAL, swarm_route})
    return RuntimeFacts(
        lm=repr(lm.model),
        lanes=lanes,
        routes=routes,
        tools=names,
        provider_reputations=lm.runtime.provider_reputations(providers) if providers else {},
    )
