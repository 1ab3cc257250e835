"""pylon's NIP-47 client (:class:`~dspy_pylon.pay.nwc.NwcWallet`) against the development wallet
service on real relays: every method, the wallet's error codes, many requests at once on one
subscription, lost answers, and answers that are not the wallet's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest

from dspy_pylon.errors import WalletError
from dspy_pylon.nostr.ciphers import Cipher, decrypt, encrypt
from dspy_pylon.nostr.events import sign
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay import nip47
from dspy_pylon.pay.dev_wallet import issue_invoice
from dspy_pylon.pay.nwc import UNREADABLE, NwcWallet
from tests.pay.test_dev_wallet import Wallet, _make_wallet, loop  # noqa: F401 - the module's loop fixture


@pytest.fixture
def dev(loop: NostrLoop, tmp_path: Path, any_relay: str) -> Iterator[Wallet]:  # noqa: F811
    """The development wallet on each relay in turn: ``customer`` 10 000 msats, ``provider`` 0."""
    yield from _make_wallet(loop, tmp_path, any_relay)


def _client(dev: Wallet, name: str, timeout: float = 5.0) -> NwcWallet:
    return NwcWallet(dev.store.nwc_uri(name, [dev.url]), timeout=timeout)


def test_make_pay_and_look_up_an_invoice(dev: Wallet) -> None:
    provider, customer = _client(dev, "provider"), _client(dev, "customer")
    try:
        made = dev.run(provider.make_invoice(1_234, "a job", 600))
        assert made.amount_msats == 1_234 and made.bolt11.startswith("lnbcrt")
        assert dev.run(provider.lookup_invoice(made.payment_hash)).state == "pending"
        paid = dev.run(customer.pay_invoice(made.bolt11))
        status = dev.run(provider.lookup_invoice(made.payment_hash))
        assert status.settled and status.preimage == paid.preimage and status.amount_msats == 1_234
        assert dev.run(customer.get_balance()) == 10_000 - 1_234
        assert dev.run(provider.get_balance()) == 1_234
    finally:
        dev.run(provider.close())
        dev.run(customer.close())


def test_the_wallets_error_codes_come_through(dev: Wallet) -> None:
    provider, customer = _client(dev, "provider"), _client(dev, "customer")
    try:
        too_much = dev.run(provider.make_invoice(20_000, "more than the customer has", 600))
        with pytest.raises(WalletError) as refused:
            dev.run(customer.pay_invoice(too_much.bolt11))
        assert refused.value.code == nip47.INSUFFICIENT_BALANCE
        with pytest.raises(WalletError) as unknown:
            dev.run(customer.lookup_invoice("00" * 32))
        assert unknown.value.code == nip47.NOT_FOUND
        assert dev.store.balance("customer") == 10_000  # nothing moved
    finally:
        dev.run(provider.close())
        dev.run(customer.close())


def test_sixty_four_requests_at_once_are_all_answered(dev: Wallet) -> None:
    """One subscription for every answer: no cap of a relay's subscriptions per connection."""
    provider = _client(dev, "provider")

    async def many() -> list[Any]:
        return await asyncio.gather(*(provider.make_invoice(1_000 + i, f"job {i}", 600) for i in range(64)))

    try:
        made = dev.run(many(), 60)
        assert sorted(invoice.amount_msats for invoice in made) == [1_000 + i for i in range(64)]
        assert len({invoice.payment_hash for invoice in made}) == 64
    finally:
        dev.run(provider.close())


def test_no_answer_is_a_timeout(loop: NostrLoop, any_relay: str) -> None:  # noqa: F811
    """A wallet that never answers: TIMEOUT (an unknown outcome), after the client's timeout."""
    client, wallet = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    uri = (
        f"nostr+walletconnect://{wallet.public_key().to_hex()}?relay={any_relay}&secret={client.secret_key().to_hex()}"
    )
    silent = NwcWallet(uri, timeout=1)
    try:
        with pytest.raises(WalletError) as lost:
            loop.run(silent.get_balance(), 10)
        assert lost.value.code == "TIMEOUT" and "no answer" in str(lost.value)
    finally:
        loop.run(silent.close(), 10)


