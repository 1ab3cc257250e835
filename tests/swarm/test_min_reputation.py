"""``min_reputation``: swarm jobs go only to providers this machine trusts enough, on a real relay
with two real provider nodes; a compiled program's ``min_provider_reputation`` holds its LM to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.config import Swarm
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.testing import LocalSwarm
from tests.helpers import WholeAnswerAdapter, pylon_cause


@pytest.fixture
def swarm(tmp_path: Path, tiny_server: EmbeddedLlama) -> Iterator[LocalSwarm]:
    with LocalSwarm(tmp_path, providers=2, price_msats=1_000, backend_url=tiny_server.url) as running:
        # This machine's history: provider 0 answered ten jobs, provider 1 failed ten.
        store = pylon.Reputation(running.home / "reputation.sqlite")
        for _ in range(10):
            store.record_success(running.nodes[0].pubkey, 5.0)
            store.record_error(running.nodes[1].pubkey)
        store.close()
        yield running


def _lm(swarm: LocalSwarm, **venue: object) -> pylon.PylonLM:
    return swarm.lm(
        venue=Swarm(relays=(swarm.url,), bid_msats=2_000, auto_pay=True, **venue),  # type: ignore[arg-type]
        max_tokens=4,
        cache=False,
        num_retries=0,
        timeout=20,
    )


def test_an_untargeted_job_goes_encrypted_to_the_best_provider(swarm: LocalSwarm) -> None:
    lm = _lm(swarm, min_reputation=0.8)
    for _ in range(3):
        lm("Say hi")
        data = lm.history[-1]["response"].provider_data["pylon"]
        assert data["provider"] == swarm.nodes[0].pubkey
        assert data["encryption"] in ("nip04", "nip44")
    assert swarm.balance("provider-1") == 0  # the distrusted provider never got a job


def test_named_providers_below_the_minimum_are_left_out(swarm: LocalSwarm) -> None:
    lm = _lm(swarm, providers=(swarm.nodes[1].pubkey, swarm.nodes[0].pubkey), min_reputation=0.8)
    lm("Say hi")
    assert lm.history[-1]["response"].provider_data["pylon"]["provider"] == swarm.nodes[0].pubkey


def test_no_provider_good_enough_is_refused_before_publishing(swarm: LocalSwarm) -> None:
    lm = _lm(swarm, min_reputation=0.99)
    with pytest.raises(Exception) as caught:
        lm("Say hi")
    refusal = pylon_cause(caught.value, pylon.NoEligibleProvider)
    assert swarm.nodes[0].pubkey[:16] in str(refusal)  # it names the best there is
    assert lm.total_spent_msats() == 0 and swarm.balance("customer") == 100_000


def test_a_loaded_program_holds_its_lm_to_the_manifests_minimum(swarm: LocalSwarm, tmp_path: Path) -> None:
    program = dspy.Predict("question -> answer")
    compat = pylon.Compatibility(min_provider_reputation=0.8)
    directory = pylon.save_compiled(program, pylon.build_manifest(program, compatibility=compat), tmp_path / "p")
    lm = _lm(swarm)  # untargeted, no minimum of its own
    loaded, _ = pylon.load_compiled(directory, dspy.Predict("question -> answer"), lm=lm)
    held = loaded.lm
    assert held is not lm and held.config.venue.min_reputation == 0.8 and lm.config.venue.min_reputation is None
    with dspy.context(adapter=WholeAnswerAdapter()):
        loaded(question="Say hi")
    assert held.history[-1]["response"].provider_data["pylon"]["provider"] == swarm.nodes[0].pubkey
    assert held.with_min_reputation(0.5) is held  # a lower minimum never loosens it


def test_min_reputation_is_checked_and_kept() -> None:
    for bad in (-0.1, 1.5, "high", True):
        with pytest.raises(pylon.ConfigError):
            Swarm(min_reputation=bad)  # type: ignore[arg-type]
    config = pylon.PylonConfig(venue=Swarm(min_reputation=0.7))
    from dspy_pylon.config import config_from_dict, config_to_dict

    assert config_from_dict(config_to_dict(config)) == config
    assert Swarm(min_reputation=0.7).encrypts and not Swarm().encrypts
    assert pylon.LM("pylon:local").with_min_reputation(0.9).config.venue == pylon.Local()
