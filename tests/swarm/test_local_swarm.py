"""The LocalSwarm harness: a real relay, wallet and provider nodes, paying LMs, clean shutdown."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.testing import LocalSwarm


def test_a_local_swarm_serves_paid_calls_and_stops_cleanly(tmp_path: Path, tiny_server: EmbeddedLlama) -> None:
    swarm = LocalSwarm(tmp_path, providers=2, price_msats=1_000, backend_url=tiny_server.url)
    assert not tmp_path.joinpath("dev-wallet.sqlite").exists()  # constructing does nothing
    with swarm:
        assert len(swarm.nodes) == 2 and swarm.url.startswith("ws://")
        lm = swarm.lm(bid_msats=2_000, max_tokens=4, cache=False)
        lm("Say hi")
        lm("Say hi again")
        assert lm.total_spent_msats() == 2_000
        assert swarm.balance("customer") == 100_000 - 2_000
        assert swarm.balance("provider-0") + swarm.balance("provider-1") == 2_000
        ledger = SpendLedger(swarm.ledger_path)
        assert [entry.state for entry in ledger.entries()] == ["done", "done"]
        ledger.close()
        lm.close()
    assert swarm.nodes == []
    assert not [t for t in threading.enumerate() if t.name == "pylon-local-swarm"]  # its loop is gone


def test_a_local_swarm_refuses_a_nonsense_size(tmp_path: Path) -> None:
    with pytest.raises(pylon.ConfigError, match="providers"):
        LocalSwarm(tmp_path, providers=-1)
    swarm = LocalSwarm(tmp_path)
    with pytest.raises(pylon.ConfigError, match="not started"):
        swarm.customer_uri()


def test_a_failing_step_of_close_does_not_leave_the_rest_running(tmp_path: Path) -> None:
    """The store's close fails: close() still shuts the relay and stops the swarm's loop, then
    raises that failure."""
    import socket

    swarm = LocalSwarm(tmp_path, providers=0).start()
    port = int(swarm.url.rsplit(":", 1)[1])
    thread = swarm.loop.thread
    store = swarm.wallet_store
    real_close = store.close

    def broken_close() -> None:
        real_close()
        raise pylon.StoreError("disk gone")

    store.close = broken_close  # type: ignore[method-assign]
    with pytest.raises(pylon.StoreError, match="disk gone"):
        swarm.close()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert not thread.is_alive()
    with pytest.raises(pylon.ConfigError, match="not started"):
        swarm.customer_uri()
