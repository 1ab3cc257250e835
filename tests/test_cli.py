"""The ``pylon`` command: ``--version`` and the demo as their own processes (the real entry point),
the rest in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import dspy_pylon as pylon
from tests.cli_run import run_pylon


def _pylon(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dspy_pylon.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_version() -> None:
    result = _pylon("--version")
    assert result.returncode == 0
    assert pylon.__version__ in result.stdout


def test_local_detect_shows_every_backend(closed_backends: dict[str, str]) -> None:
    result = run_pylon("local", "detect")
    assert result.returncode == 0, result.stderr
    for name in ("ollama", "apple-fm", "llamacpp"):
        assert name in result.stdout
    for url in closed_backends.values():
        assert url in result.stdout


def test_local_detect_finds_a_running_server(llamacpp_url: str) -> None:
    result = run_pylon("local", "detect")
    assert result.returncode == 0
    line = next(line for line in result.stdout.splitlines() if llamacpp_url in line)
    assert "yes" in line


def test_serve_refuses_a_missing_model_file(tmp_path: object) -> None:
    result = run_pylon("local", "serve", "--model", "/nonexistent/model.gguf")
    assert result.returncode != 0
    assert "model file not found" in result.stderr


@pytest.mark.smollm2
def test_demo_runs_end_to_end() -> None:
    result = _pylon("demo", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "embedded llama.cpp at http://127.0.0.1:" in out
    assert re.search(r"live HUD at http://127\.0\.0\.1:\d+/ — open it", out)
    hud = re.search(r"HUD: (\d+) events shown, 0 dropped", out)
    assert hud is not None and int(hud.group(1)) > 200  # the whole run, compile included
    assert out.count("local/embedded") == 5
    assert "structured output (JSONAdapter, schema enforced by embedded): country=" in out
    assert (
        "structured output (JSONAdapter, schema enforced by the provider's llama.cpp, sent in a pylon.chat.v2 job): "
        "country=" in out
    )
    # The compile part: measured before and after, saved signed, verified, reloaded, tamper refused.
    scores = re.search(r"compiled: plural_correct (\d\.\d\d) → (\d\.\d\d) \(median of 2 rollouts", out)
    assert scores is not None, out[-3000:]
    assert float(scores.group(2)) > float(scores.group(1)) + 0.3  # three demos teach the 135M model the format
    assert "compiled_id" in out and "BootstrapFewShot" in out and "score before" in out
    assert re.search(r"verified, reloaded: compiled_id [0-9a-f]{16}… — lamp → ", out)
    assert "one byte of program.json changed (cats → bats): IntegrityError" in out
    assert "relay at ws://127.0.0.1:" in out and "serving kinds 5050 and 5930 (sandbox)" in out
    # The swarm part published as receipts, rebuilt from the relay and verified.
    assert re.search(
        r"receipts: 8 signed kind-3590 events \(one per LM call, 1 structure, 1 index, the summary [0-9a-f]{16}…\)", out
    )
    assert re.search(r"rebuilt from the relay \(\d+ nodes, identical to the recorded one\)", out)
    assert out.count("provider ") >= 5 and "verified: 5 job results signed by the provider" in out
    assert "costs add up to 7500 msats" in out
    # The whole run traced: the paid LM calls' cost adds up to what the ledger paid.
    trace = re.search(
        r"trace: (\d+) nodes in \d+ runs, (\d+) LM calls, (\d+) tokens, (\d+) msats → (\S+)/graph.json", out
    )
    assert trace is not None, out[-2000:]
    assert int(trace.group(2)) >= 40 and int(trace.group(3)) > 0 and int(trace.group(4)) == 20700
    assert out.count("swarm/nip90") == 10  # the swarm part and the hybrid part
    assert out.count("local failed: NoLocalBackend") == 5
    assert out.count("5 calls") == 3
    # Local calls are free; every swarm call (hybrid included) paid the priced provider.
    assert out.count("spent 0 msats") == 1 and out.count("spent 7500 msats") == 2
    assert out.count("1500 msat") >= 20  # the cost column and the spend ledger's paid column
    assert "development wallet — no real money" in out
    assert "BudgetExceeded: a bid of 2000 msats does not fit in the" in out
    assert "private job to provider" in out and "(nip44, the scheme its announcement names), 1500 msats" in out
    # Refine: the local model's deterministic answer falls short, the paid swarm gets one attempt.
    assert "pylon.Refine — local first, the paid swarm as fallback" in out
    assert re.search(r"1\s+primary pylon:local\s+0\.0\s+0 msats", out)
    assert re.search(r"2\s+fallback pylon:swarm\s+[01]\.0\s+1500 msats", out)
    assert re.search(r"Refine: 2 attempts, .*1500 msats", out)
    # The sandbox job: the small project's suite run on the provider node, billed before it ran.
    assert "serving kinds 5050 and 5930 (sandbox)" in out
    assert re.search(
        r"success\s+python3 -m unittest -v 2>&1\s+0\s+\d+ ms\s+\d+ ms\s+\d+ KiB\s+1200 msat\s+Ran 3 tests", out
    )
    assert re.search(r"sandbox result verified \(\d+ checks: provenance, output hashes, status from evidence\)", out)
    assert "1000 + 10 x 1 CPU x 20 s = 1200 msats" in out
    # Ten question jobs, the structured one, the private one, the Refine's fallback attempt, the sandbox job.
    assert "spend ledger — 14 jobs, 20700 msats paid" in out
    assert "customer 79300 msats" in out and "provider 20700 msats" in out
