"""Every script under ``benchmarks/`` runs once in a quick mode, so none can rot.

The figures of a quick run mean nothing (a handful of iterations on a loaded machine);
what is asserted is that each script still works end to end against the real parts it
measures and prints its one JSON report line. Timing targets are not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

QUICK: dict[str, list[str]] = {
    "bolt11_decode.py": ["--rounds", "3"],
    "manifest_hash.py": ["--rounds", "2", "--predictors", "3", "--demos", "5"],
    "import_overhead.py": ["--rounds", "1"],
    "cli_startup.py": ["--rounds", "1"],
    "local_overhead.py": ["--iterations", "3", "--warmup", "1"],
    "trace_overhead.py": ["--rounds", "1", "--calls", "10", "--warmup", "0"],
    "hud_overhead.py": ["--rounds", "1", "--calls", "10", "--warmup", "0", "--latency-ms", "1"],
    "sandbox_overhead.py": ["--rounds", "2", "--warmup", "0"],
    # --profile too: its hooks into pylon's objects must not rot either.
    "swarm_roundtrip.py": ["--iterations", "3", "--warmup", "1", "--no-diagnostic", "--profile"],
    "paid_roundtrip.py": [
        *("--iterations", "3", "--warmup", "1", "--jobs", "8", "--inflight", "4", "--no-diagnostic", "--profile")
    ],
    "swarm_throughput.py": [
        "--jobs",
        "8",
        "--in-flight",
        "4",
        "--providers",
        "1",
        "--examples",
        "4",
        "--threads",
        "2",
        "--rounds",
        "1",
        "--no-diagnostic",
    ],
}


def test_every_benchmark_has_a_quick_mode() -> None:
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(QUICK), "add the new benchmark's quick arguments to QUICK"


@pytest.mark.parametrize("script", sorted(QUICK))
def test_benchmark_runs_in_quick_mode(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYLON_HOME": str(tmp_path / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *QUICK[script]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout[-2000:]
    report = json.loads(lines[0])
    assert report["benchmark"] == script.removesuffix(".py")
    if "--profile" in QUICK[script]:
        assert '"timeline_ms_p50"' in lines[0], "--profile added no timeline"
