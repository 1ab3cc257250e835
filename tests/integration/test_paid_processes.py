"""Paying the swarm as a user sets it up: ``pylon wallet dev``, ``pylon serve --price-msats`` and
``pylon spend`` as separate processes on a real relay; the customer is a PylonLM in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nostr_sdk

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama, free_port
from dspy_pylon.pay.ledger import SpendLedger

from .processes import DevWalletProcess, ProviderProcess, RelayProcess

PRICE = 1_700


def _cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dspy_pylon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYLON_HOME": str(home), "COLUMNS": "200", **env},
    )


def test_priced_provider_process_is_paid_through_the_dev_wallet(tiny_server: EmbeddedLlama, tmp_path: Path) -> None:
    relay = RelayProcess(free_port())
    wallet = DevWalletProcess(tmp_path / "wallet", relay.url, {"provider": 0, "customer": 50_000})
    provider = None
    try:
        assert "no real money" in wallet.label
        uri_file = tmp_path / "wallet" / "dev-wallet" / "provider.nwc"
        assert oct(uri_file.stat().st_mode & 0o777) == "0o600"
        provider = ProviderProcess(
            tmp_path / "provider",
            relay.url,
            tiny_server.url,
            "--price-msats",
            str(PRICE),
            env={"PYLON_NWC_URI": wallet.uri("provider")},
        )
        assert f"price {PRICE} msats" in provider.banner
        config = pylon.PylonConfig(
            venue=pylon.Swarm(relays=(relay.url,), providers=(provider.pubkey,), bid_msats=2_000, auto_pay=True),
            timeout=30,
        )
        key = nostr_sdk.Keys.generate().secret_key().to_hex()
        lm = pylon.PylonLM.swarm(key, config, nwc_uri=wallet.uri("customer"), cache=False, max_tokens=4)
        for i in range(3):
            lm(f"question {i}")
        assert lm.total_spent_msats() == 3 * PRICE == sum(entry["cost"] for entry in lm.history)

        balance = _cli("wallet", "balance", home=tmp_path / "x", PYLON_NWC_URI=wallet.uri("customer"))
        assert balance.returncode == 0, balance.stderr
        assert f"balance: {50_000 - 3 * PRICE} msats" in balance.stdout

        spent = _cli("spend", "--by", "provider", home=Path(os.environ["PYLON_HOME"]))
        assert spent.returncode == 0, spent.stderr
        assert f"total paid: {3 * PRICE} msats" in spent.stdout and provider.pubkey[:12] in spent.stdout
    finally:
        out = provider.terminate() if provider is not None else ""
        wallet.stop()
        relay.stop()
    assert "3 jobs answered (3 results, 0 errors)" in out
    earned = SpendLedger(tmp_path / "provider" / "ledger.sqlite")
    assert earned.total_paid_msats("earned") == 3 * PRICE
    assert {entry.state for entry in earned.entries("earned")} == {"done"}
    listing = _cli("spend", "--earned", home=tmp_path / "provider")
    assert f"total earned: {3 * PRICE} msats" in listing.stdout


def test_priced_provider_without_a_wallet_refuses_to_start(tiny_server: EmbeddedLlama, tmp_path: Path) -> None:
    home = tmp_path / "provider"
    assert _cli("init", home=home).returncode == 0
    result = _cli("serve", "--relay", "ws://127.0.0.1:9", "--backend", "llamacpp", "--price-msats", "1000", home=home)
    assert result.returncode != 0
    assert "needs a wallet" in result.stderr and "Traceback" not in result.stderr
