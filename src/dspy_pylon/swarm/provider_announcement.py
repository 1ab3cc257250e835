"""What a provider node announces (NIP-89, kind 31990), from its settings and its backend."""

from __future__ import annotations

from collections.abc import Sequence

from dspy_pylon import capabilities as caps_mod
from dspy_pylon.local.backends import public_model_name
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import TEXT_GENERATION
from dspy_pylon.sandbox.wire import SANDBOX_REQUEST_KIND, SandboxOffer
from dspy_pylon.swarm.chat_job import FORMATS
from dspy_pylon.swarm.provider_settings import ProviderSettings

__all__ = ["node_announcement", "sandbox_announcement"]


def node_announcement(
    settings: ProviderSettings, models: Sequence[str], capabilities: caps_mod.Capabilities
) -> Announcement:
    """The announcement of a node serving ``models`` with a backend that honours ``capabilities``.

    Models and priced models by their public names (a model file's name, never its path). It
    names both encryption schemes: the node reads either and answers in the one used.
    """
    return Announcement(
        identifier=settings.identifier,
        kinds=(TEXT_GENERATION,),
        name=settings.name,
        about=settings.about,
        models=tuple(dict.fromkeys(public_model_name(m) for m in models)),
        price_msats=settings.price_msats,
        relays=settings.relays,
        prices=tuple(sorted((public_model_name(m), price) for m, price in settings.prices.items())),
        formats=FORMATS,
        features=caps_mod.feature_names(capabilities),
        encryption=(Cipher.NIP44, Cipher.NIP04),
        max_tokens_default=settings.max_tokens_default,
        max_tokens_cap=settings.max_tokens_cap,
    )


def sandbox_announcement(settings: ProviderSettings, offer: SandboxOffer) -> Announcement:
    """The announcement of the node's sandboxed execution (kind 5930): its profiles, prices
    (base per job, per CPU-second), network policies and runtime in ``content["sandbox"]``."""
    return Announcement(
        identifier=f"pylon-{SANDBOX_REQUEST_KIND}",
        kinds=(SANDBOX_REQUEST_KIND,),
        name=settings.name,
        about="Sandboxed code execution (bubblewrap, cgroups, seccomp) by dspy-pylon",
        price_msats=offer.base_msats,
        relays=settings.relays,
        encryption=(Cipher.NIP44, Cipher.NIP04),
        sandbox=offer.to_meta(),
    )
