"""Finding providers: NIP-89 announcements (kind 31990, ``#k``) read into provider records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.nip89 import ANNOUNCEMENT_KIND, Announcement
from dspy_pylon.nostr.nip90 import TEXT_GENERATION
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay import pricing


@dataclass(frozen=True)
class ProviderRecord:
    """A provider as announced: key, name, models, price per job (msats), relays."""

    pubkey: str
    name: str
    models: tuple[str, ...]
    #: None when the provider announced no price: unknown, not free.
    price_msats: int | None
    relays: tuple[str, ...]
    kinds: tuple[int, ...]
    announced_at: int
    prices: tuple[tuple[str, int], ...] = ()
    #: Chat transcript formats it reads, and what its backend honours (``json_schema``,
    #: ``json_object``, ``tools``); empty for providers that do not say.
    formats: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    #: The encryption schemes it says it reads (none named: NIP-04 at most).
    encryption: tuple[Cipher, ...] = ()

    def price_for(self, model: str | None) -> int | None:
        """The announced price (msats per job) for ``model``: its own price if listed, else the
        default; None when the provider announced neither (unknown, not free)."""
        return pricing.price_for(model, self.price_msats, self.prices)

    @property
    def npub(self) -> str:
        """The provider's public key as an npub."""
        import nostr_sdk

        return str(nostr_sdk.PublicKey.parse(self.pubkey).to_bech32())


def records_from(announcements: Sequence[Announcement], kind: int) -> list[ProviderRecord]:
    """The newest announcement per provider that serves ``kind`` (pure)."""
    newest: dict[str, Announcement] = {}
    for a in announcements:
        if kind in a.kinds and (a.pubkey not in newest or a.created_at > newest[a.pubkey].created_at):
            newest[a.pubkey] = a
    return sorted(
        (
            ProviderRecord(
                a.pubkey,
                a.name,
                a.models,
                a.price_msats,
                a.relays,
                a.kinds,
                a.created_at,
                a.prices,
                a.formats,
                a.features,
                a.encryption,
            )
            for a in newest.values()
        ),
        # Cheapest first; a provider of unknown price after every priced one, never as free.
        key=lambda r: (r.price_msats is None, r.price_msats or 0, -r.announced_at),
    )


async def adiscover(relays: Sequence[str], kind: int = TEXT_GENERATION, timeout: float = 3.0) -> list[ProviderRecord]:
    """Providers announcing ``kind`` on ``relays`` (cheapest first, unknown prices last).
    Malformed announcements are skipped."""
    import nostr_sdk

    client = await RelayClient(tuple(relays)).start()
    try:
        filters = [
            nostr_sdk.Filter()
            .kind(nostr_sdk.Kind(ANNOUNCEMENT_KIND))
            .custom_tag(nostr_sdk.SingleLetterTag.from_byte(ord("k")), str(kind))
        ]
        events = await client.fetch(filters, timeout)
    finally:
        await client.close()
    announcements = []
    for event in events:
        try:
            announcements.append(Announcement.from_event(event))
        except MalformedEvent:
            continue
    return records_from(announcements, kind)


def discover(relays: Sequence[str], kind: int = TEXT_GENERATION, timeout: float = 3.0) -> list[ProviderRecord]:
    """Providers announcing ``kind`` on ``relays``, read through NIP-89 (blocking)."""
    return NostrLoop.shared().run(adiscover(relays, kind, timeout), timeout + 10)
