"""Which encryption a provider reads, from its NIP-89 announcement: looked up once per provider.

NIP-90 names NIP-04 for private jobs; NIP-44 is only for a provider that says it reads it
(:attr:`dspy_pylon.nostr.nip89.Announcement.cipher`). A provider with no announcement on
the relays gets NIP-04, which every peer tried reads.
"""

from __future__ import annotations

import logging

from dspy_pylon.errors import MalformedEvent, PylonError
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip89 import ANNOUNCEMENT_KIND, Announcement
from dspy_pylon.nostr.nip90 import TEXT_GENERATION
from dspy_pylon.nostr.relay_client import RelayClient

__all__ = ["PeerCiphers"]

log = logging.getLogger("dspy_pylon.swarm")


class PeerCiphers:
    """The scheme to encrypt jobs to each provider with, remembered once a relay answered."""

    def __init__(self, kind: int = TEXT_GENERATION, timeout: float = 2.0) -> None:
        self.kind = kind
        self.timeout = timeout
        self._known: dict[str, Cipher] = {}

    async def cipher_for(self, client: RelayClient, provider: str) -> Cipher:
        """The scheme for ``provider``, reading its newest announcement of :attr:`kind` the first time."""
        known = self._known.get(provider)
        if known is not None:
            return known
        import nostr_sdk

        filters = [
            nostr_sdk.Filter().kind(nostr_sdk.Kind(ANNOUNCEMENT_KIND)).author(nostr_sdk.PublicKey.parse(provider))
        ]
        try:
            reached = await client.connected_relays()
            events = await client.fetch(filters, self.timeout)
        except (PylonError, ValueError) as exc:
            log.info("announcement of %s not read (%s): NIP-04 this time", provider[:12], exc)
            return Cipher.NIP04
        announced: list[Announcement] = []
        for event in events:
            try:
                announcement = Announcement.from_event(event)
            except MalformedEvent:
                continue
            if self.kind in announcement.kinds and announcement.pubkey == provider:
                announced.append(announcement)
        cipher = max(announced, key=lambda a: a.created_at).cipher if announced else Cipher.NIP04
        if reached:  # an empty answer from no relay says nothing about the provider
            self._known[provider] = cipher
        return cipher
