"""A manifest's requirements against a runtime: the pure check, then load_compiled with real LMs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.contract.compatibility import Requirement, RuntimeFacts, check
from dspy_pylon.contract.modes import Destination
from tests.contract.programs import TwoSteps, qa_cot

Lane = pylon.Lane
PrivacyMode = pylon.PrivacyMode
KEY = "11" * 32
RELAYS = ["ws://127.0.0.1:9"]
PROVIDER = "ab" * 32
SECOND_PROVIDER = "cd" * 32


def _facts(**overrides: Any) -> RuntimeFacts:
    values: dict[str, Any] = {
        "lm": "'pylon:hybrid'",
        "lanes": frozenset({Lane.LOCAL, Lane.SWARM, Lane.HYBRID}),
        "routes": frozenset({Destination.LOCAL}),
        "tools": frozenset({"search"}),
        "provider_reputations": {},
    }
    values.update(overrides)
    return RuntimeFacts(**values)


def _kinds(unmet: tuple[Any, ...]) -> list[Requirement]:
    return [u.requirement for u in unmet]


# --- the pure check -------------------------------------------------------------------------------


def test_no_requirements_are_met_by_anything() -> None:
    assert check(pylon.Compatibility(), _facts(lanes=frozenset(), routes=frozenset({Destination.EXTERNAL}))) == ()


def test_a_required_tool_given_is_met_and_one_missing_is_not() -> None:
    needs = pylon.Compatibility(required_tools=("search", "calculator"))
    assert check(needs, _facts(tools=frozenset({"search", "calculator", "extra"}))) == ()
    unmet = check(needs, _facts(tools=frozenset({"search"})))
    assert _kinds(unmet) == [Requirement.TOOL]
    assert "calculator" in unmet[0].detail


@pytest.mark.parametrize(
    ("required", "offered", "met"),
    [
        (Lane.LOCAL, {Lane.LOCAL}, True),
        (Lane.SWARM, {Lane.SWARM}, True),
        (Lane.HYBRID, {Lane.LOCAL, Lane.SWARM, Lane.HYBRID}, True),
        (Lane.SWARM, {Lane.LOCAL}, False),
        (Lane.HYBRID, {Lane.SWARM}, False),
        (Lane.LOCAL, set(), False),
    ],
)
def test_a_required_lane_must_be_offered(required: pylon.Lane, offered: set[pylon.Lane], met: bool) -> None:
    unmet = check(pylon.Compatibility(required_lanes=(required,)), _facts(lanes=frozenset(offered)))
    assert _kinds(unmet) == ([] if met else [Requirement.LANE])


@pytest.mark.parametrize(
    ("mode", "routes", "met"),
    [
        (PrivacyMode.NO_PII, {Destination.LOCAL}, True),
        (PrivacyMode.NO_PII, {Destination.SWARM_ENCRYPTED}, True),
        (PrivacyMode.NO_PII, {Destination.LOCAL, Destination.SWARM_ENCRYPTED}, True),
        (PrivacyMode.NO_PII, {Destination.SWARM_CLEAR}, False),
        (PrivacyMode.NO_PII, {Destination.EXTERNAL}, False),
        (PrivacyMode.PRIVATE_REPO_ALLOWED, {Destination.SWARM_CLEAR}, False),
        (PrivacyMode.PRIVATE_REPO_REDACTED, {Destination.SWARM_ENCRYPTED}, True),
        (PrivacyMode.PUBLIC_OK, {Destination.SWARM_CLEAR}, True),
        (PrivacyMode.PUBLIC_OK, {Destination.EXTERNAL}, True),
    ],
)
def test_the_privacy_floor_must_allow_a_route_of_the_lm(
    mode: pylon.PrivacyMode, routes: set[Destination], met: bool
) -> None:
    unmet = check(pylon.Compatibility(privacy_modes_allowed=(mode,)), _facts(routes=frozenset(routes)))
    assert _kinds(unmet) == ([] if met else [Requirement.PRIVACY])


def test_a_manifest_allowing_no_privacy_mode_is_never_met() -> None:
    unmet = check(pylon.Compatibility(privacy_modes_allowed=()), _facts())
    assert _kinds(unmet) == [Requirement.PRIVACY]


def test_every_provider_below_the_reputation_floor_is_listed() -> None:
    needs = pylon.Compatibility(min_provider_reputation=0.8)
    assert check(needs, _facts(provider_reputations={PROVIDER: 0.8, SECOND_PROVIDER: 0.95})) == ()
    unmet = check(needs, _facts(provider_reputations={PROVIDER: 0.1, SECOND_PROVIDER: 0.79}))
    assert _kinds(unmet) == [Requirement.REPUTATION, Requirement.REPUTATION]
    assert any(PROVIDER in u.detail for u in unmet) and any(SECOND_PROVIDER in u.detail for u in unmet)
    # Without a floor, reputation is not a requirement.
    assert check(pylon.Compatibility(), _facts(provider_reputations={PROVIDER: 0.0})) == ()


def test_several_unmet_requirements_are_all_listed() -> None:
    needs = pylon.Compatibility(
        required_tools=("search", "shell"),
        required_lanes=(Lane.LOCAL, Lane.HYBRID),
        privacy_modes_allowed=(PrivacyMode.NO_PII,),
        min_provider_reputation=0.9,
    )
    facts = _facts(
        lanes=frozenset({Lane.SWARM}),
        routes=frozenset({Destination.SWARM_CLEAR}),
        tools=frozenset(),
        provider_reputations={PROVIDER: 0.5},
    )
    assert _kinds(check(needs, facts)) == [
        Requirement.TOOL,
        Requirement.TOOL,
        Requirement.LANE,
        Requirement.LANE,
        Requirement.PRIVACY,
        Requirement.REPUTATION,
    ]


# --- load_compiled with real LMs ------------------------------------------------------------------


def _local() -> pylon.PylonLM:
    return pylon.LM("pylon:local")


def _swarm(**kwargs: Any) -> pylon.PylonLM:
    return pylon.LM("pylon:swarm", private_key=KEY, relays=RELAYS, **kwargs)


def _hybrid(**kwargs: Any) -> pylon.PylonLM:
    return pylon.LM("pylon:hybrid", private_key=KEY, relays=RELAYS, **kwargs)


def _hosted() -> dspy.LM:
    return dspy.LM("openai/gpt-4o-mini")  # never called


LMS: dict[str, Callable[[], Any]] = {
    "local": _local,
    "swarm": _swarm,
    "swarm-one-provider": lambda: _swarm(providers=[PROVIDER]),
    "hybrid": _hybrid,
    "hosted": _hosted,
}


@pytest.fixture
def save(tmp_path: Path) -> Callable[..., Path]:
    """Save a compiled two-demo ChainOfThought with the given requirements; returns its directory."""
    count = iter(range(1000))

    def saving(**requirements: Any) -> Path:
        program = qa_cot()
        manifest = pylon.build_manifest(program, compatibility=pylon.Compatibility(**requirements))
        return pylon.save_compiled(program, manifest, tmp_path / f"compiled-{next(count)}")

    return saving


def _load(directory: Path, lm: Any, **kwargs: Any) -> tuple[Any, pylon.CompiledModuleManifest]:
    return pylon.load_compiled(directory, dspy.ChainOfThought("question -> answer"), lm=lm, **kwargs)


OFFERED = {
    "local": {Lane.LOCAL},
    "swarm": {Lane.SWARM},
    "swarm-one-provider": {Lane.SWARM},
    "hybrid": {Lane.LOCAL, Lane.SWARM, Lane.HYBRID},
    "hosted": set(),
}


@pytest.mark.parametrize("lane", list(Lane))
@pytest.mark.parametrize("lm", list(LMS))
def test_a_required_lane_is_met_only_by_an_lm_that_offers_it(
    save: Callable[..., Path], lm: str, lane: pylon.Lane
) -> None:
    directory = save(required_lanes=(lane,))
    if lane in OFFERED[lm]:
        _program, manifest = _load(directory, LMS[lm]())
        assert manifest.compatibility.required_lanes == (lane,)
    else:
        with pytest.raises(pylon.CompatibilityError) as info:
            _load(directory, LMS[lm]())
        assert _kinds(info.value.unmet) == [Requirement.LANE]
        assert str(directory) in str(info.value)


@pytest.mark.parametrize(
    ("lm", "allowed"),
    [("local", True), ("swarm", False), ("swarm-one-provider", True), ("hybrid", True), ("hosted", False)],
)
def test_no_pii_is_refused_for_an_lm_that_would_publish_in_the_clear(
    save: Callable[..., Path], lm: str, allowed: bool
) -> None:
    directory = save(privacy_modes_allowed=(PrivacyMode.NO_PII,))
    if allowed:
        _load(directory, LMS[lm]())
    else:
        with pytest.raises(pylon.CompatibilityError) as info:
            _load(directory, LMS[lm]())
        assert _kinds(info.value.unmet) == [Requirement.PRIVACY]


def test_a_swarm_lm_naming_several_providers_is_in_the_clear_too(save: Callable[..., Path]) -> None:
    directory = save(privacy_modes_allowed=(PrivacyMode.PRIVATE_REPO_ALLOWED,))
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(directory, _swarm(providers=[PROVIDER, SECOND_PROVIDER]))
    assert _kinds(info.value.unmet) == [Requirement.PRIVACY]


@pytest.mark.parametrize("lm", list(LMS))
def test_a_public_ok_manifest_loads_on_any_lm(save: Callable[..., Path], lm: str) -> None:
    chosen = LMS[lm]()
    program, _ = _load(save(), chosen)
    assert all(p.lm is chosen for _, p in program.named_predictors())


@pytest.fixture
def reputation(tmp_path: Path) -> Iterator[pylon.Reputation]:
    store = pylon.Reputation(tmp_path / "rep.sqlite")
    yield store
    store.close()


def test_a_provider_with_ten_errors_is_below_the_reputation_floor(
    save: Callable[..., Path], reputation: pylon.Reputation
) -> None:
    for _ in range(10):
        reputation.record_error(PROVIDER)
    directory = save(min_provider_reputation=0.8)
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(directory, _swarm(providers=[PROVIDER], reputation=reputation))
    assert _kinds(info.value.unmet) == [Requirement.REPUTATION]
    assert PROVIDER in str(info.value)


def test_a_provider_with_ten_successes_meets_the_reputation_floor(
    save: Callable[..., Path], reputation: pylon.Reputation
) -> None:
    for _ in range(10):
        reputation.record_success(PROVIDER, 120.0)
    directory = save(min_provider_reputation=0.8)
    _load(directory, _swarm(providers=[PROVIDER], reputation=reputation))
    _load(directory, _hybrid(providers=[PROVIDER], reputation=reputation))


def test_a_provider_given_as_npub_is_checked_under_its_key(
    save: Callable[..., Path], reputation: pylon.Reputation
) -> None:
    provider = pylon.Identity(bytes.fromhex("44" * 32))
    for _ in range(10):
        reputation.record_error(provider.public_key_hex)
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(save(min_provider_reputation=0.8), _hybrid(providers=[provider.npub], reputation=reputation))
    assert _kinds(info.value.unmet) == [Requirement.REPUTATION]
    assert provider.public_key_hex in str(info.value)


def test_an_unknown_provider_is_below_a_high_floor(save: Callable[..., Path], reputation: pylon.Reputation) -> None:
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(save(min_provider_reputation=0.8), _swarm(providers=[PROVIDER], reputation=reputation))
    assert _kinds(info.value.unmet) == [Requirement.REPUTATION]
    _load(save(min_provider_reputation=0.5), _swarm(providers=[PROVIDER], reputation=reputation))


def test_required_tools_are_matched_by_name_string_callable_or_dspy_tool(save: Callable[..., Path]) -> None:
    def search(query: str) -> str:
        """Search the web."""
        return query

    directory = save(required_tools=("search",))
    for tools in (["search"], [search], [dspy.Tool(search)]):
        _load(directory, _local(), tools=tools)
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(directory, _local(), tools=["calculator"])
    assert _kinds(info.value.unmet) == [Requirement.TOOL]


def test_the_error_lists_every_unmet_requirement_together(
    save: Callable[..., Path], reputation: pylon.Reputation
) -> None:
    for _ in range(10):
        reputation.record_error(PROVIDER)
    directory = save(
        required_tools=("search",),
        required_lanes=(Lane.LOCAL,),
        privacy_modes_allowed=(PrivacyMode.NO_PII,),
        min_provider_reputation=0.8,
    )
    with pytest.raises(pylon.CompatibilityError) as info:
        _load(directory, _swarm(providers=[PROVIDER, SECOND_PROVIDER], reputation=reputation))
    kinds = _kinds(info.value.unmet)
    assert set(kinds) == {Requirement.TOOL, Requirement.LANE, Requirement.PRIVACY, Requirement.REPUTATION}
    with pytest.raises(pylon.CompatibilityError) as two:
        _load(directory, _swarm())
    # Untargeted, but held to min_provider_reputation its jobs go encrypted to one provider: privacy is met.
    assert _kinds(two.value.unmet) == [Requirement.TOOL, Requirement.LANE]
    for unmet in two.value.unmet:
        assert str(unmet) in str(two.value)


def test_the_configured_lm_is_checked_when_none_is_given(save: Callable[..., Path]) -> None:
    directory = save(privacy_modes_allowed=(PrivacyMode.NO_PII,))
    with dspy.context(lm=_swarm()), pytest.raises(pylon.CompatibilityError):
        pylon.load_compiled(directory, dspy.ChainOfThought("question -> answer"))


def test_a_loaded_no_pii_program_holds_every_predictor_and_leaves_the_users_lm_alone(tmp_path: Path) -> None:
    program = TwoSteps()
    manifest = pylon.build_manifest(
        program, compatibility=pylon.Compatibility(privacy_modes_allowed=(PrivacyMode.NO_PII,))
    )
    pylon.save_compiled(program, manifest, tmp_path)
    lm = _hybrid()
    loaded, _ = pylon.load_compiled(tmp_path, TwoSteps(), lm=lm)
    predictors = loaded.named_predictors()
    assert len(predictors) == 2
    for _, predictor in predictors:
        assert isinstance(predictor.lm, pylon.PylonLM)
        assert predictor.lm.privacy is PrivacyMode.NO_PII
        assert predictor.lm is not lm
        assert predictor.lm.runtime is lm.runtime  # same connections, usage and budget
    assert lm.privacy is None
    assert lm.config.privacy is None


def test_an_lm_stricter_than_the_manifest_keeps_its_own_mode(save: Callable[..., Path]) -> None:
    directory = save(privacy_modes_allowed=(PrivacyMode.NO_PII,))
    lm = _local().with_privacy("private_repo_allowed")
    program, _ = _load(directory, lm)
    assert all(p.lm.privacy is PrivacyMode.PRIVATE_REPO_ALLOWED for _, p in program.named_predictors())


def test_a_configured_lm_is_held_only_when_the_manifest_restricts_privacy(save: Callable[..., Path]) -> None:
    lm = _hybrid()
    with dspy.context(lm=lm):
        open_program, _ = pylon.load_compiled(save(), dspy.ChainOfThought("question -> answer"))
        held_program, _ = pylon.load_compiled(
            save(privacy_modes_allowed=(PrivacyMode.NO_PII,)), dspy.ChainOfThought("question -> answer")
        )
    assert all(p.lm is None for _, p in open_program.named_predictors())
    assert all(p.lm.privacy is PrivacyMode.NO_PII for _, p in held_program.named_predictors())
    assert lm.privacy is None
