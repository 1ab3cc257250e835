"""The swarm fixtures (real relays, provider nodes, customer LMs) for the interop tests."""

from tests.swarm.conftest import (  # noqa: F401 - fixtures, found by name
    customer_keys,
    dev_wallet,
    local_swarm,
    relay_loop,
    relay_url,
    start_provider,
    swarm_lm,
)
