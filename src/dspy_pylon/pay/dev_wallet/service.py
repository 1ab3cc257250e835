"""The development wallet's NIP-47 service: the I/O edge on the relays."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from dspy_pylon.errors import ConfigError, MalformedEvent, PylonError
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.pay import nip47, nip47_params
from dspy_pylon.pay.dev_wallet.records import (
    DEFAULT_EXPIRY_S,
    DEV_WALLET_LABEL,
    ENCRYPTIONS,
    MAX_DESCRIPTION_BYTES,
    MAX_EXPIRY_S,
    METHODS,
    NETWORK,
    NOTIFICATIONS,
    SUBSCRIBE_LOOKBACK_S,
    DevPayment,
    DevWalletRefusal,
    _refuse,
)
from dspy_pylon.pay.dev_wallet.store import DevWalletStore

log = logging.getLogger("dspy_pylon.pay.dev_wallet")


class DevWalletService:
    """Answers NIP-47 requests for the accounts of ``store`` on ``relays`` (the I/O edge).

    Start it on any running event loop (typically a :class:`~dspy_pylon.nostr.loop.NostrLoop`);
    each request is handled in a task of its own, so a slow relay never holds up the others.
    ``stats`` counts requests by outcome (and dropped ones by reason).
    """

    def __init__(self, store: DevWalletStore, relays: Sequence[str]) -> None:
        if not relays:
            raise ConfigError("the development wallet needs at least one relay URL")
        self.store = store
        self.relays = tuple(relays)
        self.stats: Counter[str] = Counter()
        self._keys = store.service_keys()
        self._service_pubkey = str(self._keys.public_key().to_hex())
        self._client: Any = None
        self._subscription: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"DevWalletService(pubkey={self._service_pubkey[:12]}…, relays={len(self.relays)}) [{DEV_WALLET_LABEL}]"

    @property
    def service_pubkey(self) -> str:
        """The service's public key (hex)."""
        return self._service_pubkey

    async def start(self) -> DevWalletService:
        """Connect, subscribe to requests, then publish the info event (kind 13194)."""
        import nostr_sdk

        from dspy_pylon.nostr.relay_client import RelayClient

        self._client = await RelayClient(self.relays).start()
        since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - SUBSCRIBE_LOOKBACK_S))
        requests = (
            nostr_sdk.Filter()
            .kind(nostr_sdk.Kind(nip47.REQUEST_KIND))
            .pubkey(nostr_sdk.PublicKey.parse(self._service_pubkey))
            .since(since)
        )
        self._subscription = await self._client.subscribe([requests], self._on_request)
        info = sign(
            nip47.INFO_KIND,
            nip47.info_content(METHODS, NOTIFICATIONS),
            nip47.info_tags(NOTIFICATIONS, ENCRYPTIONS),
            self._keys,
        )
        # Clients do not need the info event to pay: a relay that refused it is only logged.
        await self._publish(info, "info event")
        log.info("%s serving on %d relay(s) as %s", DEV_WALLET_LABEL, len(self.relays), self._service_pubkey)
        return self

    async def stop(self) -> None:
        """Stop answering: finish the requests in flight (up to 5 s), then disconnect."""
        client = self._client
        if client is None:
            return
        if self._subscription is not None:
            try:
                await client.unsubscribe(self._subscription)
            except Exception:  # the relays may already be gone; closing is all that is left
                log.debug("unsubscribe failed", exc_info=True)
            self._subscription = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._client = None
        await client.close()

    def _on_request(self, event: RawEvent, relay: str) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, event: RawEvent) -> None:
        """Answer one request event (signature already checked), as the subscription does for each.

        Drops what is not a request to this service, expired (NIP-40) or undecryptable; answers
        everything else, at most once per event id: a delivery of an event already handled gets
        the stored response again, one still running gets nothing. Never raises.
        """
        try:
            await self._handle_request(event)
        except Exception:  # one bad request must not take the service down
            self.stats["internal error"] += 1
            log.exception("request %s failed", event.id[:12])

    async def _handle_request(self, event: RawEvent) -> None:
        opened = await self._open(event)
        if opened is None:
            return
        scheme, plaintext = opened
        # The store is SQLite: off the loop, like every request's work.
        account = await self.store.run(self.store.account_for_pubkey, event.pubkey)
        if account is None:
            # Anyone can encrypt to the service; answering costs nothing and tells a misconfigured
            # client why it gets no money. Not recorded: it has no effect to protect.
            self.stats["unauthorized"] += 1
            no_account = (nip47.UNAUTHORIZED, f"this connection has no account ({DEV_WALLET_LABEL})")
            await self._respond(event, scheme, nip47.result_type_for(plaintext), None, no_account)
            return
        first, stored = await self.store.run(self.store.claim_request, event.id, event.pubkey)
        if not first:
            self.stats["duplicate"] += 1
            if stored is not None:
                import nostr_sdk

                await self._publish(nostr_sdk.Event.from_json(stored), "stored response")
            return
        await self._serve(event, scheme, plaintext, account)

    async def _open(self, event: RawEvent) -> tuple[str, str] | None:
        """The request's encryption scheme and plaintext, or None (dropped, or refused already)."""
        import nostr_sdk

        if event.kind != nip47.REQUEST_KIND or event.value("p") != self._service_pubkey:
            self.stats["dropped: not for us"] += 1
            return None
        if nip47.is_expired(event.tags, time.time()):
            self.stats["dropped: expired"] += 1
            return None
        scheme = nip47.request_encryption(event.tags)
        client_pubkey = nostr_sdk.PublicKey.parse(event.pubkey)
        if scheme not in ENCRYPTIONS:
            await self._respond(
                event, nip47.NIP04, "", None, (nip47.UNSUPPORTED_ENCRYPTION, f"encryption {scheme!r} is not supported")
            )
            return None
        try:
            return scheme, self._decrypt(scheme, client_pubkey, event.content)
        except Exception:  # nostr-sdk raises its own error for bad ciphertext
            self.stats["dropped: undecryptable"] += 1
            return None

    async def _serve(self, event: RawEvent, scheme: str, plaintext: str, account: str) -> None:
        """Run a request claimed for ``account`` and answer it (and notify a payee)."""
        paid: DevPayment | None = None
        result_type = nip47.result_type_for(plaintext)
        result: dict[str, Any] | None = None
        error: tuple[str, str] | None = None
        try:
            request = nip47.parse_request(plaintext)
            result_type = request.method
            # Invoice signing and SQLite take milliseconds: off the loop, so other requests and
            # anything else sharing the loop keep moving (the store is thread-safe).
            result, paid = await self.store.run(self._dispatch, account, request)
        except DevWalletRefusal as refusal:
            error = (refusal.code, str(refusal))
        except MalformedEvent as exc:
            error = (nip47.OTHER, str(exc))
        except Exception:
            log.exception("%s: request %s failed", DEV_WALLET_LABEL, event.id[:12])
            error = (nip47.INTERNAL, f"internal error ({DEV_WALLET_LABEL})")
        self.stats[f"{result_type or 'unknown'}: {error[0] if error else 'ok'}"] += 1
        log.info("%s: %s from %s -> %s", DEV_WALLET_LABEL, result_type or "?", account, error[0] if error else "ok")
        if paid is None:
            await self._respond(event, scheme, result_type, result, error, record=True)
        else:
            # The payee is told at the same time as the payer: a provider waiting for this
            # payment should not also wait for the relay's OK on the customer's answer.
            await asyncio.gather(
                self._respond(event, scheme, result_type, result, error, record=True), self._notify_payment(paid)
            )

    def _dispatch(self, account: str, request: nip47.NwcRequest) -> tuple[dict[str, Any], DevPayment | None]:
        params = request.params
        now = time.time()
        if request.method == "pay_invoice":
            invoice = nip47_params.param_str(params, "invoice", required=True, max_bytes=8192)
            assert invoice is not None
            amount = nip47_params.param_amount(params, required=False)
            paid = self.store.pay_invoice(account, invoice, now, amount)
            return {"preimage": paid.preimage, "fees_paid": paid.fees_paid_msats}, paid
        if request.method == "make_invoice":
            amount = nip47_params.param_amount(params)
            assert amount is not None
            description = nip47_params.param_str(params, "description", max_bytes=MAX_DESCRIPTION_BYTES)
            description_hash = nip47_params.param_hex32(params, "description_hash")
            expiry = nip47_params.param_int(params, "expiry", minimum=1, maximum=MAX_EXPIRY_S, default=DEFAULT_EXPIRY_S)
            assert expiry is not None
            made = self.store.make_invoice(account, amount, description, expiry, now, description_hash=description_hash)
            return made.transaction(nip47.INCOMING, now).to_dict(), None
        if request.method == "lookup_invoice":
            payment_hash = nip47_params.param_hex32(params, "payment_hash")
            invoice = nip47_params.param_str(params, "invoice", max_bytes=8192)
            if payment_hash is None and invoice is None:
                raise MalformedEvent("lookup_invoice needs 'payment_hash' or 'invoice'")
            return self.store.lookup(account, payment_hash, invoice, now).to_dict(), None
        if request.method == "get_balance":
            return {"balance": self.store.balance(account)}, None
        if request.method == "get_info":
            return {
                "alias": f"pylon {DEV_WALLET_LABEL}",
                "color": "#808080",
                "pubkey": self.store.node_pubkey,
                "network": NETWORK,
                "methods": list(METHODS),
                "notifications": list(NOTIFICATIONS),
            }, None
        raise _refuse(nip47.NOT_IMPLEMENTED, f"method {request.method[:40]!r} is not supported ({DEV_WALLET_LABEL})")

    def _decrypt(self, scheme: str, peer: Any, content: str) -> str:
        import nostr_sdk

        secret = self._keys.secret_key()
        if scheme == nip47.NIP44_V2:
            return str(nostr_sdk.nip44_decrypt(secret, peer, content))
        return str(nostr_sdk.nip04_decrypt(secret, peer, content))

    def _encrypt(self, scheme: str, peer: Any, plaintext: str) -> str:
        import nostr_sdk

        secret = self._keys.secret_key()
        if scheme == nip47.NIP44_V2:
            return str(nostr_sdk.nip44_encrypt(secret, peer, plaintext, nostr_sdk.Nip44Version.V2))
        return str(nostr_sdk.nip04_encrypt(secret, peer, plaintext))

    async def _respond(
        self,
        request: RawEvent,
        scheme: str,
        result_type: str,
        result: dict[str, Any] | None,
        error: tuple[str, str] | None,
        *,
        record: bool = False,
    ) -> None:
        import nostr_sdk

        plaintext = nip47.response_json(result_type, result, error)
        content = self._encrypt(scheme, nostr_sdk.PublicKey.parse(request.pubkey), plaintext)
        tags = [["p", request.pubkey], ["e", request.id]]
        if scheme == nip47.NIP44_V2:
            tags.append(["encryption", nip47.NIP44_V2])
        response = sign(nip47.RESPONSE_KIND, content, tags, self._keys)
        if record:
            # Stored before it is sent: a request delivered again after a crash gets this same answer.
            await self.store.run(self.store.record_response, request.id, response.as_json())
        await self._publish(response, "response")

    async def _notify_payment(self, paid: DevPayment) -> None:
        now = time.time()
        invoice = paid.invoice
        sends = []
        for account_name, notification_type, direction in (
            (invoice.payee, nip47.PAYMENT_RECEIVED, nip47.INCOMING),
            (invoice.payer, nip47.PAYMENT_SENT, nip47.OUTGOING),
        ):
            account = await self.store.run(self.store.account, account_name) if account_name else None
            if account is None:
                continue
            plaintext = nip47.notification_json(notification_type, invoice.transaction(direction, now).to_dict())
            sends.append(self._notify(account.client_pubkey, plaintext))
        await asyncio.gather(*sends)

    async def _notify(self, client_pubkey: str, plaintext: str) -> None:
        import nostr_sdk

        peer = nostr_sdk.PublicKey.parse(client_pubkey)
        # Both kinds: NIP-47 clients predating NIP-44 listen to 23196, newer ones to 23197.
        events = [
            sign(kind, self._encrypt(scheme, peer, plaintext), [["p", client_pubkey]], self._keys)
            for kind, scheme in (
                (nip47.NOTIFICATION_KIND_NIP04, nip47.NIP04),
                (nip47.NOTIFICATION_KIND_NIP44, nip47.NIP44_V2),
            )
        ]
        await asyncio.gather(*(self._publish(event, "notification") for event in events))

    async def _publish(self, event: Any, what: str) -> None:
        client = self._client
        if client is None:
            return
        try:
            await client.publish(event)
        except PylonError as exc:  # RelayUnavailable, ResultTooLarge (a relay's "duplicate:" counts as accepted)
            self.stats[f"unpublished {what}"] += 1
            log.warning("%s: %s not published: %s", DEV_WALLET_LABEL, what, exc)
