"""What the live HUD costs a run: a program streaming about 1,000 events a second into an open HUD
(in this process, with a page reading the stream from another process), against the same run
without it, in one run (one JSON line).

The program makes ``--calls`` predictor calls against DSPy's ``DummyLM``, each after
``--latency-ms`` of waiting (an LM's latency: a real LM is not instant, and 1,000 events/s is
what a busy run on a real model sends). Each call is five nodes, ten events. Each round runs
both contenders in rotating order:

* ``plain``  - no callback.
* ``traced`` - a ``TraceRecorder`` (what any tracing costs: DSPy's callback dispatch and the
  recorder, measured apart in ``trace_overhead.py``).
* ``hud``    - ``pylon.hud.open()``: a HudCallback records the run into the in-process server,
  whose event stream a reader in another process (``httpx``, like a browser tab) follows.

Reported: the median wall time of each, the slowdown ``hud / plain - 1`` (target <= 2 %), the
HUD's own part ``hud / traced - 1``, the events per second the HUD took, and how many the
reader received.

    .venv/bin/python benchmarks/hud_overhead.py [--rounds 15] [--calls 100] [--latency-ms 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import emit, machine, median, rnd, rotated

TARGET_SLOWDOWN = 0.02

# The page's part, in its own process: follow the stream and count events until told to stop.
READER = """
import sys, httpx
count = 0
with httpx.stream("GET", sys.argv[1], timeout=None) as response:
    for line in response.iter_lines():
        if line.startswith("id:"):
            count += 1
            if count % 1000 == 0:
                print(count, flush=True)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=7.0, help="each call's wait before the LM")
    parser.add_argument("--warmup", type=int, default=1)
    return parser.parse_args(argv)


def build(calls: int, latency_s: float) -> tuple[Any, Any]:
    import dspy
    from dspy.utils.dummies import DummyLM

    class Paced(dspy.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.step = dspy.Predict("question -> answer")

        def forward(self, question: str) -> Any:
            answer = None
            for i in range(calls):
                time.sleep(latency_s)
                answer = self.step(question=f"{question} {i}").answer
            return dspy.Prediction(answer=answer)

    return Paced(), DummyLM([{"answer": "42"}] * (calls * 1024))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import dspy

    import dspy_pylon as pylon

    program, lm = build(args.calls, args.latency_ms / 1000)
    hud = pylon.hud.open(announce=False)
    dspy.configure(callbacks=[])  # registered only for its own runs
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, f"{hud.server.base_url}/events"], stdout=subprocess.PIPE, text=True
    )
    from dspy_pylon.trace.recorder import TraceRecorder

    times: dict[str, list[float]] = {"plain": [], "traced": [], "hud": []}
    events_before = hud.server.log.last_id
    hud_seconds = 0.0
    try:
        for round_ in range(args.warmup + args.rounds):
            for name in rotated(list(times), round_):
                callbacks = {"plain": [], "traced": [TraceRecorder()], "hud": [hud.callback]}[name]
                began = time.perf_counter()
                with dspy.context(lm=lm, callbacks=callbacks):
                    program(question="q")
                elapsed = time.perf_counter() - began
                if round_ >= args.warmup:
                    times[name].append(elapsed)
                if name == "hud":
                    hud_seconds += elapsed
        events = hud.server.log.last_id - events_before
        time.sleep(0.5)  # the reader's last tick
    finally:
        reader.terminate()
        out, _ = reader.communicate(timeout=10)
        hud.close()
    received = max([int(line) for line in out.split() if line.isdigit()] or [0])
    plain, traced, shown = median(times["plain"]), median(times["traced"]), median(times["hud"])
    slowdown = shown / plain - 1
    emit(
        {
            "benchmark": "hud_overhead",
            "calls": args.calls,
            "rounds": args.rounds,
            "latency_ms": args.latency_ms,
            "plain_s": rnd(plain),
            "traced_s": rnd(traced),
            "hud_s": rnd(shown),
            "slowdown": rnd(slowdown, 4),
            "hud_over_traced": rnd(shown / traced - 1, 4),
            "target_slowdown<=": TARGET_SLOWDOWN,
            # The HUD's own part meets it when tracing (which it needs) is counted apart.
            "met": {"slowdown": slowdown <= TARGET_SLOWDOWN, "hud_over_traced": shown / traced - 1 <= TARGET_SLOWDOWN},
            "events_per_s": rnd(events / hud_seconds if hud_seconds else 0.0, 1),
            "events": events,
            "reader_received_at_least": received,
            "dropped": hud.callback.dropped,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
