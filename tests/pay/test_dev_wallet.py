"""The development NWC wallet: its SQLite store, and the service driven by nostr-sdk's real NIP-47 client.

Everything is real: the relays (nostr-sdk's embedded relay, and PyPI ``nostr-relay`` for the
end-to-end tests), NIP-04/NIP-44 encryption, signatures, BOLT11 invoices, and the customer side is
nostr-sdk's own ``NostrWalletConnect`` — exactly what talks to a real wallet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import stat
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import bolt11
import coincurve
import nostr_sdk
import pytest
from bolt11.models.tags import Tag, TagChar, Tags

from dspy_pylon.errors import ConfigError, RelayUnavailable, WalletError
from dspy_pylon.nostr.events import RawEvent, from_sdk, sign
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay import nip47
from dspy_pylon.pay.bolt11_reader import read_bolt11
from dspy_pylon.pay.dev_wallet import DEV_WALLET_LABEL, DevWalletRefusal, DevWalletService, DevWalletStore
from tests.relays import EmbeddedRelay

T = TypeVar("T")


@pytest.fixture(scope="module")
def loop() -> Iterator[NostrLoop]:
    """The Nostr loop shared by the wallet services and clients of this module."""
    nostr_loop = NostrLoop("test-dev-wallet")
    yield nostr_loop
    nostr_loop.stop()


class Wallet:
    """A store and its service on one relay, with helpers to build clients and inboxes."""

    def __init__(self, loop: NostrLoop, path: Path, url: str) -> None:
        self.loop = loop
        self.path = path
        self.url = url
        self.store = DevWalletStore(path)
        self.service = self.run(DevWalletService(self.store, [url]).start())
        self.inboxes: list[Inbox] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return self.loop.run(coro, timeout)

    def client(self, name: str, timeout: float = 5.0) -> Any:
        return self.client_for_uri(self.store.nwc_uri(name, [self.url]), timeout)

    def client_for_uri(self, uri: str, timeout: float = 5.0) -> Any:
        async def build() -> Any:
            parsed = nostr_sdk.NostrWalletConnectUri.parse(uri)
            return nostr_sdk.NostrWalletConnectBuilder(parsed).timeout(timedelta(seconds=timeout)).build()

        return self.run(build())

    def inbox(self, pubkey: str) -> Inbox:
        box = Inbox(self.loop, self.url, pubkey)
        self.inboxes.append(box)
        return box

    def error_of(self, coro: Coroutine[Any, Any, Any]) -> str:
        """The text of the nostr-sdk error the call raises."""
        with pytest.raises(nostr_sdk.NostrSdkError) as caught:
            self.run(coro)
        return nip47.sdk_error_text(caught.value)

    def restart_service(self) -> None:
        self.run(self.service.stop())
        self.service = self.run(DevWalletService(self.store, [self.url]).start())

    def close(self) -> None:
        for box in self.inboxes:
            box.close()
        self.run(self.service.stop())
        self.store.close()


class Inbox:
    """Every response and notification a relay sends to ``pubkey``, through our own RelayClient."""

    def __init__(self, loop: NostrLoop, url: str, pubkey: str) -> None:
        self.loop = loop
        self.events: list[RawEvent] = []
        self.relay = RelayClient([url])
        kinds = (nip47.RESPONSE_KIND, nip47.NOTIFICATION_KIND_NIP04, nip47.NOTIFICATION_KIND_NIP44)

        async def start() -> None:
            await self.relay.start()
            wanted = (
                nostr_sdk.Filter().kinds([nostr_sdk.Kind(k) for k in kinds]).pubkey(nostr_sdk.PublicKey.parse(pubkey))
            )
            await self.relay.subscribe([wanted], lambda event, _relay: self.events.append(event))

        loop.run(start(), 10)

    def publish(self, event: Any, *, again: bool = False) -> None:
        """Send ``event``; with ``again`` a relay may refuse it as a duplicate it already holds."""
        try:
            self.loop.run(self.relay.publish(event), 10)
        except RelayUnavailable as refused:
            if not (again and "duplicate:" in str(refused)):
                raise

    def wait(self, predicate: Callable[[RawEvent], bool], count: int = 1, timeout: float = 5.0) -> list[RawEvent]:
        deadline = time.monotonic() + timeout
        while True:
            found = [event for event in list(self.events) if predicate(event)]
            if len(found) >= count:
                return found
            assert time.monotonic() < deadline, f"only {len(found)} of {count} events arrived"
            time.sleep(0.005)

    def close(self) -> None:
        self.loop.run(self.relay.close(), 10)


def _make_wallet(loop: NostrLoop, tmp_path: Path, url: str) -> Iterator[Wallet]:
    wallet = Wallet(loop, tmp_path / "dev-wallet.sqlite3", url)
    wallet.store.create_account("provider")
    wallet.store.create_account("customer", 10_000)
    yield wallet
    wallet.close()


@pytest.fixture
def wallet(loop: NostrLoop, tmp_path: Path, embedded_relay: EmbeddedRelay) -> Iterator[Wallet]:
    """A wallet on the embedded relay: ``provider`` (0 msats) and ``customer`` (10 000 msats)."""
    yield from _make_wallet(loop, tmp_path, embedded_relay.url)


@pytest.fixture
def any_wallet(loop: NostrLoop, tmp_path: Path, any_relay: str) -> Iterator[Wallet]:
    """The same wallet on each relay in turn (embedded, then nostr-relay)."""
    yield from _make_wallet(loop, tmp_path, any_relay)


def _keys(store: DevWalletStore, name: str) -> Any:
    account = store.account(name)
    assert account is not None
    return nostr_sdk.Keys.parse(account.client_secret)


def _pubkey(store: DevWalletStore, name: str) -> str:
    account = store.account(name)
    assert account is not None
    return account.client_pubkey


def _sha256(hex_text: str) -> str:
    return hashlib.sha256(bytes.fromhex(hex_text)).hexdigest()


def _make(wallet: Wallet, client: Any, amount: int, expiry: int = 600, description: str = "pylon job abc") -> Any:
    request = nostr_sdk.MakeInvoiceRequest(amount=amount, description=description, description_hash=None, expiry=expiry)
    return wallet.run(client.make_invoice(request))


def _pay(client: Any, invoice: str) -> Any:
    return client.pay_invoice(nostr_sdk.PayInvoiceRequest(id=None, invoice=invoice, amount=None))


def _lookup(client: Any, payment_hash: str | None = None, invoice: str | None = None) -> Any:
    return client.lookup_invoice(nostr_sdk.LookupInvoiceRequest(payment_hash=payment_hash, invoice=invoice))


def _foreign_invoice(amount_msats: int, payment_hash: str | None = None) -> str:
    """A valid regtest invoice signed by some other node."""
    tags = Tags(
        [
            Tag(TagChar.payment_hash, payment_hash or os.urandom(32).hex()),
            Tag(TagChar.description, "someone else's"),
            Tag(TagChar.expire_time, 600),
            Tag(TagChar.payment_secret, os.urandom(32).hex()),
        ]
    )
    invoice = bolt11.Bolt11(
        currency="bcrt", date=int(time.time()), tags=tags, amount_msat=bolt11.MilliSatoshi(amount_msats)
    )
    return bolt11.encode(invoice, coincurve.PrivateKey().secret.hex())


def _request_event(
    keys: Any, service_pubkey: str, plaintext: str, *, scheme: str = nip47.NIP04, tags: list[list[str]] | None = None
) -> Any:
    """A NIP-47 request event built by hand (what any client would send)."""
    service = nostr_sdk.PublicKey.parse(service_pubkey)
    if scheme == nip47.NIP44_V2:
        content = nostr_sdk.nip44_encrypt(keys.secret_key(), service, plaintext, nostr_sdk.Nip44Version.V2)
    else:
        content = nostr_sdk.nip04_encrypt(keys.secret_key(), service, plaintext)
    return sign(nip47.REQUEST_KIND, content, [["p", service_pubkey], *(tags or [])], keys)


def _decrypt(keys: Any, event: RawEvent) -> str:
    author = nostr_sdk.PublicKey.parse(event.pubkey)
    if event.kind == nip47.NOTIFICATION_KIND_NIP44 or event.value("encryption") == nip47.NIP44_V2:
        return str(nostr_sdk.nip44_decrypt(keys.secret_key(), author, event.content))
    return str(nostr_sdk.nip04_decrypt(keys.secret_key(), author, event.content))


# End to end, on both relays.


def test_invoice_paid_end_to_end(any_wallet: Wallet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    wallet, store = any_wallet, any_wallet.store
    provider, customer = wallet.client("provider"), wallet.client("customer")

    made = _make(wallet, provider, 1234)
    decoded = bolt11.decode(made.invoice)
    assert made.invoice.startswith("lnbcrt")  # regtest: no mainnet wallet can pay it
    assert decoded.currency == "bcrt"
    assert decoded.amount_msat == made.amount == 1234
    assert decoded.description == made.description == "pylon job abc"
    assert decoded.expiry == 600
    assert made.expires_at.as_secs() - made.created_at.as_secs() == 600
    assert decoded.payment_hash == made.payment_hash
    assert decoded.payee == store.node_pubkey
    assert made.preimage is None  # what the payer buys is not given away up front

    paid = wallet.run(_pay(customer, made.invoice))
    assert _sha256(paid.preimage) == made.payment_hash
    assert paid.fees_paid == 0
    assert store.balance("customer") == 10_000 - 1234
    assert store.balance("provider") == 1234
    assert wallet.run(customer.get_balance()).balance == 10_000 - 1234
    assert wallet.run(provider.get_balance()).balance == 1234

    incoming = wallet.run(_lookup(provider, payment_hash=made.payment_hash))
    assert incoming.transaction_type == nostr_sdk.TransactionType.INCOMING
    assert incoming.state == nostr_sdk.TransactionState.SETTLED
    assert incoming.preimage == paid.preimage
    assert (incoming.amount, incoming.fees_paid) == (1234, 0)
    assert incoming.settled_at is not None
    outgoing = wallet.run(_lookup(customer, invoice=made.invoice))
    assert outgoing.transaction_type == nostr_sdk.TransactionType.OUTGOING
    assert outgoing.state == nostr_sdk.TransactionState.SETTLED
    assert outgoing.payment_hash == made.payment_hash

    totals = store.totals()
    assert (totals.balance_msats, totals.invoices_settled, totals.settled_msats) == (10_000, 1, 1234)

    secrets = [store.service_keys().secret_key().to_hex()]
    secrets += [account.client_secret for account in store.accounts()]
    secrets += [store.nwc_uri(account.name, [wallet.url]) for account in store.accounts()]
    logged = caplog.text
    assert "pay_invoice from customer -> ok" in logged
    assert not [secret for secret in secrets if secret in logged]
    assert "secret=" not in logged


def test_notifications_reach_payee_and_payer(any_wallet: Wallet) -> None:
    wallet, store = any_wallet, any_wallet.store
    provider_inbox = wallet.inbox(_pubkey(store, "provider"))
    customer_inbox = wallet.inbox(_pubkey(store, "customer"))
    made = _make(wallet, wallet.client("provider"), 1234)
    paid = wallet.run(_pay(wallet.client("customer"), made.invoice))

    def notification(event: RawEvent) -> bool:
        return event.kind in (nip47.NOTIFICATION_KIND_NIP04, nip47.NOTIFICATION_KIND_NIP44)

    for name, box, kind, direction in (
        ("provider", provider_inbox, nip47.PAYMENT_RECEIVED, "incoming"),
        ("customer", customer_inbox, nip47.PAYMENT_SENT, "outgoing"),
    ):
        events = box.wait(notification, count=2)
        assert sorted(event.kind for event in events) == [23196, 23197]  # NIP-04 and NIP-44 flavours
        for event in events:
            assert event.pubkey == wallet.service.service_pubkey
            assert event.value("p") == _pubkey(store, name)
            parsed = nip47.parse_notification(_decrypt(_keys(store, name), event))
            assert parsed.notification_type == kind
            body = parsed.notification
            assert (body["type"], body["state"], body["amount"]) == (direction, "settled", 1234)
            assert body["payment_hash"] == made.payment_hash
            assert body["preimage"] == paid.preimage
            assert body["invoice"] == made.invoice


# The client's view: each method and each refusal.


def test_get_info_names_the_development_wallet(wallet: Wallet) -> None:
    info = wallet.run(wallet.client("customer").get_info())
    assert DEV_WALLET_LABEL in info.alias
    assert info.network == "regtest"
    assert info.pubkey == wallet.store.node_pubkey
    assert [str(method) for method in info.methods] == [
        f"Method.{name.upper()}()"
        for name in ("pay_invoice", "make_invoice", "lookup_invoice", "get_balance", "get_info")
    ]
    assert info.notifications == ["payment_received", "payment_sent"]


def test_info_event_is_published(wallet: Wallet) -> None:
    async def fetch() -> list[RawEvent]:
        relay = await RelayClient([wallet.url]).start()
        try:
            wanted = (
                nostr_sdk.Filter()
                .kind(nostr_sdk.Kind(nip47.INFO_KIND))
                .author(nostr_sdk.PublicKey.parse(wallet.service.service_pubkey))
            )
            return await relay.fetch([wanted], timeout=3)
        finally:
            await relay.close()

    (info,) = wallet.run(fetch())
    assert info.content.split() == [
        "pay_invoice",
        "make_invoice",
        "lookup_invoice",
        "get_balance",
        "get_info",
        "notifications",
    ]
    assert info.value("notifications") == "payment_received payment_sent"
    assert info.value("encryption") == "nip04 nip44_v2"


def test_insufficient_balance_moves_nothing(wallet: Wallet) -> None:
    made = _make(wallet, wallet.client("provider"), 10_001)
    error = wallet.error_of(_pay(wallet.client("customer"), made.invoice))
    assert error.endswith("[InsufficientBalance]")
    assert nip47.sdk_error_code(error) == nip47.INSUFFICIENT_BALANCE
    assert "10000 msats" in error and "10001 msats" in error
    assert (wallet.store.balance("customer"), wallet.store.balance("provider")) == (10_000, 0)
    pending = wallet.run(_lookup(wallet.client("provider"), payment_hash=made.payment_hash))
    assert pending.state == nostr_sdk.TransactionState.PENDING
    assert pending.preimage is None


def test_an_invoice_is_paid_once(wallet: Wallet) -> None:
    customer = wallet.client("customer")
    made = _make(wallet, wallet.client("provider"), 1234)
    wallet.run(_pay(customer, made.invoice))
    error = wallet.error_of(_pay(customer, made.invoice))
    assert error == "invoice already paid [PaymentFailed]"
    assert (wallet.store.balance("customer"), wallet.store.balance("provider")) == (10_000 - 1234, 1234)


def test_expired_invoice_is_refused(wallet: Wallet) -> None:
    made = _make(wallet, wallet.client("provider"), 1234, expiry=1)
    while time.time() < made.expires_at.as_secs():
        time.sleep(0.02)
    error = wallet.error_of(_pay(wallet.client("customer"), made.invoice))
    assert error == "invoice expired [PaymentFailed]"
    assert wallet.store.balance("customer") == 10_000
    looked_up = wallet.run(_lookup(wallet.client("provider"), payment_hash=made.payment_hash))
    assert looked_up.state == nostr_sdk.TransactionState.EXPIRED


def test_invoices_from_other_wallets_are_not_paid(wallet: Wallet) -> None:
    customer = wallet.client("customer")
    error = wallet.error_of(_pay(customer, _foreign_invoice(1234)))
    assert error.endswith("[NotImplemented]")
    assert "pays only invoices it issued itself; no real money moves" in error
    # A forgery reusing the payment hash of a real invoice, signed by another key, pays nothing either.
    made = _make(wallet, wallet.client("provider"), 5000)
    forged = _foreign_invoice(1, payment_hash=made.payment_hash)
    assert wallet.error_of(_pay(customer, forged)).endswith("[NotImplemented]")
    assert wallet.error_of(_pay(customer, "lnbc1notaninvoice")).endswith("[Other]")
    assert wallet.store.balance("customer") == 10_000
    assert wallet.store.invoice(made.payment_hash) is not None
    assert wallet.store.invoice(made.payment_hash).state == "pending"  # type: ignore[union-attr]


def test_a_connection_without_account_gets_nothing(wallet: Wallet) -> None:
    made = _make(wallet, wallet.client("provider"), 1234)
    stranger = nostr_sdk.NostrWalletConnectUri(
        nostr_sdk.PublicKey.parse(wallet.service.service_pubkey),
        [nostr_sdk.RelayUrl.parse(wallet.url)],
        nostr_sdk.Keys.generate().secret_key(),
        None,
    )
    client = wallet.client_for_uri(str(stranger))
    error = wallet.error_of(_pay(client, made.invoice))
    assert error == f"this connection has no account ({DEV_WALLET_LABEL}) [Unauthorized]"
    assert wallet.error_of(client.get_balance()).endswith("[Unauthorized]")
    assert wallet.store.totals().balance_msats == 10_000
    assert wallet.store.invoice(made.payment_hash).state == "pending"  # type: ignore[union-attr]


def test_lookup_shows_only_the_accounts_own_invoices(wallet: Wallet) -> None:
    wallet.store.create_account("bystander", 5)
    made = _make(wallet, wallet.client("provider"), 1234)
    error = wallet.error_of(_lookup(wallet.client("bystander"), payment_hash=made.payment_hash))
    assert error.endswith("[NotFound]")
    assert wallet.error_of(_lookup(wallet.client("bystander"), payment_hash="00" * 32)).endswith("[NotFound]")


def test_parallel_payments_never_overdraw(wallet: Wallet) -> None:
    store = wallet.store
    store.create_account("spender", 10 * 1001)
    invoices = [store.make_invoice("provider", 1001, f"job {i}", 600).bolt11 for i in range(20)]
    spender = wallet.client("spender")

    async def pay_all() -> list[Any]:
        return await asyncio.gather(*(_pay(spender, invoice) for invoice in invoices), return_exceptions=True)

    outcomes = wallet.run(pay_all())
    failures = [nip47.sdk_error_text(outcome) for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(outcomes) - len(failures) == 10
    assert len(failures) == 10
    assert all(failure.endswith("[InsufficientBalance]") for failure in failures)
    assert store.balance("spender") == 0
    assert store.balance("provider") == 10 * 1001
    assert store.totals().invoices_settled == 10


# Raw requests: what other clients may send.


def test_redelivered_request_is_executed_once(any_wallet: Wallet) -> None:
    wallet, store = any_wallet, any_wallet.store
    made = store.make_invoice("provider", 1234, "once", 600)
    keys = _keys(store, "customer")
    inbox = wallet.inbox(_pubkey(store, "customer"))
    plaintext = json.dumps({"method": "pay_invoice", "params": {"invoice": made.bolt11}})
    request = _request_event(keys, wallet.service.service_pubkey, plaintext)
    request_id = request.id().to_hex()

    def answer(event: RawEvent) -> bool:
        return event.kind == nip47.RESPONSE_KIND and event.value("e") == request_id

    inbox.publish(request)
    inbox.publish(request, again=True)  # the same signed event again
    (first,) = inbox.wait(answer)
    response = nip47.parse_response(_decrypt(keys, first))
    assert response.error is None and response.result is not None
    assert _sha256(response.result["preimage"]) == made.payment_hash

    # A restarted service has a fresh client (nothing deduplicates for it) and gets the request
    # again: from the relay's storage (nostr-relay keeps requests), or sent once more (the embedded
    # relay does not). It answers with the stored response instead of paying twice.
    wallet.restart_service()
    inbox.publish(request, again=True)
    deadline = time.monotonic() + 5
    while wallet.service.stats["duplicate"] < 1:
        assert time.monotonic() < deadline, "the request was not delivered again"
        time.sleep(0.01)
    assert store.balance("customer") == 10_000 - 1234
    assert store.balance("provider") == 1234
    assert {event.id for event in inbox.events if answer(event)} == {first.id}
    assert not [key for key in wallet.service.stats if key.startswith("unpublished")]


def test_simultaneous_deliveries_run_once(wallet: Wallet) -> None:
    store = wallet.store
    made = store.make_invoice("provider", 1234, "twice at once", 600)
    plaintext = json.dumps({"method": "pay_invoice", "params": {"invoice": made.bolt11}})
    request = from_sdk(_request_event(_keys(store, "customer"), wallet.service.service_pubkey, plaintext))

    async def deliver_twice() -> None:
        await asyncio.gather(wallet.service.handle(request), wallet.service.handle(request))

    wallet.run(deliver_twice())
    assert wallet.service.stats["pay_invoice: ok"] == 1
    assert wallet.service.stats["duplicate"] == 1
    assert store.balance("customer") == 10_000 - 1234


def test_expired_request_is_not_run(wallet: Wallet) -> None:
    # Both relays here already drop expired events (NIP-40); the service checks again for relays
    # that do not, so the event is handed to it directly.
    store = wallet.store
    made = store.make_invoice("provider", 1234, "late", 600)
    late = _request_event(
        _keys(store, "customer"),
        wallet.service.service_pubkey,
        json.dumps({"method": "pay_invoice", "params": {"invoice": made.bolt11}}),
        tags=[["expiration", str(int(time.time()) - 1)]],
    )
    wallet.run(wallet.service.handle(from_sdk(late)))
    assert wallet.service.stats["dropped: expired"] == 1
    assert store.balance("customer") == 10_000
    assert store.claim_request(late.id().to_hex(), "x") == (True, None)  # never even claimed


def test_events_not_for_the_service_are_dropped(wallet: Wallet) -> None:
    keys = _keys(wallet.store, "customer")
    other_service = nostr_sdk.Keys.generate().public_key().to_hex()
    elsewhere = _request_event(keys, other_service, '{"method":"get_balance","params":{}}')
    garbled = sign(nip47.REQUEST_KIND, "not encrypted", [["p", wallet.service.service_pubkey]], keys)
    wallet.run(wallet.service.handle(from_sdk(elsewhere)))
    wallet.run(wallet.service.handle(from_sdk(garbled)))
    assert wallet.service.stats["dropped: not for us"] == 1
    assert wallet.service.stats["dropped: undecryptable"] == 1


def test_nip44_request_gets_a_nip44_response(wallet: Wallet) -> None:
    keys = _keys(wallet.store, "customer")
    inbox = wallet.inbox(_pubkey(wallet.store, "customer"))
    request = _request_event(
        keys,
        wallet.service.service_pubkey,
        '{"method":"get_balance","params":{}}',
        scheme=nip47.NIP44_V2,
        tags=[["encryption", "nip44_v2"]],
    )
    inbox.publish(request)
    (event,) = inbox.wait(lambda e: e.value("e") == request.id().to_hex())
    assert event.value("encryption") == nip47.NIP44_V2
    assert nip47.parse_response(_decrypt(keys, event)).result == {"balance": 10_000}


@pytest.mark.parametrize(
    ("plaintext", "tags", "result_type", "code", "message"),
    [
        (
            '{"method":"pay_keysend","params":{"amount":1,"pubkey":"x"}}',
            [],
            "pay_keysend",
            "NOT_IMPLEMENTED",
            "not supported",
        ),
        ("this is not json", [], "", "OTHER", "not valid JSON"),
        ('{"method":"make_invoice","params":{"amount":true}}', [], "make_invoice", "OTHER", "integer number"),
        ('{"method":"make_invoice","params":{"amount":0}}', [], "make_invoice", "OTHER", "between 1 and"),
        ('{"method":"make_invoice","params":{"amount":5,"expiry":0}}', [], "make_invoice", "OTHER", "'expiry'"),
        ('{"method":"lookup_invoice","params":{}}', [], "lookup_invoice", "OTHER", "'payment_hash' or 'invoice'"),
        ('{"method":"pay_invoice","params":{}}', [], "pay_invoice", "OTHER", "'invoice' is required"),
        ('{"method":"get_balance","params":{}}', [["encryption", "rot13"]], "", "UNSUPPORTED_ENCRYPTION", "rot13"),
    ],
)
def test_bad_requests_get_clear_errors(
    wallet: Wallet, plaintext: str, tags: list[list[str]], result_type: str, code: str, message: str
) -> None:
    keys = _keys(wallet.store, "customer")
    inbox = wallet.inbox(_pubkey(wallet.store, "customer"))
    request = _request_event(keys, wallet.service.service_pubkey, plaintext, tags=tags)
    inbox.publish(request)
    (event,) = inbox.wait(lambda e: e.value("e") == request.id().to_hex())
    response = nip47.parse_response(_decrypt(keys, event))
    assert response.result_type == result_type
    assert response.error is not None
    assert response.error.code == code
    assert message in response.error.message
    assert wallet.store.balance("customer") == 10_000


def test_restart_keeps_accounts_balances_and_uris(
    loop: NostrLoop, tmp_path: Path, embedded_relay: EmbeddedRelay
) -> None:
    first = Wallet(loop, tmp_path / "w.sqlite3", embedded_relay.url)
    first.store.create_account("customer", 777)
    first.store.create_account("provider")
    made = first.store.make_invoice("provider", 100, "before restart", 600)
    uris = {name: first.store.nwc_uri(name, [embedded_relay.url]) for name in ("customer", "provider")}
    service_pubkey, node_pubkey = first.service.service_pubkey, first.store.node_pubkey
    accounts = first.store.accounts()
    first.close()

    second = Wallet(loop, tmp_path / "w.sqlite3", embedded_relay.url)
    try:
        assert second.service.service_pubkey == service_pubkey
        assert second.store.node_pubkey == node_pubkey
        assert second.store.accounts() == accounts
        assert {name: second.store.nwc_uri(name, [embedded_relay.url]) for name in uris} == uris
        # The old URI still works, and the invoice issued before the restart can be paid.
        customer = second.client_for_uri(uris["customer"])
        assert second.run(customer.get_balance()).balance == 777
        paid = second.run(_pay(customer, made.bolt11))
        assert _sha256(paid.preimage) == made.payment_hash
        assert second.store.balance("provider") == 100
    finally:
        second.close()


# The store on its own (no relay).


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DevWalletStore]:
    """A store with ``provider`` (0 msats) and ``customer`` (10 000 msats)."""
    wallet_store = DevWalletStore(tmp_path / "store.sqlite3")
    wallet_store.create_account("provider")
    wallet_store.create_account("customer", 10_000)
    yield wallet_store
    wallet_store.close()


@pytest.mark.parametrize("name", ["", "a" * 65, "with space", "ünï", "a/b", "a.b", "x\n"])
def test_account_names_are_validated(store: DevWalletStore, name: str) -> None:
    with pytest.raises(ConfigError, match="1-64 characters"):
        store.create_account(name)


def test_accounts_are_created_once_and_funded(store: DevWalletStore) -> None:
    for name in ("a", "A-b_9", "x" * 64):
        store.create_account(name)
    before = store.account("customer")
    again = store.create_account("customer", 5)
    assert before is not None
    assert again.client_pubkey == before.client_pubkey
    assert again.client_secret == before.client_secret
    assert again.balance_msats == 10_005
    assert store.fund("customer", 1) == 10_006
    assert store.account_for_pubkey(before.client_pubkey) == "customer"
    assert store.account_for_pubkey("00" * 32) is None
    assert [account.name for account in store.accounts()][:2] == ["A-b_9", "a"]
    with pytest.raises(ConfigError):
        store.fund("customer", -1)
    with pytest.raises(ConfigError):
        store.create_account("customer", True)
    with pytest.raises(DevWalletRefusal) as refused:
        store.fund("nobody", 5)
    assert refused.value.code == nip47.UNAUTHORIZED


def test_secrets_stay_out_of_reprs_and_the_file_is_private(store: DevWalletStore) -> None:
    account = store.account("customer")
    assert account is not None
    assert account.client_secret not in repr(account)
    uri = store.nwc_uri("customer", ["ws://127.0.0.1:1"])
    assert uri.startswith("nostr+walletconnect://") and account.client_secret in uri
    assert DEV_WALLET_LABEL in repr(store)
    made = store.make_invoice("provider", 5, "x", 60)
    assert made.preimage not in repr(made)
    paid = store.pay_invoice("customer", made.bolt11)
    assert paid.preimage not in repr(paid)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("amount", [1, 7, 999, 1234, 100_000_001, 99_999_999_999_999])
def test_invoice_amounts_are_exact_millisatoshis(store: DevWalletStore, amount: int) -> None:
    store.fund("customer", amount)
    made = store.make_invoice("provider", amount, "exact", 60)
    assert bolt11.decode(made.bolt11).amount_msat == amount
    store.pay_invoice("customer", made.bolt11)
    assert store.balance("provider") == amount


def test_every_amount_is_written_exactly_and_bad_invoices_are_refused(store: DevWalletStore) -> None:
    # bolt11 2.2.0 wrote 1000 BTC as "1" (1 BTC); pylon's writer writes "1000".
    thousand_btc = 100_000_000_000_000
    made = store.make_invoice("provider", thousand_btc, "1000 BTC", 60)
    assert made.bolt11.startswith("lnbcrt10001") and read_bolt11(made.bolt11).amount_msats == thousand_btc
    with pytest.raises(ConfigError):
        store.make_invoice("provider", 0, "nothing", 60)
    with pytest.raises(DevWalletRefusal, match="639"):
        store.make_invoice("provider", 5, "d" * 640, 60)
    with pytest.raises(DevWalletRefusal, match="expiry"):
        store.make_invoice("provider", 5, "d", 0)


def test_description_hash_invoice(store: DevWalletStore) -> None:
    description_hash = hashlib.sha256(b"a long description").hexdigest()
    made = store.make_invoice("provider", 5, None, 60, description_hash=description_hash)
    decoded = bolt11.decode(made.bolt11)
    assert decoded.description_hash == description_hash
    assert decoded.description is None
    assert store.lookup("provider", made.payment_hash).description_hash == description_hash


def test_payment_refusals(store: DevWalletStore) -> None:
    made = store.make_invoice("provider", 1000, "refusals", 60, now=1_000_000)
    cases: list[tuple[Callable[[], Any], str, str]] = [
        (lambda: store.pay_invoice("provider", made.bolt11, now=1_000_001), "PAYMENT_FAILED", "own invoice"),
        (
            lambda: store.pay_invoice("customer", made.bolt11, now=1_000_001, amount_msats=999),
            "OTHER",
            "differs from the invoice's 1000 msats",
        ),
        (lambda: store.pay_invoice("customer", made.bolt11, now=1_000_060), "PAYMENT_FAILED", "invoice expired"),
        (lambda: store.pay_invoice("customer", "garbage"), "OTHER", "not a valid BOLT11 invoice"),
        (lambda: store.pay_invoice("nobody", made.bolt11, now=1_000_001), "UNAUTHORIZED", "no account named"),
    ]
    for attempt, code, message in cases:
        with pytest.raises(DevWalletRefusal, match=message) as refused:
            attempt()
        assert refused.value.code == code
    assert store.balance("customer") == 10_000
    paid = store.pay_invoice("customer", made.bolt11, now=1_000_059, amount_msats=1000)
    assert paid.fees_paid_msats == 0
    assert paid.invoice.settled_at == 1_000_059 and paid.invoice.payer == "customer"


def test_lookup_states_and_visibility(store: DevWalletStore) -> None:
    store.create_account("bystander")
    made = store.make_invoice("provider", 1000, "visible", 60, now=1_000_000)
    pending = store.lookup("provider", bolt11=made.bolt11, now=1_000_001)
    assert (pending.type, pending.state, pending.preimage) == ("incoming", "pending", None)
    assert store.lookup("provider", made.payment_hash, now=1_000_060).state == "expired"
    for account, payment_hash in (("bystander", made.payment_hash), ("customer", made.payment_hash)):
        with pytest.raises(DevWalletRefusal) as refused:
            store.lookup(account, payment_hash, now=1_000_001)
        assert refused.value.code == nip47.NOT_FOUND
    store.pay_invoice("customer", made.bolt11, now=1_000_002)
    outgoing = store.lookup("customer", made.payment_hash, now=1_000_100)
    assert (outgoing.type, outgoing.state, outgoing.settled_at) == ("outgoing", "settled", 1_000_002)
    assert outgoing.preimage is not None and _sha256(outgoing.preimage) == made.payment_hash
    assert [invoice.payment_hash for invoice in store.transactions()] == [made.payment_hash]


def test_threads_paying_at_once_never_overdraw(store: DevWalletStore) -> None:
    store.create_account("spender", 10 * 1001)
    invoices = [store.make_invoice("provider", 1001, f"job {i}", 600).bolt11 for i in range(20)]
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def pay(invoice: str) -> None:
        start.wait()
        try:
            store.pay_invoice("spender", invoice)
            outcomes.append("paid")
        except DevWalletRefusal as refusal:
            outcomes.append(refusal.code)

    threads = [threading.Thread(target=pay, args=(invoice,)) for invoice in invoices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["INSUFFICIENT_BALANCE"] * 10 + ["paid"] * 10
    assert store.balance("spender") == 0
    assert store.balance("provider") == 10 * 1001


def test_requests_are_claimed_once(store: DevWalletStore) -> None:
    assert store.claim_request("e1", "pk") == (True, None)
    assert store.claim_request("e1", "pk") == (False, None)  # still running: not run again
    store.record_response("e1", '{"id":"r1"}')
    assert store.claim_request("e1", "pk") == (False, '{"id":"r1"}')


def test_refusal_is_a_wallet_error_that_pickles() -> None:
    refusal = DevWalletRefusal("invoice expired", nip47.PAYMENT_FAILED)
    assert isinstance(refusal, WalletError)
    copy = pickle.loads(pickle.dumps(refusal))
    assert type(copy) is DevWalletRefusal
    assert (str(copy), copy.code) == ("invoice expired", "PAYMENT_FAILED")
