"""Selling sandboxed execution as an operator sets it up: ``pylon serve --sandbox`` with prices,
``pylon wallet dev``, a real relay, each its own process; the customer is a PylonSandboxProvider
in this process, paying over NWC."""

from __future__ import annotations

from pathlib import Path

import nostr_sdk

from dspy_pylon.local.embedded import EmbeddedLlama, free_port
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.sandbox import PylonSandboxProvider, SandboxRunRequest, SandboxStatus

from .processes import DevWalletProcess, ProviderProcess, RelayProcess, _first_line

BASE, PER_CPU_S = 700, 3
TINY = {"cpus": 1, "memory_mb": 256, "timeout_secs": 20, "disk_mb": 64}


def test_a_sandbox_node_process_is_paid_and_runs_the_job(tiny_server: EmbeddedLlama, tmp_path: Path) -> None:
    relay = RelayProcess(free_port())
    wallet = DevWalletProcess(tmp_path / "wallet", relay.url, {"provider": 0, "customer": 50_000})
    provider = None
    try:
        provider = ProviderProcess(
            tmp_path / "provider",
            relay.url,
            tiny_server.url,
            "--sandbox",
            "--sandbox-base-msats",
            str(BASE),
            "--sandbox-cpu-second-msats",
            str(PER_CPU_S),
            env={"PYLON_NWC_URI": wallet.uri("provider")},
        )
        sandbox_line = _first_line(provider.proc, "provider npub1")
        assert "serving kind 5930" in sandbox_line and f"price {BASE} msats + {PER_CPU_S} msats" in sandbox_line
        client = PylonSandboxProvider(
            (relay.url,),
            nostr_sdk.Keys.generate(),
            providers=(provider.pubkey,),
            nwc_uri=wallet.uri("customer"),
            home=tmp_path / "customer",
            timeout=40,
        )
        with client:
            request = SandboxRunRequest(commands=[{"cmd": "python3 -c 'print(sum(range(10)))'"}], resources=TINY)
            outcome = client.run(request)
        assert outcome.status is SandboxStatus.SUCCESS and outcome.response.runs[0].stdout_preview == "45\n"
        assert outcome.cost_msats == BASE + PER_CPU_S * 20
    finally:
        out = provider.terminate() if provider is not None else ""
        wallet.stop()
        relay.stop()
    assert "1 jobs answered (1 results, 0 errors)" in out
    earned = SpendLedger(tmp_path / "provider" / "ledger.sqlite")
    assert earned.total_paid_msats("earned") == BASE + PER_CPU_S * 20
