"""Interop with PyPI ``nostr-dvm`` 1.1.8 (the Python NIP-90 DVM framework), both ways, on nostr-relay.

Its DVMs serve ``pylon:swarm`` calls (free, priced through its LNbits invoices, broadcast and
targeted), its client side runs jobs on our provider node (free, encrypted, priced without a
bid), and each side finds the other through NIP-89. nostr-dvm runs from ``.venv-dvm``
(``scripts/install_dvm.sh``) in subprocesses: :mod:`tests.interop.dvm_side`.

Where nostr-dvm is at fault the tests work around it, each where it does and saying why;
pylon's protocol is not bent to it: its amount parser crashes on regtest invoices (patched in
``nostr_dvm_peer.py``), and it honours only the last ``p`` tag of a job (its DVM is named last).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import nostr_sdk as n
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.swarm.chat_job import readable
from dspy_pylon.testing import LocalSwarm
from tests.helpers import pylon_cause
from tests.interop.dvm_side import DvmSpec, LNbitsStandIn, NostrDvmPeer, run_client
from tests.relays import NostrRelayProcess
from tests.swarm.conftest import _NOSTR_RELAY_SECOND, eventually

#: The priced DVM's FIX_COST (nostr-dvm prices in whole sats).
PRICE_SATS = 3
PRICE_MSATS = PRICE_SATS * 1_000
#: The account behind the priced DVM's LNbits wallet, and the one nostr-dvm's client pays from.
DVM_ACCOUNT = "nostr-dvm"
DVM_CLIENT_ACCOUNT = "nostr-dvm-client"
#: Our node sends ``processing`` only for a job still running after a delay (0.25 s by default):
#: the tiny model often answers sooner, and then rightly gets none. These tests read that feedback.
PROCESSING_AT_ONCE = 0


@pytest.fixture
def relay_url(nostr_relay: NostrRelayProcess) -> Iterator[str]:
    """nostr-relay only (the production-like relay; the nostr-dvm peer is one process for the
    module on it), each test in a second of its own as on the shared relay elsewhere."""
    _NOSTR_RELAY_SECOND.wait()
    yield nostr_relay.url
    _NOSTR_RELAY_SECOND.mark_end()


@pytest.fixture(scope="module")
def lnbits() -> Iterator[LNbitsStandIn]:
    stand_in = LNbitsStandIn().start()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope="module")
def dvm_keys(lnbits: LNbitsStandIn) -> dict[str, str]:
    """The LNbits keys: the priced DVM's invoice key and the client's admin key."""
    return {
        "invoice": lnbits.key(DVM_ACCOUNT, admin=False),
        "admin": lnbits.key(DVM_CLIENT_ACCOUNT, admin=True),
    }


@pytest.fixture(scope="module")
def dvms(
    nostr_relay: NostrRelayProcess,
    relay_loop: NostrLoop,
    lnbits: LNbitsStandIn,
    dvm_keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NostrDvmPeer]:
    """Three nostr-dvm DVMs for the module: free with nostr-dvm's own announcement, free with
    an announcement that also names NIP-44 in pylon's ``encryption`` field, and priced."""
    specs = [
        DvmSpec("free"),
        DvmSpec("free-nip44", announcement={"encryption": ["nip44", "nip04"]}),
        DvmSpec("priced", fix_cost_sats=PRICE_SATS, lnbits_url=lnbits.url, lnbits_invoice_key=dvm_keys["invoice"]),
    ]
    peer = NostrDvmPeer(relay_loop, nostr_relay.url, specs, tmp_path_factory.mktemp("nostr-dvm")).start()
    yield peer
    code = peer.stop()
    assert code == 0, f"the nostr-dvm process did not stop cleanly ({code}):\n{peer.log_tail()}"


@pytest.fixture
def wallet(lnbits: LNbitsStandIn, dev_wallet: LocalSwarm) -> Iterator[LocalSwarm]:
    """The test's development wallet behind the LNbits stand-in, with its two LNbits accounts."""
    dev_wallet.account(DVM_ACCOUNT)
    dev_wallet.account(DVM_CLIENT_ACCOUNT)
    lnbits.use(dev_wallet.wallet_store)
    yield dev_wallet
    lnbits.use(None)


def echo_of(prompt: str) -> str:
    """What the nostr-dvm DVM answers to ``lm(prompt)``: the readable rendering of the chat
    (its last text input; the JSON transcript rides in a param it ignores)."""
    return "ECHO:" + readable({"messages": [{"role": "user", "content": prompt}]})


def result_event(loop: NostrLoop, relay: str, job_id: str) -> Any:
    """The kind-6050 result of ``job_id`` as stored on ``relay``."""

    async def fetch() -> Any:
        client = n.Client()
        await client.add_relay(n.RelayUrl.parse(relay))
        await client.connect(timedelta(seconds=3))
        try:
            wanted = n.Filter().kind(n.Kind(6050)).event(n.EventId.parse(job_id))
            events = list(await client.fetch_events(n.ReqTarget.auto([wanted]), timedelta(seconds=3)))
        finally:
            await client.shutdown()
        assert len(events) == 1, f"{len(events)} results stored for job {job_id[:12]}…"
        return events[0]

    return loop.run(fetch(), 15)


