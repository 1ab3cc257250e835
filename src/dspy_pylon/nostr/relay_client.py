"""A nostr-sdk client on a set of relays, used from the :class:`NostrLoop` thread (the I/O edge).

Routes each new event to the handler of the subscription it arrived on, after checking
its id and signature; counts what it drops. Publishing reports which relays failed and
succeeds if one accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from dspy_pylon.errors import MalformedEvent, RelayUnavailable, ResultTooLarge
from dspy_pylon.nostr import fast_ffi
from dspy_pylon.nostr.events import RawEvent, from_sdk

log = logging.getLogger("dspy_pylon.nostr")

Handler = Callable[[RawEvent, str], None]


@dataclass(frozen=True)
class Published:
    """Where an event went: relays that accepted it and why the others did not."""

    event_id: str
    accepted: tuple[str, ...]
    failed: dict[str, str] = field(default_factory=dict)


def _too_large(reasons: Sequence[str]) -> bool:
    return any(word in reason.lower() for reason in reasons for word in ("too large", "too big", "size", "exceed"))


def relay_options() -> Any:
    """The nostr-sdk ``RelayOptions`` pylon connects with.

    nostr-sdk retries a lost relay every ~10 s by default and backs off further; 5 s (its
    minimum) without back-off gets a restarted relay back twice as fast.
    """
    import nostr_sdk

    return nostr_sdk.RelayOptions().retry_interval(timedelta(seconds=5)).adjust_retry_interval(False)


class RelayClient:
    """One nostr-sdk ``Client`` on ``relays``. Create and use it on the NostrLoop thread only."""

    def __init__(self, relays: Sequence[str], *, connect_timeout: float = 3.0, ok_timeout: float = 5.0) -> None:
        self.relays = tuple(relays)
        self.connect_timeout = connect_timeout
        self.ok_timeout = ok_timeout
        self.dropped: Counter[str] = Counter()
        self._handlers: dict[str, tuple[Handler, Callable[[RawEvent], bool] | None]] = {}
        self._client: Any = None
        self._own: Any = None  # the SendEventTarget of our relays, built once
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> RelayClient:
        """Connect to every relay (waiting up to ``connect_timeout``) and start routing events."""
        import nostr_sdk

        fast_ffi.ensure()  # every event, filter and URL handed to nostr-sdk then crosses faster
        client = nostr_sdk.Client()
        options = relay_options()
        urls = []
        for url in self.relays:
            try:
                urls.append(nostr_sdk.RelayUrl.parse(url))
                await client.add_relay(urls[-1], opts=options)
            except Exception as exc:  # nostr-sdk raises its own error type for a bad URL
                raise RelayUnavailable(f"relay URL {url!r} is invalid: {exc}") from exc
        # Ours only, by name: relays added for one event elsewhere never get the others.
        self._own = nostr_sdk.SendEventTarget.to(urls)
        # Take the notification stream before any subscription, so no event is missed.
        notifications = client.notifications()
        # try_connect returns once every relay connected or failed: a refused port or an
        # unknown host fails at once, where connect(timeout) waits out the whole timeout for
        # it. connect() then keeps retrying the failed ones in the background.
        outcome = await client.try_connect(timedelta(seconds=self.connect_timeout))
        await client.connect()
        for url, why in outcome.failed.items():
            log.warning("relay %s is not reachable (%s); retrying in the background", url, why)
        self._client = client
        self._pump = asyncio.get_running_loop().create_task(self._route(notifications))
        return self

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was awaited."""
        return self._client is not None

    @property
    def client(self) -> Any:
        """The nostr-sdk client."""
        if self._client is None:
            raise RuntimeError("RelayClient.start() was not awaited")
        return self._client

    async def _route(self, notifications: Any) -> None:
        while True:
            notification = await notifications.next()
            if notification is None or notification.is_shutdown():
                return
            if not notification.is_new_event():
                continue
            routed = self._handlers.get(notification.subscription_id)
            if routed is None:
                self.dropped["no subscription"] += 1
                continue
            handler, wanted = routed
            event = notification.event
            raw = from_sdk(event, verify=False)
            # The signature is checked on what the subscriber wants: an event it drops unread
            # (a job for another provider) costs no verification.
            try:
                if wanted is not None and not wanted(raw):
                    continue
            except Exception:  # a filter's bug must not stop routing for everyone
                log.exception("event filter failed")
                continue
            if not event.verify():
                self.dropped["bad signature"] += 1
                continue
            try:
                handler(raw, str(notification.relay_url))
            except Exception:  # a handler bug must not stop routing for everyone
                log.exception("event handler failed")

    async def subscribe(
        self, filters: Sequence[Any], handler: Handler, wanted: Callable[[RawEvent], bool] | None = None
    ) -> str:
        """Subscribe with nostr-sdk ``Filter`` objects; ``handler(raw_event, relay_url)`` gets new
        events whose signature checks out. ``wanted``, if given, sees each event first, before
        its signature is checked (so it must not trust it), and drops those it returns False for."""
        import nostr_sdk

        output = await self.client.subscribe(nostr_sdk.ReqTarget.auto(list(filters)))
        self._handlers[output.id] = (handler, wanted)
        if not output.success:
            failures = "; ".join(f"{url}: {why}" for url, why in output.failed.items())
            log.warning("subscription reached no relay yet (%s); it is re-sent on reconnect", failures)
        return str(output.id)

    async def unsubscribe(self, subscription_id: str) -> None:
        """Close a subscription."""
        self._handlers.pop(subscription_id, None)
        await self.client.unsubscribe(subscription_id)

    async def publish(self, event: Any, ok_timeout: float | None = None) -> Published:
        """Send a signed event to every relay of ours; raises if none accepted it."""

        output = await self.client.send_event(
            event, target=self._own, ok_timeout=timedelta(seconds=self.ok_timeout if ok_timeout is None else ok_timeout)
        )
        accepted = tuple(str(url) for url in output.success)
        failed = {str(url): str(why) for url, why in output.failed.items()}
        # NIP-01: "duplicate:" means the relay already holds this very event - it is delivered.
        duplicates = tuple(url for url, why in failed.items() if why.strip().lower().startswith("duplicate"))
        if duplicates:
            accepted += duplicates
            failed = {url: why for url, why in failed.items() if url not in duplicates}
        if not accepted:
            reasons = "; ".join(f"{url}: {why}" for url, why in failed.items()) or "no relay connected"
            if _too_large(list(failed.values())):
                raise ResultTooLarge(f"relays refused the event as too large ({len(event.as_json())} bytes): {reasons}")
            raise RelayUnavailable(f"no relay accepted the event: {reasons}")
        if failed:
            log.info("event %s refused by %s", output.id.to_hex()[:12], ", ".join(failed))
        return Published(output.id.to_hex(), accepted, failed)

    async def publish_elsewhere(self, event: Any, relays: Sequence[str]) -> tuple[str, ...]:
        """Also send ``event`` to ``relays`` (not ours; e.g. those a job asked for): each added
        write-only (nothing is subscribed there) for this event, then dropped. Failures are
        logged, never raised; returns the relays that accepted it."""
        import nostr_sdk

        added = []
        try:
            urls = [nostr_sdk.RelayUrl.parse(url) for url in relays]
            for relay_url in urls:
                write_only = nostr_sdk.RelayCapabilities.write()
                if await self.client.add_relay(relay_url, capabilities=write_only, opts=relay_options()):
                    added.append(relay_url)
            await self.client.try_connect(timedelta(seconds=self.connect_timeout))
            target = nostr_sdk.SendEventTarget.to(urls)
            output = await self.client.send_event(event, target=target, ok_timeout=timedelta(seconds=self.ok_timeout))
            if output.failed:
                log.info("event %s not taken by %s", output.id.to_hex()[:12], ", ".join(map(str, output.failed)))
            return tuple(str(url) for url in output.success)
        except Exception as exc:  # best effort: these relays were asked for, ours already have it
            log.info("could not publish to %s: %s", ", ".join(relays), exc)
            return ()
        finally:
            for relay_url in added:
                try:
                    await self.client.remove_relay(relay_url)
                except Exception as exc:  # nostr-sdk raises its own error type
                    log.info("could not drop relay %s: %s", relay_url, exc)

    async def connected_relays(self) -> tuple[str, ...]:
        """The relays connected right now (an empty :meth:`fetch` from none of them means nothing)."""
        import nostr_sdk

        relays = await self.client.relays()
        return tuple(str(url) for url, relay in relays.items() if relay.status() == nostr_sdk.RelayStatus.CONNECTED)

    async def fetch(self, filters: Sequence[Any], timeout: float) -> list[RawEvent]:
        """Stored events matching ``filters`` (signature-checked), waiting at most ``timeout``."""
        import nostr_sdk

        events = await self.client.fetch_events(nostr_sdk.ReqTarget.auto(list(filters)), timedelta(seconds=timeout))
        found = []
        for event in events:
            try:
                found.append(from_sdk(event))
            except MalformedEvent:
                self.dropped["bad signature"] += 1
        return found

    async def close(self) -> None:
        """Disconnect and stop routing."""
        if self._client is not None:
            await self._client.shutdown()
        if self._pump is not None:
            self._pump.cancel()
