"""What running a command in pylon's sandbox costs: ``python3 -c pass`` on the host, through the
isolated executor, and as a sandbox job over the swarm, against the swarm's own overhead on
inference, in one run (one JSON line).

One :class:`dspy_pylon.testing.LocalSwarm` (embedded relay, development wallet) holds one free
provider node selling sandboxed execution (``SandboxOffer()``) and serving the tiny deterministic
test model on one embedded llama.cpp server (xllamacpp), all in this process, as in
``swarm_roundtrip.py``. Each round runs five contenders, the order rotating, after a warm-up:

* ``direct``    - ``subprocess.run([python3, "-c", "pass"])`` on the host, ``python3`` being the
  interpreter the sandbox finds on its own ``PATH`` (``/usr/bin/python3`` here: a ``python3``
  from the caller's ``PATH`` may be a pyenv shim, tens of ms of shell before Python starts).
* ``local``     - ``SandboxExecutor().run(request)``: bubblewrap, cgroups, seccomp, the job's tmpfs.
* ``swarm``     - ``PylonSandboxProvider(...).run(request)`` targeted at the node: the kind 5930
  job, the node's admission and executor run, the kind 6930 result and the customer's checks.
* ``lm_local``  - a ``pylon:local`` LM on the same llama.cpp server (``max_tokens=1``).
* ``lm_swarm``  - ``swarm.lm(bid_msats=0)`` on the same node and server, same prompt.

Reported (medians, ms): ``local_added_ms = local - direct`` (target < 100),
``swarm_added_ms = swarm - local`` (what the swarm adds to a sandbox job) and
``inference_swarm_added_ms = lm_swarm - lm_local`` (what it adds to an LM call: the swarm call
minus a direct call on the same backend, ``swarm_roundtrip.py``'s ``swarm_minus_local_median``),
and their ``ratio`` (target <= 2).

Prints one JSON line. Exit code 0 whether or not the targets are met (a measurement);
1 only when the set-up or the checks fail.

    .venv/bin/python benchmarks/sandbox_overhead.py [--rounds 15] [--warmup 2]
"""

from __future__ import annotations

import os

# Before dspy is imported: LiteLLM must not fetch its cost map over the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dspy
import nostr_sdk

import dspy_pylon as pylon
from _common import emit, machine, median, rnd, rotated
from dspy_pylon.sandbox import PylonSandboxProvider, SandboxExecutor, SandboxOffer, SandboxRunRequest
from dspy_pylon.sandbox.bwrap import PATH as SANDBOX_PATH
from dspy_pylon.testing import LocalSwarm
from dspy_pylon.testing.tiny_gguf import write_tiny_gguf

TARGET_LOCAL_ADDED_MS = 100
TARGET_RATIO = 2.0
NAMES = ("direct", "local", "swarm", "lm_local", "lm_swarm")
RESOURCES = {"cpus": 1, "memory_mb": 256, "timeout_secs": 30, "disk_mb": 64}
PROMPT = "Say hello in one word."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (each runs all five once)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    return parser.parse_args(argv)


def timed(call: Callable[[], Any]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter_ns()
        call()
        return (time.perf_counter_ns() - start) / 1e6

    return run


def measure(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, list[float]], str]:
    python3 = shutil.which("python3", path=SANDBOX_PATH)
    if python3 is None:
        raise SystemExit(f"no python3 on the sandbox's PATH ({SANDBOX_PATH})")
    request = SandboxRunRequest(commands=[{"cmd": "python3 -c pass"}], resources=RESOURCES)
    executor = SandboxExecutor()
    common = {"cache": False, "max_tokens": 1, "temperature": 0, "num_retries": 0}
    state_dir = tmp / "swarm"
    with (
        pylon.EmbeddedLlama(write_tiny_gguf(tmp / "tiny.gguf"), n_ctx=16384, parallel=4) as server,
        LocalSwarm(state_dir, providers=0, funds_msats=0, backend_url=server.url) as swarm,
    ):
        node = swarm.add_provider(sandbox=SandboxOffer())
        client = PylonSandboxProvider(
            (swarm.url,), nostr_sdk.Keys.generate(), providers=(node.pubkey,), home=state_dir / "customer", timeout=30
        )
        lm_swarm = swarm.lm(bid_msats=0, **common)
        local = pylon.Local(backend="llamacpp", base_url=server.url, embedded_fallback=False)
        lm_local = pylon.PylonLM.from_config(pylon.PylonConfig(venue=local), **common)

        def direct() -> None:
            subprocess.run([python3, "-c", "pass"], check=True)

        def local_run() -> None:
            status = executor.run(request).status.value
            if status != "success":
                raise SystemExit(f"the local sandbox run ended {status!r}")

        def swarm_run() -> None:
            outcome = client.run(request)
            if outcome.status.value != "success" or outcome.provider != node.pubkey:
                raise SystemExit(f"the swarm sandbox job ended {outcome.status.value!r} on {outcome.provider}")

        answers: dict[str, set[str]] = {"lm_local": set(), "lm_swarm": set()}
        contenders: list[tuple[str, Callable[[], float]]] = [
            ("direct", timed(direct)),
            ("local", timed(local_run)),
            ("swarm", timed(swarm_run)),
            ("lm_local", timed(lambda: answers["lm_local"].add(lm_local(PROMPT)[0]))),
            ("lm_swarm", timed(lambda: answers["lm_swarm"].add(lm_swarm(PROMPT)[0]))),
        ]
        try:
            samples: dict[str, list[float]] = {name: [] for name in NAMES}
            for round_ in range(args.warmup + args.rounds):
                for name, call in rotated(contenders, round_):
                    elapsed = call()
                    if round_ >= args.warmup:
                        samples[name].append(elapsed)
            # Same model, same prompt, temperature 0: the node must answer what the server does.
            if len(answers["lm_local"]) != 1 or answers["lm_swarm"] != answers["lm_local"]:
                raise SystemExit(f"swarm and local answers differ: {answers}")
        finally:
            client.close()
            lm_swarm.close()
            lm_local.close()
    return samples, python3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        raise SystemExit("--rounds must be >= 1 and --warmup >= 0")
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    # The tiny model never emits EOS: every answer is "truncated"; keep that warning off stderr.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        samples, python3 = measure(args, Path(tmp))
    med = {name: median(values) for name, values in samples.items()}
    local_added = med["local"] - med["direct"]
    swarm_added = med["swarm"] - med["local"]
    inference_added = med["lm_swarm"] - med["lm_local"]
    # None when the swarm added nothing measurable to inference (a ratio would mean nothing).
    ratio = swarm_added / inference_added if inference_added > 0 else None
    emit(
        {
            "benchmark": "sandbox_overhead",
            "rounds": args.rounds,
            "warmup": args.warmup,
            "python3": python3,
            "direct_ms": rnd(med["direct"]),
            "local_ms": rnd(med["local"]),
            "swarm_ms": rnd(med["swarm"]),
            "lm_local_ms": rnd(med["lm_local"]),
            "lm_swarm_ms": rnd(med["lm_swarm"]),
            "local_added_ms": rnd(local_added),
            "swarm_added_ms": rnd(swarm_added),
            "inference_swarm_added_ms": rnd(inference_added),
            "ratio": None if ratio is None else rnd(ratio, 4),
            "target_local_added_ms<": TARGET_LOCAL_ADDED_MS,
            "target_ratio<=": TARGET_RATIO,
            "met": {"local": local_added < TARGET_LOCAL_ADDED_MS, "swarm": ratio is not None and ratio <= TARGET_RATIO},
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