# ─── nostr-dvm's DVMs serve pylon:swarm ───


def test_a_broadcast_call_is_answered_by_a_nostr_dvm(dvms: NostrDvmPeer, swarm_lm: Any) -> None:
    lm = swarm_lm(timeout=15)
    prompt = "Say hi to every DVM"
    assert lm(prompt) == [echo_of(prompt)]
    route = lm.history[-1]["response"].provider_data["pylon"]
    # Both free DVMs answer a public job (the priced one stays silent: the bid is below its price).
    assert route["provider"] in (dvms["free"].pubkey, dvms["free-nip44"].pubkey)
    assert route["encryption"] is None


@pytest.mark.parametrize(
    ("dvm", "cipher"),
    [("free", Cipher.NIP04), ("free-nip44", Cipher.NIP44)],
    ids=["stock-announcement-nip04", "announced-nip44"],
)
def test_a_targeted_call_is_encrypted_and_answered(
    dvm: str, cipher: Cipher, dvms: NostrDvmPeer, swarm_lm: Any, relay_loop: NostrLoop, relay_url: str
) -> None:
    """A call to one nostr-dvm DVM is encrypted: in NIP-04 (NIP-90's scheme) when its
    announcement only says ``supportsEncryption``, in NIP-44 when it names it. nostr-dvm
    answers in NIP-44 either way, and pylon reads that answer."""
    lm = swarm_lm(providers=(dvms[dvm].pubkey,), timeout=15)
    prompt = f"A private question for {dvm}"
    assert lm(prompt) == [echo_of(prompt)]
    route = lm.history[-1]["response"].provider_data["pylon"]
    assert route["provider"] == dvms[dvm].pubkey
    assert route["encryption"] == str(cipher)
    result = result_event(relay_loop, relay_url, route["job_id"])
    tags = [list(t.to_vec()) for t in result.tags()]
    assert ["encrypted"] in tags and "?iv=" not in result.content(), "not a NIP-44 answer"
    assert "private question" not in json.dumps([tags, result.content()])


def test_a_call_naming_several_providers_reaches_a_nostr_dvm_named_last(dvms: NostrDvmPeer, swarm_lm: Any) -> None:
    """A job for several providers is public, with one ``p`` tag each."""
    absent = n.Keys.generate().public_key().to_hex()
    # nostr-dvm honours only the last p tag (it ignores a job whose last p is another key):
    # its DVM goes last here. pylon writes the tags in the order the providers are named.
    lm = swarm_lm(providers=(absent, dvms["free"].pubkey), timeout=15)
    prompt = "A question for two providers"
    assert lm(prompt) == [echo_of(prompt)]
    route = lm.history[-1]["response"].provider_data["pylon"]
    assert route["provider"] == dvms["free"].pubkey and route["encryption"] is None


def test_a_priced_nostr_dvm_is_paid_exactly_its_price(
    dvms: NostrDvmPeer, lnbits: LNbitsStandIn, wallet: LocalSwarm, swarm_lm: Any
) -> None:
    """nostr-dvm bills through LNbits (an invoice in the DVM's wallet); pylon pays it over NWC
    from the customer's account; the DVM sees it paid in LNbits and answers."""
    priced = dvms["priced"]
    lm = swarm_lm(
        providers=(priced.pubkey,),
        nwc_uri=wallet.account("customer", 100_000),
        auto_pay=True,
        bid_msats=5_000,
        timeout=20,
    )
    prompt = "What does nostr-dvm charge?"
    assert lm(prompt) == [echo_of(prompt)]
    assert wallet.balance("customer") == 100_000 - PRICE_MSATS
    assert wallet.balance(DVM_ACCOUNT) == PRICE_MSATS
    assert lm.total_spent_msats() == PRICE_MSATS
    assert lm.history[-1]["cost"] == PRICE_MSATS
    # The invoice was nostr-dvm's own (made through the LNbits API, in sats), paid once.
    [made] = lnbits.calls_of(DVM_ACCOUNT, "POST")
    assert made["out"] is False and made["amount"] == PRICE_SATS
    [invoice] = [i for i in wallet.wallet_store.transactions() if i.payee == DVM_ACCOUNT]
    assert invoice.state == "settled" and invoice.payer == "customer" and invoice.amount_msats == PRICE_MSATS


def test_a_priced_nostr_dvm_needs_approval_without_auto_pay(
    dvms: NostrDvmPeer, wallet: LocalSwarm, swarm_lm: Any
) -> None:
    priced = dvms["priced"]
    lm = swarm_lm(providers=(priced.pubkey,), nwc_uri=wallet.account("customer", 10_000), bid_msats=5_000, timeout=20)
    with pytest.raises(dspy_errors.LMBillingError) as caught:
        lm("Is this free?")
    error = pylon_cause(caught.value, pylon.PaymentRequired)
    assert (error.amount_msats, error.provider) == (PRICE_MSATS, priced.pubkey)
    assert error.bolt11 and error.bolt11.startswith("lnbcrt")
    assert wallet.balance("customer") == 10_000 and wallet.balance(DVM_ACCOUNT) == 0

    response = pylon.pay(error.job_id, lm=lm)
    assert response.text == echo_of("Is this free?")
    assert wallet.balance("customer") == 10_000 - PRICE_MSATS
    assert wallet.balance(DVM_ACCOUNT) == PRICE_MSATS
    assert lm.total_spent_msats() == PRICE_MSATS


