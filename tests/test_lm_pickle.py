"""Pickling a PylonLM: ``program.save(dir, save_program=True)`` works, and no secret is in the pickle."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import cloudpickle
import dspy
import pytest

import dspy_pylon as pylon
from dspy_pylon.identity import generate_mnemonic, init_identity, keys_from_mnemonic, pylon_home
from tests.helpers import pylon_cause

MNEMONIC = "leader monkey parrot ring guide accident before fence cannon height naive bean"
SECRET_HEX = "7f7ff03d123792d6ac594bfa67bf6d0c0ab55b6b1fdb6249303fe861f1ccba9a"
NWC_SECRET = "b" * 64
NWC_URI = f"nostr+walletconnect://{'a' * 64}?relay=ws%3A%2F%2F127.0.0.1%3A1&secret={NWC_SECRET}"


def _secrets_absent(blob: bytes) -> None:
    for secret in (MNEMONIC, "leader monkey", SECRET_HEX, NWC_SECRET, NWC_URI):
        assert secret.encode() not in blob, f"{secret[:16]}... leaked into the pickle"


def test_local_lm_pickles_and_answers_after_unpickling(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False)
    before = lm("Hi")
    clone = pickle.loads(pickle.dumps(lm))
    assert isinstance(clone, pylon.PylonLM)
    assert clone.runtime is not lm.runtime  # its own connections, built lazily
    assert clone.kwargs["max_tokens"] == 4
    assert clone("Hi") == before
    assert clone.route().backend == "llamacpp"


def test_swarm_lm_pickle_holds_no_secret_and_resolves_identity_from_home(tmp_path: Path) -> None:
    lm = pylon.LM(
        "pylon:swarm",
        relays=["ws://127.0.0.1:1"],
        mnemonic=MNEMONIC,
        nwc_uri=NWC_URI,
        bid_msats=1500,
        budget_sats=10,
        approve_payment=lambda request: True,
        timeout=1,
    )
    for dump in (pickle.dumps, cloudpickle.dumps):
        blob = dump(lm)
        _secrets_absent(blob)
    blob = pickle.dumps(lm)
    # The mnemonic was not carried. Unpickling does no I/O; the first call looks for the
    # identity file, which this home lacks, and says how to make one.
    orphan = pickle.loads(blob)
    with pytest.raises(Exception, match="pylon init") as caught:
        orphan("hello")
    pylon_cause(caught.value, pylon.IdentityMissing)
    assert not (pylon_home() / "ledger.sqlite").exists()  # nothing was created on the way
    other = generate_mnemonic()
    init_identity(words=other)
    clone = pickle.loads(blob)
    assert clone.config == lm.config
    assert clone.remaining_budget_msats() == 10_000
    assert clone.runtime.swarm().customer.pubkey == keys_from_mnemonic(other).public_key().to_hex()


def test_program_save_program_true_round_trips(llamacpp_url: str, tmp_path: Path) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, temperature=0.0, cache=False, mnemonic=MNEMONIC)
    program = dspy.Predict("question -> answer")
    program.set_lm(lm)
    program.save(str(tmp_path / "saved"), save_program=True)
    for path in (tmp_path / "saved").rglob("*"):
        if path.is_file():
            _secrets_absent(path.read_bytes())
    loaded = dspy.load(str(tmp_path / "saved"), allow_pickle=True)
    assert isinstance(loaded.get_lm(), pylon.PylonLM)
    assert loaded.get_lm()("Hi")


def test_deep_copies_still_share_the_runtime() -> None:
    lm = pylon.LM("pylon:local:llamacpp")
    copied = copy.deepcopy(lm)
    assert copied is not lm and copied.runtime is lm.runtime
    assert copied.history is not lm.history
