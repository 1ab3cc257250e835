"""Import cost of ``dspy_pylon`` over ``dspy`` alone, in fresh interpreters.

Each sample is a new ``python -c`` process that times ``import dspy`` or
``import dspy_pylon; dspy_pylon.LM`` (pylon's exports load on first use) with
``time.perf_counter`` (wall, the figure the target applies to) and ``time.process_time``
(CPU, reported beside it); interpreter start-up is not counted. ``import dspy`` and
``import dspy_pylon`` (which imports dspy) alternate, the pair order flipping every
round, after one untimed warm-up of each (so both read a warm page cache and
``__pycache__``). ``--breakdown`` adds the modules pylon's import loads beyond dspy's,
by cumulative ``-X importtime`` microseconds (one extra run of each, not timed above).

Prints one JSON line; exit code 0 whether or not the target is met.

    .venv/bin/python benchmarks/import_overhead.py [--rounds 15] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from _common import emit, machine, median, percentile, rnd, rotated

TARGET_DIFF_MS = 150.0
MODULES = {"dspy": "dspy", "pylon": "dspy_pylon"}
# What a user pays before the first call: dspy_pylon's exports load on first use, so its
# import alone costs nothing; touching ``LM`` loads what a program needs.
STATEMENTS = {"dspy": "import dspy", "dspy_pylon": "import dspy_pylon; dspy_pylon.LM"}
SNIPPET = (
    "import time; t, c = time.perf_counter(), time.process_time(); {statement}; "
    "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)"
)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no network fetch inside the timed import
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def time_import(module: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU milliseconds ``import module`` takes in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET.format(statement=STATEMENTS[module])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def importtime(module: str, env: dict[str, str]) -> dict[str, int]:
    """Cumulative microseconds per top-level-package module from ``-X importtime``."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", STATEMENTS[module]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cumulative: dict[str, int] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:") :].split("|")
        cumulative.setdefault(name.strip(), int(cum_us))
    return cumulative


def breakdown(env: dict[str, str], top: int = 8) -> list[dict[str, Any]]:
    """The slowest top-level modules pylon's import loads that dspy's does not."""
    base = importtime(MODULES["dspy"], env)
    ours = importtime(MODULES["pylon"], env)
    # Top-level names only (their cumulative time covers their submodules); pylon's own
    # package is left out, since its cumulative time includes dspy itself.
    extra = {name: us for name, us in ours.items() if name not in base and "." not in name}
    extra.pop(MODULES["pylon"], None)
    ordered = sorted(extra.items(), key=lambda item: item[1], reverse=True)[:top]
    own = {name: us for name, us in ours.items() if name.startswith(MODULES["pylon"] + ".")}
    slow_own = sorted(own.items(), key=lambda item: item[1], reverse=True)[:top]
    return [{"module": name, "cumulative_ms": rnd(us / 1000, 1)} for name, us in [*ordered, *slow_own]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed imports of each module")
    parser.add_argument("--breakdown", action="store_true", help="also list the modules pylon adds")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    env = child_env()
    names = list(MODULES)
    for name in names:  # warm-up: page cache and bytecode
        time_import(MODULES[name], env)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in rotated(names, i):
            wall_ms, cpu_ms = time_import(MODULES[name], env)
            samples[name].append(wall_ms)
            cpu[name].append(cpu_ms)
    med = {name: median(samples[name]) for name in names}
    diff = med["pylon"] - med["dspy"]
    paired = median([p - d for p, d in zip(samples["pylon"], samples["dspy"], strict=True)])
    report: dict[str, Any] = {
        "benchmark": "import_overhead",
        "rounds": args.rounds,
        "median_ms": {name: rnd(med[name], 1) for name in names},
        "p90_ms": {name: rnd(percentile(samples[name], 90), 1) for name in names},
        "pylon_minus_dspy_ms": rnd(diff, 1),
        "ratio_pylon_over_dspy": rnd(med["pylon"] / med["dspy"], 4),
        "targets": {"pylon_minus_dspy_ms<=": TARGET_DIFF_MS},
        "met": {"pylon_minus_dspy_ms<=": diff <= TARGET_DIFF_MS},
        "paired_median_ms": {"pylon_minus_dspy": rnd(paired, 1)},
        # CPU time of the importing process: less exposed to other load than wall time.
        "cpu_median_ms": {name: rnd(median(cpu[name]), 1) for name in names},
        "cpu_pylon_minus_dspy_ms": rnd(median(cpu["pylon"]) - median(cpu["dspy"]), 1),
        "machine": machine(),
    }
    if args.breakdown:
        report["pylon_adds"] = breakdown(env)
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
