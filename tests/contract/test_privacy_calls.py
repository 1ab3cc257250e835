"""Call-time privacy: a call the mode forbids is refused before anything is sent anywhere."""

from __future__ import annotations

import asyncio
import copy
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.config import PylonConfig, Swarm, config_from_dict, config_to_dict
from tests.contract.programs import TwoSteps
from tests.helpers import pylon_cause

PrivacyMode = pylon.PrivacyMode
KEY = "11" * 32
CLOSED_RELAY = "ws://127.0.0.1:9"
PROVIDER = "ab" * 32
FAST_S = 5.0  # a sanity bound: a refusal does no I/O and takes milliseconds


class Listener:
    """A plain TCP listening socket standing in for a relay: it records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.url = f"ws://127.0.0.1:{self.sock.getsockname()[1]}"

    def connected(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


@pytest.fixture
def relay() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.sock.close()


def _swarm(relay_url: str = CLOSED_RELAY, **kwargs: Any) -> pylon.PylonLM:
    return pylon.LM("pylon:swarm", private_key=KEY, relays=[relay_url], num_retries=0, cache=False, **kwargs)


def _refusal(error: BaseException) -> pylon.PrivacyViolation:
    assert isinstance(error, dspy_errors.LMInvalidRequestError)
    assert not dspy_errors.is_retryable_lm_error(error)
    violation = pylon_cause(error, pylon.PrivacyViolation)
    assert violation.mode == "no_pii"
    assert violation.venue == "swarm"
    return violation


def test_an_untargeted_swarm_call_under_no_pii_is_refused_before_any_connection(relay: Listener) -> None:
    lm = _swarm(relay.url, privacy="no_pii")
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMError) as info:
        lm("my phone number is 555-0100")
    assert time.monotonic() - started < FAST_S
    _refusal(info.value)
    assert not relay.connected()
    assert lm.history == []
    assert lm.total_spent_msats() == 0


def test_an_async_call_is_refused_the_same_way(relay: Listener) -> None:
    lm = _swarm(relay.url, privacy="no_pii")
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMError) as info:
        asyncio.run(lm.acall("my phone number is 555-0100"))
    assert time.monotonic() - started < FAST_S
    _refusal(info.value)
    assert not relay.connected()


def test_a_streamed_program_call_is_refused_without_a_connection(relay: Listener) -> None:
    program = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
    )

    async def run() -> list[Any]:
        return [chunk async for chunk in program(question="my phone number is 555-0100")]

    started = time.monotonic()
    with dspy.context(lm=_swarm(relay.url, privacy="no_pii")), pytest.raises(dspy_errors.LMError) as info:
        asyncio.run(run())
    assert time.monotonic() - started < FAST_S
    # streamify re-raises DSPy's error without its cause; its type is the refusal's mapping.
    assert isinstance(info.value, dspy_errors.LMInvalidRequestError)
    assert not relay.connected()


def test_a_refusal_needs_no_identity(relay: Listener, tmp_path: Path) -> None:
    # No key given and no identity file in $PYLON_HOME: the refusal comes first.
    lm = pylon.LM("pylon:swarm", relays=[relay.url], privacy="no_pii", num_retries=0, cache=False)
    with pytest.raises(dspy_errors.LMError) as info:
        lm("hello")
    _refusal(info.value)
    assert not relay.connected()


def test_a_held_copy_is_refused_and_the_original_is_not_held(relay: Listener) -> None:
    lm = _swarm(relay.url)
    held = lm.with_privacy("no_pii")
    assert held is not lm
    assert held.privacy is PrivacyMode.NO_PII
    assert lm.privacy is None
    with pytest.raises(dspy_errors.LMError) as info:
        held("hello")
    _refusal(info.value)
    assert not relay.connected()


@pytest.mark.parametrize("mode", ["no_pii", "private_repo_redacted", "private_repo_allowed"])
def test_every_private_mode_refuses_a_job_in_the_clear(relay: Listener, mode: str) -> None:
    lm = _swarm(relay.url, providers=[PROVIDER, "cd" * 32], privacy=mode)
    with pytest.raises(dspy_errors.LMError) as info:
        lm("hello")
    assert pylon_cause(info.value, pylon.PrivacyViolation).mode == mode
    assert not relay.connected()


def test_a_swarm_call_to_exactly_one_provider_is_not_refused_by_privacy() -> None:
    lm = _swarm(providers=[PROVIDER], privacy="no_pii", timeout=1)
    try:
        with pytest.raises(dspy_errors.LMError) as info:
            lm("hello")
    finally:
        lm.close()
    # It went on to the (closed) relay: the failure is a transport one, not a refusal.
    causes = []
    current: BaseException | None = info.value
    while current is not None:
        causes.append(current)
        current = current.__cause__
    assert not any(isinstance(c, pylon.PrivacyViolation) for c in causes)
    assert any(isinstance(c, pylon.PylonError) for c in causes)


def test_a_hybrid_fallback_to_the_clear_swarm_is_refused_with_the_local_failure_as_cause(relay: Listener) -> None:
    # No local backend answers (conftest closes them all): the fallback would publish in the clear.
    lm = pylon.LM("pylon:hybrid", private_key=KEY, relays=[relay.url], privacy="no_pii", num_retries=0, cache=False)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMError) as info:
        lm("hello")
    assert time.monotonic() - started < FAST_S
    violation = _refusal(info.value)
    assert isinstance(violation.__cause__, pylon.NoLocalBackend)
    assert not relay.connected()


def test_a_program_loaded_under_no_pii_refuses_to_fall_back_to_the_clear_swarm(relay: Listener, tmp_path: Path) -> None:
    program = TwoSteps()
    manifest = pylon.build_manifest(
        program, compatibility=pylon.Compatibility(privacy_modes_allowed=(PrivacyMode.NO_PII,))
    )
    pylon.save_compiled(program, manifest, tmp_path)
    lm = pylon.LM("pylon:hybrid", private_key=KEY, relays=[relay.url], num_retries=0, cache=False)
    loaded, _ = pylon.load_compiled(tmp_path, TwoSteps(), lm=lm)
    with pytest.raises(dspy_errors.LMError) as info:
        loaded(question="my phone number is 555-0100")
    _refusal(info.value)
    assert not relay.connected()


def test_with_privacy_never_loosens_the_mode() -> None:
    lm = _swarm(privacy="no_pii")
    looser = lm.with_privacy("public_ok")
    assert looser.privacy is PrivacyMode.NO_PII
    assert looser is lm  # nothing changes: the same LM
    stricter = lm.with_privacy(PrivacyMode.PRIVATE_REPO_ALLOWED)
    assert stricter.privacy is PrivacyMode.PRIVATE_REPO_ALLOWED
    assert stricter.with_privacy("no_pii").privacy is PrivacyMode.PRIVATE_REPO_ALLOWED
    assert lm.privacy is PrivacyMode.NO_PII


def test_a_held_copy_is_still_refused_after_with_privacy_public_ok(relay: Listener) -> None:
    held = _swarm(relay.url).with_privacy("no_pii").with_privacy("public_ok")
    with pytest.raises(dspy_errors.LMError) as info:
        held("hello")
    _refusal(info.value)


def test_copies_of_a_held_lm_stay_held(relay: Listener) -> None:
    held = _swarm(relay.url).with_privacy("no_pii")
    warmer = held.copy(temperature=0.5)
    assert warmer.kwargs["temperature"] == 0.5
    assert warmer.privacy is PrivacyMode.NO_PII
    other_model = held.copy(model="pylon:swarm:llama3.2")
    assert other_model.privacy is PrivacyMode.NO_PII
    assert copy.deepcopy(held).privacy is PrivacyMode.NO_PII
    for lm in (warmer, other_model):
        with pytest.raises(dspy_errors.LMError) as info:
            lm("hello")
        _refusal(info.value)
    assert not relay.connected()


def test_a_pickled_lm_keeps_its_privacy_mode() -> None:
    assert pickle.loads(pickle.dumps(_swarm(privacy="no_pii"))).privacy is PrivacyMode.NO_PII
    # A copy held by with_privacy (what load_compiled sets on every predictor) must stay held too:
    # pickling must not turn a no_pii LM into one that publishes prompts in the clear.
    held = _swarm().with_privacy("no_pii")
    assert pickle.loads(pickle.dumps(held)).privacy is PrivacyMode.NO_PII


@pytest.mark.parametrize("mode", ["secret", "NO-PII", "", 3])
def test_an_unknown_privacy_mode_is_a_config_error(mode: Any) -> None:
    with pytest.raises(pylon.ConfigError):
        pylon.LM("pylon:swarm", private_key=KEY, relays=[CLOSED_RELAY], privacy=mode)
    with pytest.raises(pylon.ConfigError):
        _swarm().with_privacy(mode)
    with pytest.raises(pylon.ConfigError):
        PylonConfig(privacy=mode)


def test_privacy_in_the_config_is_a_mode_and_survives_its_dict_form() -> None:
    config = PylonConfig(venue=Swarm(relays=(CLOSED_RELAY,)), privacy="no_pii")  # type: ignore[arg-type]
    assert config.privacy is PrivacyMode.NO_PII
    data = config_to_dict(config)
    assert data["privacy"] == "no_pii"
    again = config_from_dict(data)
    assert again.privacy is PrivacyMode.NO_PII
    assert again == config
    assert config_from_dict(config_to_dict(PylonConfig())).privacy is None


def test_an_lm_built_from_a_private_config_is_refused(relay: Listener) -> None:
    config = PylonConfig(venue=Swarm(relays=(relay.url,)), privacy=PrivacyMode.NO_PII)
    lm = pylon.PylonLM.from_config(config, num_retries=0, cache=False)
    assert lm.privacy is PrivacyMode.NO_PII
    with pytest.raises(dspy_errors.LMError) as info:
        lm("hello")
    _refusal(info.value)
    assert not relay.connected()