def test_answers_not_from_the_wallet_or_unreadable_are_not_taken(loop: NostrLoop, any_relay: str) -> None:  # noqa: F811
    """An impostor answers first with a forged result; the wallet's own answer (here: a
    malformed one) is what counts, and it is an error, not a result."""
    client, wallet, impostor = (nostr_sdk.Keys.generate() for _ in range(3))
    client_hex = client.public_key().to_hex()
    uri = (
        f"nostr+walletconnect://{wallet.public_key().to_hex()}?relay={any_relay}&secret={client.secret_key().to_hex()}"
    )
    nwc = NwcWallet(uri, timeout=5)
    relay = RelayClient([any_relay])

    def answer_from(keys: Any, request: Any, text: str) -> Any:
        content = encrypt(keys, client_hex, text, Cipher.NIP04)
        return sign(nip47.RESPONSE_KIND, content, [["p", client_hex], ["e", request.id]], keys)

    async def run() -> Any:
        await relay.start()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        wanted = nostr_sdk.Filter().kind(nostr_sdk.Kind(nip47.REQUEST_KIND)).pubkey(wallet.public_key())
        await relay.subscribe([wanted], lambda event, _: requests.put_nowait(event))
        call = asyncio.ensure_future(nwc.get_balance())
        request = await asyncio.wait_for(requests.get(), 5)
        forged = nip47.response_json("get_balance", {"balance": 10**12})
        await relay.publish(answer_from(impostor, request, forged))
        await asyncio.sleep(0.2)
        assert not call.done()  # the impostor's answer was not taken
        await relay.publish(answer_from(wallet, request, json.dumps({"result_type": "get_balance"})))
        with pytest.raises(WalletError) as unreadable:
            await call
        return unreadable.value

    try:
        error = loop.run(run(), 20)
        assert error.code == UNREADABLE and "unreadable answer" in str(error)
    finally:
        loop.run(nwc.close(), 10)
        loop.run(relay.close(), 10)


def test_an_unreadable_payment_answer_is_an_unknown_outcome_not_a_failure(
    loop: NostrLoop,  # noqa: F811
    any_relay: str,
) -> None:
    """Only the wallet's own error means "not paid": a garbled answer to pay_invoice is looked
    up, and when the lookup cannot show it paid the payer gets TIMEOUT (kept as maybe spent)."""
    client, wallet = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    client_hex = client.public_key().to_hex()
    uri = (
        f"nostr+walletconnect://{wallet.public_key().to_hex()}?relay={any_relay}&secret={client.secret_key().to_hex()}"
    )
    nwc = NwcWallet(uri, timeout=5)
    relay = RelayClient([any_relay])
    invoice = issue_invoice("11" * 32, 1_000, "a job", 600)[0]

    def answer(request: Any, text: str) -> Any:
        content = encrypt(wallet, client_hex, text, Cipher.NIP04)
        return sign(nip47.RESPONSE_KIND, content, [["p", client_hex], ["e", request.id]], wallet)

    async def run() -> tuple[WalletError, list[str]]:
        await relay.start()
        requests: asyncio.Queue[Any] = asyncio.Queue()
        wanted = nostr_sdk.Filter().kind(nostr_sdk.Kind(nip47.REQUEST_KIND)).pubkey(wallet.public_key())
        await relay.subscribe([wanted], lambda event, _: requests.put_nowait(event))
        call = asyncio.ensure_future(nwc.pay_invoice(invoice))
        methods = []
        pay = await asyncio.wait_for(requests.get(), 5)
        methods.append(nip47.parse_request(decrypt(wallet, client_hex, pay.content)[0]).method)
        await relay.publish(answer(pay, nip47.response_json("pay_invoice", {"fees_paid": 0})))  # no preimage
        lookup = await asyncio.wait_for(requests.get(), 5)
        methods.append(nip47.parse_request(decrypt(wallet, client_hex, lookup.content)[0]).method)
        await relay.publish(answer(lookup, nip47.response_json("lookup_invoice", error=(nip47.NOT_FOUND, "no"))))
        with pytest.raises(WalletError) as unknown:
            await call
        return unknown.value, methods

    try:
        error, methods = loop.run(run(), 20)
        assert methods == ["pay_invoice", "lookup_invoice"]
        assert error.code == "TIMEOUT" and "no preimage" in str(error)
    finally:
        loop.run(nwc.close(), 10)
        loop.run(relay.close(), 10)


def test_closing_ends_waiting_calls_and_is_final(loop: NostrLoop, any_relay: str) -> None:  # noqa: F811
    client, wallet = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    uri = (
        f"nostr+walletconnect://{wallet.public_key().to_hex()}?relay={any_relay}&secret={client.secret_key().to_hex()}"
    )
    nwc = NwcWallet(uri, timeout=30)

    async def run() -> WalletError:
        call = asyncio.ensure_future(nwc.get_balance())  # nobody answers
        await asyncio.sleep(0.5)
        await nwc.close()
        with pytest.raises(WalletError) as ended:
            await asyncio.wait_for(call, 5)
        with pytest.raises(WalletError, match="closed"):
            await nwc.get_balance()  # not reopened
        return ended.value

    error = loop.run(run(), 20)
    assert error.code == "TIMEOUT" and "closed" in str(error)
