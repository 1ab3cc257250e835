"""The embedded Nostr relay (nostr-sdk ``LocalRelay``): ``pylon relay`` and the demo's default."""

from __future__ import annotations

from typing import Any

# The default rate limit throttles after ~30 jobs; a local relay serves one user's swarm.
MAX_REQS = 100_000
NOTES_PER_MINUTE = 1_000_000


async def start_embedded_relay(host: str = "127.0.0.1", port: int | None = None) -> tuple[Any, str]:
    """Start a relay on ``host`` (a free port unless given); returns (relay, ws:// URL).

    Keep a reference to the relay: it stops when garbage-collected.
    """
    import nostr_sdk

    builder = nostr_sdk.LocalRelayBuilder().addr(host)
    if port:
        # Only a real port: `.port(0)` makes the relay report ":0" as its URL.
        builder = builder.port(port)
    relay = builder.rate_limit(nostr_sdk.RateLimit(max_reqs=MAX_REQS, notes_per_minute=NOTES_PER_MINUTE)).build()
    await relay.run()
    return relay, str(await relay.url())
