"""A Nostr Wallet Connect (NIP-47) wallet client over one relay connection of its own.

Configured by an NWC URI (``nostr+walletconnect://<wallet>?relay=...&secret=...``) from
``$PYLON_NWC_URI`` or ``$PYLON_HOME/nwc.uri`` (which must be mode 0600). The URI holds
a secret: it is never logged, shown in a ``repr`` or put in an error message.

Requests are signed and encrypted here (NIP-04, the scheme every NIP-47 wallet reads, as
nostr-sdk's own client writes them) and answered on ONE subscription to the wallet's responses,
opened once. nostr-sdk's ``NostrWalletConnect`` opens a relay subscription per request: a
round trip more per payment, and past a relay's cap on subscriptions (nostr-relay: 32) answers
were lost, so calls had to be queued 8 at a time. Error codes come from the response itself,
not from the wording of a library's error text.

Use the coroutines on the :class:`~dspy_pylon.nostr.loop.NostrLoop`. A provider waiting
for its invoice to be paid listens for the wallet's ``payment_received`` notifications
and looks the invoice up only with growing pauses, as a safety net for wallets that send
no notifications.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from dspy_pylon.errors import ConfigError, MalformedEvent, WalletError
from dspy_pylon.nostr.ciphers import Cipher, decrypt, encrypt
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.pay import nip47

log = logging.getLogger("dspy_pylon.pay")

URI_ENV = "PYLON_NWC_URI"
# How many early notifications and finished waits are remembered (oldest forgotten first).
_EARLY_LIMIT = 4096
URI_FILE = "nwc.uri"
NOTIFICATION_KINDS = (nip47.NOTIFICATION_KIND_NIP04, nip47.NOTIFICATION_KIND_NIP44)
#: A :class:`WalletError` code of our own: the wallet answered, but not in a form we can use.
UNREADABLE = "UNREADABLE"


@dataclass(frozen=True)
class PaymentResult:
    """A paid invoice: the preimage proves payment; fees are what the wallet charged on top."""

    preimage: str
    fees_msats: int = 0


@dataclass(frozen=True)
class MadeInvoice:
    """An invoice the wallet created for us."""

    bolt11: str
    payment_hash: str
    amount_msats: int
    expires_at: int


@dataclass(frozen=True)
class InvoiceStatus:
    """What the wallet knows about an invoice: ``state`` is pending, settled, expired, failed or accepted."""

    payment_hash: str
    state: str
    amount_msats: int
    preimage: str | None = None
    fees_msats: int = 0
    settled_at: int | None = None

    @property
    def settled(self) -> bool:
        """Whether the invoice was paid."""
        return self.state == "settled"


def load_nwc_uri(home: Path | None = None) -> str | None:
    """The NWC URI from ``$PYLON_NWC_URI`` or ``<home>/nwc.uri``; None when neither is set.

    The file must not be readable by others (``chmod 600``): it holds a spending secret.
    """
    value = os.environ.get(URI_ENV, "").strip()
    if value:
        return value
    if home is None:
        from dspy_pylon.identity import pylon_home

        home = pylon_home()
    path = home / URI_FILE
    if not path.is_file():
        return None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} holds a wallet secret but is readable by others (mode {mode:o}); run chmod 600 {path}"
        )
    return path.read_text().strip() or None


def save_nwc_uri(uri: str, home: Path | None = None) -> Path:
    """Write ``uri`` to ``<home>/nwc.uri`` with mode 0600 (checked by parsing first)."""
    parse_nwc_uri(uri)
    if home is None:
        from dspy_pylon.identity import pylon_home

        home = pylon_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / URI_FILE
    write_private(path, uri.strip() + "\n")
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (mode 0600), atomically.

    A new file is written and renamed over the old one, so nobody who had the old file
    open (perhaps with wider permissions) can read the new secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def parse_nwc_uri(uri: str) -> Any:
    """The nostr-sdk ``NostrWalletConnectUri``; :class:`ConfigError` (without the URI) if invalid."""
    import nostr_sdk

    if not isinstance(uri, str) or not uri.strip().startswith(("nostr+walletconnect://", "nostrwalletconnect://")):
        raise ConfigError("a Nostr Wallet Connect URI starts with nostr+walletconnect://")
    try:
        return nostr_sdk.NostrWalletConnectUri.parse(uri.strip())
    except Exception as exc:  # nostr-sdk's error text does not include the secret
        raise ConfigError(f"the Nostr Wallet Connect URI is invalid: {exc}") from None


class NwcWallet:
    """A wallet reached through NIP-47. Create anywhere; use its coroutines on the NostrLoop."""

    def __init__(self, uri: str, *, timeout: float = 30.0) -> None:
        self._uri = parse_nwc_uri(uri)
        self.timeout = timeout
        self.wallet_pubkey = str(self._uri.public_key().to_hex())
        self.relays = tuple(str(url) for url in self._uri.relays())
        self._keys: Any = None
        self._relay: Any = None  # RelayClient: requests, responses and notifications
        self._opening: asyncio.Lock | None = None
        self._listening = False
        self._closed = False
        self._answers: dict[str, asyncio.Future[str]] = {}
        self._waiters: dict[str, asyncio.Future[str | None]] = {}
        self._settled_early: OrderedDict[str, str | None] = OrderedDict()
        # Hashes whose wait has ended: a repeated notification (both NIP-47 kinds) is not kept.
        self._done: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"NwcWallet(wallet={self.wallet_pubkey[:12]}…, relays={list(self.relays)})"

    @property
    def tracked_payments(self) -> int:
        """Payments this wallet still keeps state for: waits in progress and settlements that
        arrived before their wait (bounded; both end when the wait does)."""
        return len(self._waiters) + len(self._settled_early)

    @property
    def client_pubkey(self) -> str:
        """The public key this connection signs wallet requests with."""
        return str(self._client_keys().public_key().to_hex())

    def _client_keys(self) -> Any:
        if self._keys is None:
            import nostr_sdk

            self._keys = nostr_sdk.Keys(self._uri.secret())
        return self._keys

    async def _connection(self) -> Any:
        """The relay connection, opened on first use with its subscription to our responses."""
        if self._relay is not None:
            return self._relay
        if self._closed:  # never reopened behind the back of whoever closed it
            raise WalletError("the wallet connection is closed", "TIMEOUT")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._relay is None:
                from dspy_pylon.nostr.relay_client import RelayClient

                relay = await RelayClient(self.relays).start()
                try:
                    await self._subscribe_responses(relay)
                except BaseException:
                    await relay.close()
                    raise
                self._relay = relay
        return self._relay

    async def _subscribe_responses(self, relay: Any) -> None:
        import nostr_sdk

        responses = (
            nostr_sdk.Filter()
            .kind(nostr_sdk.Kind(nip47.RESPONSE_KIND))
            .author(self._uri.public_key())
            .pubkey(self._client_keys().public_key())
            .since(nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - 60)))
        )
        await relay.subscribe([responses], self._on_response)

    def _on_response(self, event: RawEvent, relay: str) -> None:
        request_id = event.value("e")
        answer = self._answers.get(request_id or "")
        if answer is None or answer.done() or event.pubkey != self.wallet_pubkey:
            return  # not ours, a copy from a second relay, or an answer nobody waits for any more
        try:
            plaintext, _ = decrypt(self._client_keys(), event.pubkey, event.content)
        except MalformedEvent:
            log.info("unreadable wallet response %s", event.id[:12])
            return
        answer.set_result(plaintext)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One NIP-47 request; the response's ``result``, or :class:`WalletError` with its code."""
        relay = await self._connection()
        keys = self._client_keys()
        content = encrypt(keys, self.wallet_pubkey, nip47.request_json(method, params), Cipher.NIP04)
        # NIP-40: a relay that stores the request must not hand it to the wallet after we gave up.
        expires = str(int(time.time() + self.timeout) + 1)
        event = sign(nip47.REQUEST_KIND, content, [["p", self.wallet_pubkey], ["expiration", expires]], keys)
        request_id = str(event.id().to_hex())
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = answer
        try:
            try:
                await relay.publish(event)
            except Exception as exc:  # a PylonError, or nostr-sdk's own error type
                # Unknown whether a relay passed it on (an OK can be lost): as uncertain as no answer.
                why = f"wallet {method}: the request may not have reached the wallet ({exc})"
                raise WalletError(why, "TIMEOUT") from None
            try:
                plaintext = await asyncio.wait_for(answer, self.timeout)
            except TimeoutError:
                why = f"wallet {method}: no answer from the wallet within {self.timeout:g} s"
                raise WalletError(why, "TIMEOUT") from None
        finally:
            self._answers.pop(request_id, None)
        try:
            response = nip47.parse_response(plaintext)
        except MalformedEvent as exc:
            raise WalletError(f"wallet {method}: unreadable answer ({exc})", UNREADABLE) from None
        if response.error is not None:
            code = response.error.code if response.error.code in nip47.ERROR_CODES else nip47.OTHER
            raise WalletError(f"wallet {method} failed: {response.error.message} [{code}]"[:500], code)
        if response.result_type != method or response.result is None:
            raise WalletError(f"wallet {method}: the answer is for {response.result_type!r}", UNREADABLE)
        return response.result

    async def pay_invoice(self, bolt11: str) -> PaymentResult:
        """Pay ``bolt11``; :class:`WalletError` if the wallet refused or did not answer.

        Only the wallet's own ``error`` answer means "not paid". No answer, or one that cannot
        be read, leaves the outcome unknown: the invoice is looked up, and if that does not
        show it paid the error is a ``TIMEOUT`` (the payer then keeps it as possibly spent).
        """
        try:
            result = await self._call("pay_invoice", {"invoice": bolt11})
            preimage = result.get("preimage")
            if not isinstance(preimage, str):
                raise WalletError("wallet pay_invoice: the answer has no preimage", UNREADABLE)
        except WalletError as exc:
            if exc.code not in ("TIMEOUT", UNREADABLE):
                raise
            # The answer was lost or garbled, not necessarily the payment: ask the wallet.
            from dspy_pylon.pay.invoice import decode_invoice

            status = await self._lookup_quietly(decode_invoice(bolt11).payment_hash)
            if status is None or not status.settled or not status.preimage:
                raise WalletError(f"{exc} (and a lookup did not show it paid)", "TIMEOUT") from None
            return PaymentResult(status.preimage, status.fees_msats)
        # An empty preimage is kept (some wallets send one): the payer notes it proves nothing.
        return PaymentResult(preimage, _msats(result, "fees_paid"))

    async def make_invoice(self, amount_msats: int, description: str, expiry_s: int) -> MadeInvoice:
        """A new invoice for ``amount_msats`` payable to this wallet."""
        from dspy_pylon.pay.invoice import decode_invoice

        params = {"amount": amount_msats, "description": description, "expiry": expiry_s}
        result = await self._call("make_invoice", params)
        bolt11 = result.get("invoice")
        if not isinstance(bolt11, str) or not bolt11:
            raise WalletError("wallet make_invoice: the answer has no invoice", nip47.INTERNAL)
        payment_hash, expires_at, amount = result.get("payment_hash"), result.get("expires_at"), result.get("amount")
        if isinstance(payment_hash, str) and _is_int(expires_at) and _is_int(amount):
            # The wallet said what it made; decoding is only the fallback.
            made_amount, made_hash, made_expiry = int(amount), payment_hash, int(expires_at)
        else:
            try:
                invoice = decode_invoice(bolt11)
            except MalformedEvent as exc:
                raise WalletError(f"wallet make_invoice: {exc}", nip47.INTERNAL) from None
            made_amount, made_hash, made_expiry = invoice.amount_msats or 0, invoice.payment_hash, invoice.expires_at
        if made_amount != amount_msats:
            raise WalletError(
                f"the wallet made an invoice for {made_amount} msats instead of {amount_msats}", nip47.INTERNAL
            )
        return MadeInvoice(bolt11, made_hash, amount_msats, made_expiry)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        """The wallet's record of an invoice (incoming or outgoing) by payment hash."""
        result = await self._call("lookup_invoice", {"payment_hash": payment_hash})
        state = result.get("state")
        if state not in ("pending", "settled", "expired", "failed", "accepted"):
            # Wallets before NIP-47's ``state`` field: settled once it has a settlement time.
            state = "settled" if _is_int(result.get("settled_at")) else "pending"
        preimage = result.get("preimage")
        settled_at = result.get("settled_at")
        return InvoiceStatus(
            payment_hash=str(result.get("payment_hash") or payment_hash),
            state=str(state),
            amount_msats=_msats(result, "amount"),
            preimage=preimage if isinstance(preimage, str) and preimage else None,
            fees_msats=_msats(result, "fees_paid"),
            settled_at=int(settled_at) if _is_int(settled_at) else None,
        )

    async def get_balance(self) -> int:
        """The wallet balance in msats."""
        result = await self._call("get_balance", {})
        if not _is_int(result.get("balance")):
            raise WalletError("wallet get_balance: the answer has no balance", nip47.INTERNAL)
        return int(result["balance"])

    # ─── waiting for an incoming payment ───

    async def _listen(self) -> None:
        if self._listening:
            return
        import nostr_sdk

        relay = await self._connection()
        since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - 60))
        notifications = (
            nostr_sdk.Filter()
            .kinds([nostr_sdk.Kind(k) for k in NOTIFICATION_KINDS])
            .author(self._uri.public_key())
            .pubkey(self._client_keys().public_key())
            .since(since)
        )
        if not self._listening:  # two first waits at once subscribe once
            self._listening = True
            try:
                await relay.subscribe([notifications], self._on_notification)
            except BaseException:
                self._listening = False  # the next wait tries again
                raise

    def _on_notification(self, event: RawEvent, relay: str) -> None:
        if event.pubkey != self.wallet_pubkey:
            return
        try:
            text, _ = decrypt(self._client_keys(), event.pubkey, event.content)
            notification = nip47.parse_notification(text)
        except MalformedEvent:  # not a payment we can read
            log.debug("unreadable wallet notification %s", event.id[:12])
            return
        if notification.notification_type != nip47.PAYMENT_RECEIVED:
            return
        payment_hash = notification.notification.get("payment_hash")
        preimage = notification.notification.get("preimage")
        if not isinstance(payment_hash, str):
            return
        waiter = self._waiters.get(payment_hash)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(preimage if isinstance(preimage, str) else None)
        elif payment_hash not in self._done:
            # Paid before anyone waits for it (a notification can beat the wait): kept, bounded.
            self._settled_early[payment_hash] = preimage if isinstance(preimage, str) else None
            while len(self._settled_early) > _EARLY_LIMIT:
                self._settled_early.popitem(last=False)

    async def start_listening(self) -> None:
        """Subscribe to the wallet's payment notifications now (a provider does this at start)."""
        await self._listen()

    async def wait_settled(self, payment_hash: str, expires_at: float) -> InvoiceStatus | None:
        """Wait until the invoice is paid (its status) or expired (None).

        A ``payment_received`` notification ends the wait at once (its ``amount_msats`` is
        then 0: the caller knows what it invoiced); lookups back off from 1 s to 15 s in
        case the wallet sends none, and one more lookup at expiry settles a race with the
        deadline.
        """
        await self._listen()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[str | None] = loop.create_future()
        self._waiters[payment_hash] = waiter
        if payment_hash in self._settled_early:
            waiter.set_result(self._settled_early.pop(payment_hash))
        pause = 1.0
        try:
            while True:
                remaining = expires_at - time.time()
                try:
                    preimage = await asyncio.wait_for(asyncio.shield(waiter), max(0.0, min(pause, remaining)))
                except TimeoutError:
                    status = await self._lookup_quietly(payment_hash)
                    if status is not None and status.settled:
                        return status
                    if status is not None and status.state in ("expired", "failed"):
                        return None
                    if time.time() >= expires_at:
                        return None
                else:
                    # Signed by the wallet and encrypted to us: as good as a lookup, one round trip sooner.
                    return InvoiceStatus(payment_hash, "settled", 0, preimage, settled_at=int(time.time()))
                pause = min(pause * 2, 15.0)
        finally:
            self._waiters.pop(payment_hash, None)
            self._done[payment_hash] = None
            while len(self._done) > _EARLY_LIMIT:
                self._done.popitem(last=False)

    async def _lookup_quietly(self, payment_hash: str) -> InvoiceStatus | None:
        try:
            return await self.lookup_invoice(payment_hash)
        except WalletError as exc:
            log.info("invoice lookup failed: %s", exc)
            return None

    async def close(self) -> None:
        """Disconnect from the wallet's relays (requests and notifications). Calls still waiting
        for an answer end as ``TIMEOUT`` (their outcome unknown); the wallet is not reopened."""
        self._closed = True
        for answer in self._answers.values():
            if not answer.done():
                answer.set_exception(WalletError("the wallet connection was closed before it answered", "TIMEOUT"))
        relay, self._relay = self._relay, None
        self._listening = False
        if relay is not None:
            await relay.close()


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _msats(result: dict[str, Any], name: str) -> int:
    """A non-negative msats field of a result (0 when absent or not an integer)."""
    value = result.get(name)
    return int(value) if _is_int(value) and value >= 0 else 0
