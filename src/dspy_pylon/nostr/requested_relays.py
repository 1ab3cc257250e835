"""Which of the relays a job names (NIP-90's ``relays`` tag) a provider also publishes to.

NIP-90: providers SHOULD publish responses to the relays the request lists. A provider does,
within bounds: a few per job, ``ws``/``wss`` only, never one it already uses, and - unless
its settings allow local relays - only relays on public addresses: a stranger's job must not
make a provider connect into the provider's own network. URLs are read the way nostr-sdk
will connect to them (``ws://2130706433`` is ``ws://127.0.0.1``), and host names are resolved
first (:func:`public_only`, at the edge) so a name pointing at a private address is refused.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["MAX_PER_JOB", "public_only", "usable_relays"]

#: The most relays of one job's ``relays`` tag a provider publishes to besides its own.
MAX_PER_JOB = 3


@functools.lru_cache(maxsize=1024)  # a customer names the same relays on every job; a parse crosses the FFI
def _normalised(url: str) -> str | None:
    """``url`` as nostr-sdk reads it (None when it is not a ws/wss relay URL)."""
    import nostr_sdk

    try:
        parsed = str(nostr_sdk.RelayUrl.parse(url))
    except Exception:  # nostr-sdk raises its own error type
        return None
    try:
        parts = urlsplit(parsed)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return parsed if parts.scheme in ("ws", "wss") and parts.hostname else None


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".")


def _public_address(host: str) -> bool | None:
    """Whether ``host`` is a public IP address; None when it is a name."""
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return None


def usable_relays(
    requested: Sequence[str], own: Sequence[str], *, allow_local: bool = False, limit: int = MAX_PER_JOB
) -> tuple[str, ...]:
    """The relays of ``requested`` to publish to besides ``own`` (pure): at most ``limit``, in
    order, normalised. Names still need :func:`public_only` unless ``allow_local``."""
    ours = {(_normalised(url) or url).rstrip("/") for url in own}
    usable: list[str] = []
    for raw in requested:
        url = _normalised(raw)
        if url is None or url.rstrip("/") in ours or url in usable:
            continue
        host = _host(url)
        if not allow_local and (host == "localhost" or host.endswith((".localhost", ".local", ".internal"))):
            continue
        if not allow_local and _public_address(host) is False:
            continue
        usable.append(url)
        if len(usable) == limit:
            break
    return tuple(usable)


async def public_only(urls: Sequence[str], timeout: float = 2.0) -> tuple[str, ...]:
    """``urls`` whose host names resolve to public addresses only (each looked up in a thread)."""

    async def public(url: str) -> bool:
        host = _host(url)
        literal = _public_address(host)
        if literal is not None:
            return literal
        try:
            infos = await asyncio.wait_for(asyncio.to_thread(socket.getaddrinfo, host, None), timeout)
        except (OSError, TimeoutError):
            return False
        return bool(infos) and all(_public_address(str(info[4][0])) for info in infos)

    kept = await asyncio.gather(*(public(url) for url in urls))
    return tuple(url for url, ok in zip(urls, kept, strict=True) if ok)