# ─── nostr-dvm's client runs jobs on our provider node ───


@pytest.mark.parametrize("encrypt", [False, "announced"], ids=["plain", "encrypted"])
def test_nostr_dvms_client_gets_our_free_answer(encrypt: Any, start_provider: Any, relay_url: str) -> None:
    """Plain, and encrypted as nostr-dvm's bot encrypts (NIP-44, because our announcement says
    ``supportsEncryption``): the answer and the processing feedback reach its client."""
    provider = start_provider(processing_feedback_after_s=PROCESSING_AT_ONCE)
    out = run_client("job", {"relay": relay_url, "provider": provider.pubkey, "prompt": "Say hi", "encrypt": encrypt})
    assert out.get("error") is None, out
    assert out["result"], "no answer"
    assert out["encrypted"] is bool(encrypt) and out["result_encrypted"] is bool(encrypt)
    processing = [f for f in out["feedback"] if f["status"] == "processing"]
    assert processing and all(f["content"] for f in processing), out["feedback"]
    # Encrypted feedback: nostr-dvm's client finds status and content only after decrypting.
    assert all(f["hidden"] is bool(encrypt) for f in out["feedback"])
    assert out["billed_msats"] is None
    if encrypt:
        assert out["announced"]["supportsEncryption"] is True
    eventually(lambda: provider.node.jobs.status(out["job_id"]) == "done")


@pytest.mark.parametrize("encrypt", [False, "announced"], ids=["plain", "encrypted"])
def test_nostr_dvms_client_pays_our_priced_provider(
    encrypt: Any,
    start_provider: Any,
    wallet: LocalSwarm,
    dvm_keys: dict[str, str],
    lnbits: LNbitsStandIn,
    relay_url: str,
) -> None:
    """Its client sends no bid; our node bills the job anyway (NIP-90's bid is optional) with
    the amount in msats and a bolt11; the client pays it through LNbits and gets the answer."""
    price = 2_000
    provider = start_provider(
        price_msats=price, wallet=wallet.wallet("provider"), processing_feedback_after_s=PROCESSING_AT_ONCE
    )
    wallet.account(DVM_CLIENT_ACCOUNT, 10_000)
    conf = {
        "relay": relay_url,
        "provider": provider.pubkey,
        "prompt": "What does pylon charge?",
        "encrypt": encrypt,
        "lnbits_url": lnbits.url,
        "lnbits_admin_key": dvm_keys["admin"],
    }
    out = run_client("job", conf)
    assert out.get("error") is None, out
    assert out["result"], "no answer"
    assert out["encrypted"] is bool(encrypt) and out["result_encrypted"] is bool(encrypt)
    # Encrypted, the amount and its bolt11 are inside the feedback's encrypted content.
    assert out["billed_msats"] == price and out["bolt11"].startswith("lnbcrt")
    statuses = [f["status"] for f in out["feedback"]]
    assert statuses[0] == "payment-required" and "processing" in statuses
    [paid] = lnbits.calls_of(DVM_CLIENT_ACCOUNT, "POST")
    assert paid == {"out": True, "bolt11": out["bolt11"]}
    assert wallet.balance(DVM_CLIENT_ACCOUNT) == 10_000 - price
    assert wallet.balance("provider") == price
    earned = provider.node.ledger
    eventually(lambda: (entry := earned.entry(out["job_id"], "earned")) is not None and entry.state == "done")
    assert earned.total_paid_msats("earned") == price


# ─── discovery both ways ───


def test_pylon_discovers_the_nostr_dvm_announcements(dvms: NostrDvmPeer, relay_url: str) -> None:
    found = {record.pubkey: record for record in pylon.discover([relay_url])}
    for name in ("free", "free-nip44", "priced"):
        record = found[dvms[name].pubkey]
        assert record.name == name and 5050 in record.kinds
        # nostr-dvm announces no price: unknown, never taken for free.
        assert record.price_msats is None
    assert found[dvms["free"].pubkey].encryption == ()
    assert found[dvms["free-nip44"].pubkey].encryption == (Cipher.NIP44, Cipher.NIP04)


def test_nostr_dvm_discovers_our_provider(start_provider: Any, relay_url: str) -> None:
    """nostr-dvm's own NIP-89 fetch finds our node and reads what its client acts on."""
    provider = start_provider()
    out = run_client("discover", {"relay": relay_url, "kind": 5050})
    [ours] = [a for a in out["announcements"] if a["pubkey"] == provider.pubkey]
    assert ["k", "5050"] in ours["tags"]
    content = ours["content"]
    assert content["supportsEncryption"] is True
    assert {"model", "max_tokens"} <= set(content["nip90Params"])
    assert content["name"]
