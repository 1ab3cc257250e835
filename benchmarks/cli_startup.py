"""Wall time of the ``pylon`` CLI's quick commands, against a bare interpreter start.

Each sample is a fresh process: ``pylon --help``, ``pylon spend``, ``pylon identity`` (on a
throw-away ``PYLON_HOME`` with a new identity), ``pylon init`` (in a new empty home each
time) and the baseline ``python -c pass``, round-robin with the order rotating every round,
after one untimed warm-up of each. None of these commands may import DSPy (nor, since
``identity`` and ``init`` derive NIP-06 keys without it, nostr-sdk); the script fails
(exit 1) if one does. Target: each at most 300 ms at the median.

Prints one JSON line; exit code 0 whether or not the target is met.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, machine, median, percentile, rnd, rotated

TARGET_MS = 300.0
TARGETED = ("help", "spend", "identity", "init")
# Commands run in a new, empty PYLON_HOME each time (init refuses to overwrite an identity).
FRESH_HOME = frozenset({"init"})
PYLON = Path(sys.executable).with_name("pylon")
COMMANDS = {
    "bare_python": [sys.executable, "-c", "pass"],
    "help": [str(PYLON), "--help"],
    "spend": [str(PYLON), "spend"],
    "identity": [str(PYLON), "identity"],
    "init": [str(PYLON), "init"],
}


def run(argv: list[str], env: dict[str, str]) -> float:
    """Wall milliseconds of one process; it must succeed."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """Which of DSPy and nostr-sdk the command imports (read from ``-X importtime``)."""
    command = [sys.executable, "-X", "importtime", "-m", "dspy_pylon.cli", *argv[1:]]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    # "import time: self | cumulative | <indent>package": nested imports count too.
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    return [name for name in ("dspy", "nostr_sdk") if name in imported]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed runs of each command")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    with tempfile.TemporaryDirectory(prefix="pylon-cli-bench-") as home:
        env = {**os.environ, "PYLON_HOME": home, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        subprocess.run([str(PYLON), "init"], env=env, check=True, capture_output=True)

        def env_for(name: str) -> dict[str, str]:
            return {**env, "PYLON_HOME": tempfile.mkdtemp(dir=home)} if name in FRESH_HOME else env

        heavy = {
            name: found
            for name, cmd in COMMANDS.items()
            if name != "bare_python" and (found := heavy_imports(cmd, env_for(name)))
        }
        if heavy:
            print(f"these commands import what they must not: {heavy}", file=sys.stderr)
            return 1
        names = list(COMMANDS)
        for name in names:
            run(COMMANDS[name], env_for(name))
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.rounds):
            for name in rotated(names, i):
                samples[name].append(run(COMMANDS[name], env_for(name)))
    med = {name: median(values) for name, values in samples.items()}
    emit(
        {
            "benchmark": "cli_startup",
            "rounds": args.rounds,
            "median_ms": {name: rnd(value, 1) for name, value in med.items()},
            "p90_ms": {name: rnd(percentile(values, 90), 1) for name, values in samples.items()},
            "ratio_over_bare_python": {
                name: rnd(med[name] / med["bare_python"], 2) for name in names if name != "bare_python"
            },
            "imports_dspy": False,
            "imports_nostr_sdk": False,
            "targets": {f"{name}_ms<=": TARGET_MS for name in TARGETED},
            "met": {f"{name}_ms<=": med[name] <= TARGET_MS for name in TARGETED},
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
