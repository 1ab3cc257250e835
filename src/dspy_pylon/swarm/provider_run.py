"""``pylon serve``'s main coroutine: one provider node, served until a signal or ``once`` jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.swarm.provider import ProviderNode
from dspy_pylon.swarm.provider_settings import ProviderSettings

__all__ = ["run_provider"]


async def run_provider(
    keys: Any,
    settings: ProviderSettings,
    once: int | None = None,
    on_started: Callable[[ProviderNode], None] | None = None,
    wallet: NwcWallet | None = None,
) -> ProviderNode:
    """Start a node and serve until SIGINT/SIGTERM (or ``once`` jobs); returns the stopped node."""
    import signal

    node = ProviderNode(keys, settings, wallet=wallet)
    await node.start()
    try:
        if on_started is not None:
            on_started(node)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, node.request_stop)
    except BaseException:
        await node.close()  # started, never served: serve would have released it
        raise
    await node.serve(once)
    return node
