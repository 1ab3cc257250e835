"""A Nostr Wallet Connect (NIP-47) wallet client: nostr-sdk's ``NostrWalletConnect`` at the edge.

Configured by an NWC URI (``nostr+walletconnect://<wallet>?relay=...&secret=...``) from
``$PYLON_NWC_URI`` or ``$PYLON_HOME/nwc.uri`` (which must be mode 0600). The URI holds
a secret: it is never logged, shown in a ``repr`` or put in an error message.

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
from datetime import timedelta
from pathlib import Path
from typing import Any

from dspy_pylon.errors import ConfigError, WalletError
from dspy_pylon.nostr.events import RawEvent
from dspy_pylon.pay import nip47

log = logging.getLogger("dspy_pylon.pay")

URI_ENV = "PYLON_NWC_URI"
# How many early notifications and finished waits are remembered (oldest forgotten first).
_EARLY_LIMIT = 4096
URI_FILE = "nwc.uri"
NOTIFICATION_KINDS = (nip47.NOTIFICATION_KIND_NIP04, nip47.NOTIFICATION_KIND_NIP44)


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


def _wallet_error(what: str, exc: Exception) -> WalletError:
    from dspy_pylon.pay import nip47

    text = nip47.sdk_error_text(exc)
    if "response not received" in text.lower() or "timeout" in text.lower():
        return WalletError(f"wallet {what}: no answer from the wallet ({text})"[:500], "TIMEOUT")
    return WalletError(f"wallet {what} failed: {text}"[:500], nip47.sdk_error_code(text) or "INTERNAL")


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

    #: Requests in flight at once. nostr-sdk's client opens one relay subscription per
    #: request, and relays cap subscriptions per connection (nostr-relay: 32); past the cap
    #: the relay closes the subscription and the answer is lost.
    MAX_IN_FLIGHT = 8

    def __init__(self, uri: str, *, timeout: float = 30.0) -> None:
        self._uri = parse_nwc_uri(uri)
        self.timeout = timeout
        self._slots: asyncio.Semaphore | None = None
        self.wallet_pubkey = str(self._uri.public_key().to_hex())
        self.relays = tuple(str(url) for url in self._uri.relays())
        self._client: Any = None
        self._listener: Any = None
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
        import nostr_sdk

        return str(nostr_sdk.Keys(self._uri.secret()).public_key().to_hex())

    def _nwc(self) -> Any:
        if self._client is None:
            import nostr_sdk

            self._client = (
                nostr_sdk.NostrWalletConnectBuilder(self._uri).timeout(timedelta(seconds=self.timeout)).build()
            )
        return self._client

    async def _call(self, what: str, coro_factory: Any) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.MAX_IN_FLIGHT)
        try:
            async with self._slots:
                return await coro_factory(self._nwc())
        except Exception as exc:  # nostr-sdk raises one error type; its text carries the NIP-47 code
            raise _wallet_error(what, exc) from None

    async def pay_invoice(self, bolt11: str) -> PaymentResult:
        """Pay ``bolt11``; :class:`WalletError` if the wallet refused or did not answer."""
        import nostr_sdk

        request = nostr_sdk.PayInvoiceRequest(id=None, invoice=bolt11, amount=None)
        try:
            response = await self._call("pay_invoice", lambda nwc: nwc.pay_invoice(request))
        except WalletError as exc:
            if exc.code != "TIMEOUT":
                raise
            # The answer was lost, not necessarily the payment: ask the wallet what happened.
            from dspy_pylon.pay.invoice import decode_invoice

            status = await self._lookup_quietly(decode_invoice(bolt11).payment_hash)
            if status is None or not status.settled or not status.preimage:
                raise
            return PaymentResult(status.preimage, status.fees_msats)
        return PaymentResult(str(response.preimage), int(response.fees_paid or 0))

    async def make_invoice(self, amount_msats: int, description: str, expiry_s: int) -> MadeInvoice:
        """A new invoice for ``amount_msats`` payable to this wallet."""
        import nostr_sdk

        from dspy_pylon.pay.invoice import decode_invoice

        request = nostr_sdk.MakeInvoiceRequest(
            amount=amount_msats, description=description, description_hash=None, expiry=expiry_s
        )
        response = await self._call("make_invoice", lambda nwc: nwc.make_invoice(request))
        bolt11 = str(response.invoice)
        if response.payment_hash and response.expires_at is not None and response.amount is not None:
            # The wallet said what it made; decoding (~4 ms of pure Python) is only the fallback.
            made_amount, payment_hash = int(response.amount), str(response.payment_hash)
            expires_at = int(response.expires_at.as_secs())
        else:
            invoice = decode_invoice(bolt11)
            made_amount, payment_hash, expires_at = invoice.amount_msats or 0, invoice.payment_hash, invoice.expires_at
        if made_amount != amount_msats:
            raise WalletError(
                f"the wallet made an invoice for {made_amount} msats instead of {amount_msats}", "INTERNAL"
            )
        return MadeInvoice(bolt11, payment_hash, amount_msats, expires_at)

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        """The wallet's record of an invoice (incoming or outgoing) by payment hash."""
        import nostr_sdk

        request = nostr_sdk.LookupInvoiceRequest(payment_hash=payment_hash, invoice=None)
        response = await self._call("lookup_invoice", lambda nwc: nwc.lookup_invoice(request))
        state = response.state.name.lower() if response.state is not None else "pending"
        settled_at = response.settled_at.as_secs() if response.settled_at is not None else None
        return InvoiceStatus(
            payment_hash=str(response.payment_hash),
            state=state,
            amount_msats=int(response.amount),
            preimage=response.preimage or None,
            fees_msats=int(response.fees_paid or 0),
            settled_at=None if settled_at is None else int(settled_at),
        )

    async def get_balance(self) -> int:
        """The wallet balance in msats."""
        response = await self._call("get_balance", lambda nwc: nwc.get_balance())
        return int(response.balance)

    # ─── waiting for an incoming payment ───

    async def _listen(self) -> None:
        if self._listener is not None:
            return
        import nostr_sdk

        from dspy_pylon.nostr.relay_client import RelayClient

        listener = RelayClient(self.relays)
        self._listener = listener
        await listener.start()
        since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - 60))
        notifications = (
            nostr_sdk.Filter()
            .kinds([nostr_sdk.Kind(k) for k in NOTIFICATION_KINDS])
            .author(self._uri.public_key())
            .pubkey(nostr_sdk.Keys(self._uri.secret()).public_key())
            .since(since)
        )
        await listener.subscribe([notifications], self._on_notification)

    def _on_notification(self, event: RawEvent, relay: str) -> None:
        import nostr_sdk

        if event.pubkey != self.wallet_pubkey:
            return
        try:
            wallet = nostr_sdk.PublicKey.parse(event.pubkey)
            if event.kind == nip47.NOTIFICATION_KIND_NIP44:
                text = nostr_sdk.nip44_decrypt(self._uri.secret(), wallet, event.content)
            else:
                text = nostr_sdk.nip04_decrypt(self._uri.secret(), wallet, event.content)
            notification = nip47.parse_notification(text)
        except Exception:  # nostr-sdk's decryption error or MalformedEvent: not a payment we can read
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
        """Disconnect the notification listener."""
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
