"""Swarm throughput: many jobs against provider processes, and DSPy Evaluate on 4 providers vs 1.

One llama.cpp server (``dspy_pylon.EmbeddedLlama``, ``parallel=16``, one thread: see the
README) serves the tiny deterministic test model from a process of its own; an embedded
nostr-sdk relay runs in this process; four provider PROCESSES, each
``dspy_pylon.swarm.provider.run_provider`` with a fresh key, its own state directory,
``concurrency=4`` and ``LLAMACPP_URL`` at the shared server, serve jobs from the relay.

(a) 1,000 jobs, 64 in flight (``asyncio.gather`` with a semaphore over ``lm.acall``), in
    two ways of sending them:

    * ``spread``    - round-robin over four ``pylon:swarm`` LMs, each targeting one provider
                      (``Swarm(providers=(pubkey,))``): every job runs on one provider;
    * ``broadcast`` - one untargeted ``pylon:swarm`` LM: every provider that sees a job runs
                      it, the customer takes the first result.

    Reported: jobs/s, per-job latency and lost jobs (a call that raised or returned no text).

(b) ``dspy.Evaluate(num_threads=16)`` over 64 examples with ``dspy.Predict("question -> answer")``
    (a lenient adapter takes the whole completion as the answer), ``max_tokens`` chosen so one
    generation takes >= 50 ms of llama.cpp time (measured before, reported), on ``one``
    provider (round-robin over one targeted LM) versus ``four`` (round-robin over four), and
    ``broadcast`` to four for context; rounds interleaved, the order rotating. Reported: the
    speedup, median wall(one) / wall(four).

(c) Diagnostic (skip with ``--no-diagnostic``): ``one`` vs ``four`` again, with four fresh
    providers whose ``LLAMACPP_URL`` is a stand-in server (a process of its own) answering every
    chat request after ``--remote-ms``: providers whose inference runs on hardware of their own
    (a GPU), so that its time is waiting, not this machine's CPU - first on the relay as it is, then with
    TCP_NODELAY set on the relay's sockets (see ``swarm_roundtrip.set_nodelay``). It separates
    what pylon scales from what two cores can compute.

Each Evaluate run also reports the CPU seconds used, by part (this process's threads by
role, the provider, llama.cpp and stand-in processes, from /proc), and how many cores were busy.

Every provider process is stopped at the end (SIGTERM, then SIGKILL). Prints one JSON line;
exit code 0 whether or not the targets are met; 1 only when the set-up or the checks fail.

    .venv/bin/python benchmarks/swarm_throughput.py [--jobs 1000] [--in-flight 64]
"""

from __future__ import annotations

import os

# Before dspy is imported: LiteLLM must not fetch its cost map over the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dspy
import nostr_sdk

import dspy_pylon as pylon
from _common import emit, machine, median, percentile, rnd, rotated
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.relay_server import start_embedded_relay
from dspy_pylon.swarm.discovery import adiscover
from dspy_pylon.testing.tiny_gguf import write_tiny_gguf
from swarm_roundtrip import set_nodelay

TARGET_SPEEDUP = 3.0
TARGET_LOST = 0
MIN_PROVIDER_MS = 50.0

# One provider process: run_provider until SIGTERM, then its counters as one JSON line.
PROVIDER_CODE = """
import asyncio, json, logging, os, sys
from pathlib import Path
import nostr_sdk
from dspy_pylon.swarm.provider_run import run_provider
from dspy_pylon.swarm.provider_settings import ProviderSettings
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
relay, state_dir, concurrency, name = sys.argv[1:5]
keys = nostr_sdk.Keys.parse(os.environ.pop("BENCH_PROVIDER_KEY"))
settings = ProviderSettings(
    relays=(relay,), state_dir=Path(state_dir), backend="llamacpp", concurrency=int(concurrency), name=name
)
node = asyncio.run(run_provider(keys, settings))
stats = node.stats
print(json.dumps({"received": stats.received, "done": stats.done, "errors": stats.errors,
                  "ignored": dict(stats.ignored)}), flush=True)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in (a), per way of sending")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--providers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4, help="jobs each provider runs at once")
    parser.add_argument("--max-tokens", type=int, default=4, help="max_tokens of the jobs in (a)")
    parser.add_argument("--examples", type=int, default=64, help="Evaluate devset size in (b)")
    parser.add_argument("--threads", type=int, default=16, help="Evaluate num_threads in (b)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved Evaluate rounds per contender")
    parser.add_argument("--llama-threads", type=int, default=1, help="llama.cpp threads (see the README)")
    parser.add_argument("--remote-ms", type=float, default=50.0, help="(c): how long the stand-in takes per request")
    parser.add_argument("--no-diagnostic", action="store_true", help="skip (c)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per swarm call")
    return parser.parse_args(argv)


# ─── provider processes ───


class ProviderProcess:
    """One ``run_provider`` process with a fresh key and a state directory of its own."""

    def __init__(self, index: int, relay: str, llama_url: str, concurrency: int, tmp: Path) -> None:
        keys = nostr_sdk.Keys.generate()
        self.pubkey = str(keys.public_key().to_hex())
        self.name = f"bench provider {index}"
        home = tmp / f"provider-{index}-{self.pubkey[:8]}"
        home.mkdir(parents=True)
        self.log_path = home / "stderr.log"
        env = {
            **os.environ,
            "LLAMACPP_URL": llama_url,
            "PYLON_HOME": str(home),
            "BENCH_PROVIDER_KEY": keys.secret_key().to_hex(),
        }
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", PROVIDER_CODE, relay, str(home / "state"), str(concurrency), self.name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        self.stats: dict[str, Any] = {}

    def stop(self) -> None:
        """SIGTERM (the node finishes its jobs and prints its counters), then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate(timeout=10)
        lines = out.decode(errors="replace").strip().splitlines()
        with contextlib.suppress(json.JSONDecodeError, IndexError):
            self.stats = json.loads(lines[-1])

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:]


@contextlib.contextmanager
def provider_processes(
    count: int, relay: str, llama_url: str, concurrency: int, tmp: Path, loop: NostrLoop
) -> Iterator[list[ProviderProcess]]:
    """Start ``count`` provider processes and wait until each has announced itself (subscribed)."""
    procs: list[ProviderProcess] = []
    try:
        for index in range(count):
            procs.append(ProviderProcess(index, relay, llama_url, concurrency, tmp))
        # Split so that ``one`` (every job to provider 0) shows what the others spend ignoring jobs.
        METER.pids["provider 0 process"] = [procs[0].process.pid]
        METER.pids[f"providers 1-{len(procs) - 1} processes"] = [p.process.pid for p in procs[1:]]
        wanted = {p.pubkey for p in procs}
        deadline = time.monotonic() + 120
        while True:
            for p in procs:
                if p.process.poll() is not None:
                    raise SystemExit(f"{p.name} exited ({p.process.returncode}): {p.tail()}")
            found = {r.pubkey for r in loop.run(adiscover([relay], timeout=2.0), 30)}
            if wanted <= found:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"providers not announced within 120 s: {len(wanted - found)} missing")
            time.sleep(0.5)
        yield procs
    finally:
        for p in procs:  # signal all first, so they wind down together
            if p.process.poll() is None:
                p.process.terminate()
        for p in procs:
            p.stop()


# ─── where the CPU goes (Linux /proc) ───

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks(stat_path: str) -> tuple[str, int]:
    """(thread or process name, user + system clock ticks) from a /proc .../stat file."""
    with open(stat_path) as f:
        text = f.read()
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return name, int(fields[11]) + int(fields[12])


class CpuMeter:
    """CPU seconds by part: this process's threads by role, and the provider processes."""

    def __init__(self, loops: dict[str, NostrLoop]) -> None:
        self.loops = loops
        self.pids: dict[str, list[int]] = {}

    def snapshot(self) -> dict[str, float]:
        if not os.path.isdir("/proc/self/task"):
            return {}
        roles = {threading.main_thread().native_id: "main thread (asyncio / Evaluate's caller)"}
        roles.update({loop.thread.native_id: name for name, loop in self.loops.items()})
        parts: Counter[str] = Counter()
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                name, ticks = _ticks(f"/proc/self/task/{tid}/stat")
                if int(tid) in roles:
                    parts[roles[int(tid)]] += ticks
                elif name.startswith(("async-compat", "tokio")):
                    parts["nostr-sdk runtime threads (relay + customers' clients)"] += ticks
        _, total = _ticks("/proc/self/stat")  # includes threads that have exited
        parts["other threads (DSPy workers, Python)"] = total - sum(parts.values())
        for part, pids in self.pids.items():
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):
                    parts[part] += _ticks(f"/proc/{pid}/stat")[1]
        return {part: ticks / TICK for part, ticks in parts.items()}

    @staticmethod
    def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {part: after[part] - before.get(part, 0.0) for part in after}


METER = CpuMeter({})


# ─── the customer side ───


class RoundRobinEngine:
    """A DSPy engine sending each call to the next of several pylon runtimes (one per provider)."""

    def __init__(self, runtimes: Sequence[Any]) -> None:
        self.runtimes = list(runtimes)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.answered_by: Counter[str] = Counter()

    def _pick(self) -> Any:
        with self._lock:
            return self.runtimes[next(self._next) % len(self.runtimes)]

    def _tally(self, response: Any) -> Any:
        self.answered_by[response.provider_data["pylon"]["provider"]] += 1
        return response

    def complete(self, request: Any) -> Any:
        return self._tally(self._pick().complete(request))

    def __deepcopy__(self, memo: dict[int, Any]) -> RoundRobinEngine:
        return self  # lm.copy(max_tokens=...) shares the rotation, like PylonEngine


class AsyncRoundRobinEngine:
    """The async counterpart of :class:`RoundRobinEngine` (shares its rotation and tally)."""

    def __init__(self, sync: RoundRobinEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return self.sync._tally(await self.sync._pick().acomplete(request))

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncRoundRobinEngine:
        return self


class Customers:
    """The LMs of one run: round-robin over targeted LMs, and one untargeted (broadcast) LM."""

    def __init__(self, relay: str, pubkeys: Sequence[str], timeout: float, max_tokens: int, home: Path) -> None:
        self.relay = relay
        self.timeout = timeout
        self.lms: list[pylon.PylonLM] = []
        # The customers' reputation lives in the benchmark's home, never in the user's.
        self.home = home
        self.settings = {"cache": False, "max_tokens": max_tokens, "temperature": 0, "num_retries": 0}
        self.spread = self._round_robin([self._targeted(pk) for pk in pubkeys])
        self.one = self._round_robin([self._targeted(pubkeys[0])])
        broadcast = self._lm(())
        self.broadcast_engine = RoundRobinEngine([broadcast.runtime])
        self.broadcast = dspy.LM(
            "pylon:swarm",
            engine=self.broadcast_engine,
            async_engine=AsyncRoundRobinEngine(self.broadcast_engine),
            **self.settings,
        )

    def _lm(self, providers: tuple[str, ...]) -> pylon.PylonLM:
        config = pylon.PylonConfig(venue=pylon.Swarm(relays=(self.relay,), providers=providers), timeout=self.timeout)
        # A key per LM: each customer subscribes to the results addressed to its own key only.
        key = nostr_sdk.Keys.generate().secret_key().to_hex()
        lm = pylon.PylonLM.swarm(key, config, home=self.home, **self.settings)
        self.lms.append(lm)
        return lm

    def _targeted(self, pubkey: str) -> pylon.PylonLM:
        return self._lm((pubkey,))

    def _round_robin(self, lms: Sequence[pylon.PylonLM]) -> dspy.LM:
        engine = RoundRobinEngine([lm.runtime for lm in lms])
        return dspy.LM("pylon:swarm", engine=engine, async_engine=AsyncRoundRobinEngine(engine), **self.settings)

    def close(self) -> None:
        for lm in self.lms:
            lm.close()


def engine_of(lm: dspy.LM) -> RoundRobinEngine:
    return lm.engine  # type: ignore[no-any-return]


def failure_kind(exc: BaseException) -> str:
    """An exception's type and message with event ids and keys masked, so failures group."""
    return re.sub(r"[0-9a-f]{12}…", "…", f"{type(exc).__name__}: {exc}")[:160]


async def many_jobs(lm: dspy.LM, jobs: int, in_flight: int) -> dict[str, Any]:
    """``jobs`` calls of ``lm.acall``, at most ``in_flight`` at once; wall time, latencies, losses."""
    gate = asyncio.Semaphore(in_flight)
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    async def one(i: int) -> bool:
        async with gate:
            start = time.perf_counter()
            try:
                out = await lm.acall(f"Job {i}: say something.")
            except Exception as exc:
                failures[failure_kind(exc)] += 1
                return False
            latencies.append((time.perf_counter() - start) * 1000)
            if not out or not isinstance(out[0], str) or not out[0]:
                failures["empty answer"] += 1
                return False
            return True

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(jobs)))
    wall = time.perf_counter() - start
    return {"wall_s": wall, "ok": sum(results), "failures": failures, "latencies": latencies}


def run_many(name: str, lm: dspy.LM, args: argparse.Namespace) -> dict[str, Any]:
    engine = engine_of(lm)
    asyncio.run(many_jobs(lm, min(16, args.jobs), args.in_flight))  # warm-up: connections, caches
    engine.answered_by.clear()
    cpu_before = METER.snapshot()
    result = asyncio.run(many_jobs(lm, args.jobs, args.in_flight))
    cpu = METER.used(cpu_before, METER.snapshot())
    lost = args.jobs - result["ok"]
    return {
        "send": name,
        "jobs": args.jobs,
        "jobs_per_s": rnd(args.jobs / result["wall_s"], 1),
        "wall_s": rnd(result["wall_s"], 2),
        "lost": lost,
        "latency_ms": {
            "p50": rnd(median(result["latencies"]), 1) if result["latencies"] else None,
            "p95": rnd(percentile(result["latencies"], 95), 1) if result["latencies"] else None,
        },
        "answered_by": sorted(engine.answered_by.values(), reverse=True),
        "failures": dict(result["failures"]),
        "cpu_s": cpu_summary([cpu], [result["wall_s"]]),
    }


# ─── DSPy Evaluate ───


class WholeAnswerAdapter(dspy.ChatAdapter):
    """Takes the whole completion as the first output field (the tiny model writes noise, not
    DSPy's field markers); the prompt formatting and the LM path stay DSPy's own."""

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        names = list(signature.output_fields)
        return {name: completion if i == 0 else "" for i, name in enumerate(names)}


def devset(size: int) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"What is {i} plus {i + 1}?", answer="?").with_inputs("question") for i in range(size)
    ]


def answered(example: dspy.Example, prediction: Any, trace: Any = None) -> float:
    """1.0 when the program produced an answer at all (the tiny model's text is noise)."""
    return 1.0 if isinstance(prediction.get("answer"), str) and prediction.get("answer") else 0.0


def evaluate_once(lm: dspy.LM, max_tokens: int, args: argparse.Namespace) -> tuple[float, int, dict[str, float]]:
    """One Evaluate run; returns (wall seconds, lost examples, CPU seconds by part)."""
    examples = devset(args.examples)
    evaluate = dspy.Evaluate(
        devset=examples,
        metric=answered,
        num_threads=args.threads,
        display_progress=False,
        max_errors=len(examples) + 1,
    )
    program = dspy.Predict("question -> answer")
    cpu_before = METER.snapshot()
    start = time.perf_counter()
    with dspy.context(lm=lm.copy(max_tokens=max_tokens), adapter=WholeAnswerAdapter()):
        result = evaluate(program)
    wall = time.perf_counter() - start
    cpu = METER.used(cpu_before, METER.snapshot())
    lost = sum(1 for _, _, score in result.results if not score)
    return wall, lost, cpu


def provider_time(llama_url: str, max_tokens: int, samples: int = 9) -> float:
    """Median llama.cpp time (ms) of one Evaluate job, called directly (``pylon:local:llamacpp``)."""
    local = pylon.Local(backend="llamacpp", base_url=llama_url, embedded_fallback=False)
    lm = pylon.PylonLM.from_config(pylon.PylonConfig(venue=local), cache=False, max_tokens=max_tokens, temperature=0)
    program = dspy.Predict("question -> answer")
    times = []
    with dspy.context(lm=lm, adapter=WholeAnswerAdapter()):
        for i in range(samples + 2):
            program(question=f"What is {i} plus {i + 2}?")
            if i >= 2:
                times.append(float(lm.history[-1]["response"].provider_data["pylon"]["latency_ms"]))
    lm.close()
    return median(times)


def calibrate(llama_url: str) -> tuple[int, float]:
    """The smallest power-of-two max_tokens whose generation takes >= 50 ms, and that time."""
    max_tokens = 16
    while True:
        took = provider_time(llama_url, max_tokens)
        if took >= MIN_PROVIDER_MS or max_tokens >= 2048:
            return max_tokens, took
        max_tokens *= 2


def evaluate_rounds(
    contenders: Sequence[tuple[str, dspy.LM]], max_tokens: int, args: argparse.Namespace
) -> dict[str, Any]:
    """``--rounds`` interleaved Evaluate runs of each contender; medians and the speedup."""
    for name, lm in contenders:  # warm-up: every path connected and its prompt cached by llama.cpp
        with dspy.context(lm=lm.copy(max_tokens=max_tokens), adapter=WholeAnswerAdapter()):
            dspy.Predict("question -> answer")(question=f"warm-up {name}")
    walls: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cpus: dict[str, list[dict[str, float]]] = {name: [] for name, _ in contenders}
    lost: dict[str, int] = dict.fromkeys(walls, 0)
    for r in range(args.rounds):
        for name, lm in rotated(contenders, r):
            wall, missing, cpu = evaluate_once(lm, max_tokens, args)
            walls[name].append(wall)
            cpus[name].append(cpu)
            lost[name] += missing
    med = {name: median(v) for name, v in walls.items()}
    speedup = med["one"] / med["four"]
    return {
        "wall_s_median": {name: rnd(v, 2) for name, v in med.items()},
        "wall_s": {name: [rnd(w, 2) for w in v] for name, v in walls.items()},
        "lost": lost,
        "speedup_four_over_one": rnd(speedup, 2),
        **({"broadcast_over_one": rnd(med["one"] / med["broadcast"], 2)} if "broadcast" in med else {}),
        # CPU seconds per run by part (median over rounds), and all CPU / wall (2 cores: at most 2).
        "cpu_s": {name: cpu_summary(cpus[name], walls[name]) for name in walls},
        "_speedup": speedup,
    }


def cpu_summary(runs: list[dict[str, float]], walls: list[float]) -> dict[str, float]:
    if not runs or not runs[0]:
        return {}
    parts = {part: median([run.get(part, 0.0) for run in runs]) for part in runs[0]}
    busy = median([sum(run.values()) / wall for run, wall in zip(runs, walls, strict=True)])
    return {**{part: rnd(v, 2) for part, v in parts.items()}, "cores_busy": rnd(busy, 2)}


# ─── helper processes: llama.cpp, and (c)'s stand-in ───

LLAMA_CODE = """
import sys
from dspy_pylon.local.embedded import EmbeddedLlama
path, n_ctx, parallel, threads = sys.argv[1:5]
server = EmbeddedLlama(path, n_ctx=int(n_ctx), parallel=int(parallel), threads=int(threads)).start()
print(server.url, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin (or terminates us)
server.stop()
"""

# (c): an OpenAI-compatible stand-in for a provider's inference server that answers every chat
# request after DELAY ms and uses next to no CPU - inference on hardware of its own (a GPU), its
# time waiting, not this machine's CPU. It names the model the real llama.cpp server serves.
STUB_CODE = """
import json, socket, sys, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
upstream, delay = sys.argv[1], float(sys.argv[2]) / 1000
with urllib.request.urlopen(upstream + "/v1/models", timeout=30) as response:
    models = response.read()
model = json.loads(models)["data"][0]["id"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (~40 ms on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def reply(self, payload):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self.reply(models)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(delay)
        answer = {
            "id": "stub", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a remote answer"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": 3,
                      "total_tokens": len(body) // 4 + 3},
        }
        self.reply(json.dumps(answer).encode())

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
"""


class HelperProcess:
    """A ``python -c`` helper that prints its URL on its first line; stopped by :meth:`stop`."""

    def __init__(self, name: str, code: str, argv: Sequence[str], tmp: Path) -> None:
        self.name = name
        self.log_path = tmp / f"{name.replace(' ', '-')}.log"
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise SystemExit(f"{name} did not start: {self.log_path.read_text(errors='replace')[-1500:]}")
        self.url = line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# ─── the run ───


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model_path = write_tiny_gguf(tmp / "tiny.gguf")
    loop = NostrLoop("bench-relay")
    relay, url = loop.run(start_embedded_relay())
    relay_port = int(url.rsplit(":", 1)[1])
    METER.loops = {"relay's Python loop": loop, "customers' Nostr loop": NostrLoop.shared()}
    report: dict[str, Any] = {}
    # One llama.cpp server for all providers, in a process of its own so that the CPU it uses
    # is told apart from the customer's. 16 slots: 4 providers x 4 jobs; n_ctx 16 x 4,096 tokens
    # so that each slot holds a DSPy prompt (~600 tokens with this model) and its answer.
    llama = HelperProcess(
        "llama.cpp server", LLAMA_CODE, [str(model_path), str(16 * 4096), "16", str(args.llama_threads)], tmp
    )
    METER.pids["llama.cpp server process"] = [llama.process.pid]
    try:
        max_tokens, per_job_ms = calibrate(llama.url)
        report["provider_time_per_job_ms"] = rnd(per_job_ms, 1)
        report["eval_max_tokens"] = max_tokens
        with provider_processes(args.providers, url, llama.url, args.concurrency, tmp, loop) as procs:
            customers = Customers(url, [p.pubkey for p in procs], args.timeout, args.max_tokens, tmp / "customer-home")
            try:
                report["many_jobs"] = [
                    run_many("spread", customers.spread, args),
                    run_many("broadcast", customers.broadcast, args),
                ]
                contenders = [("one", customers.one), ("four", customers.spread), ("broadcast", customers.broadcast)]
                report["evaluate"] = evaluate_rounds(contenders, max_tokens, args)
            finally:
                customers.close()
        report["provider_stats"] = [p.stats for p in procs]
        if not args.no_diagnostic:
            report["evaluate_remote_inference"] = remote_diagnostic(args, url, relay_port, llama.url, tmp, loop)
    finally:
        llama.stop()
        relay.shutdown()
        loop.stop()
    return report


def remote_diagnostic(
    args: argparse.Namespace, url: str, relay_port: int, llama_url: str, tmp: Path, loop: NostrLoop
) -> dict[str, Any]:
    """(c): one vs four providers whose inference waits ``--remote-ms`` instead of using this CPU,
    on the relay as it is and then with TCP_NODELAY on the relay's sockets."""
    stub = HelperProcess("remote inference stub", STUB_CODE, [llama_url, str(args.remote_ms)], tmp)
    METER.pids["stub process"] = [stub.process.pid]
    small = 8
    try:
        remote_ms = provider_time(stub.url, small)
        with provider_processes(args.providers, url, stub.url, args.concurrency, tmp, loop) as procs:
            customers = Customers(url, [p.pubkey for p in procs], args.timeout, args.max_tokens, tmp / "customer-home")
            try:
                contenders = [("one", customers.one), ("four", customers.spread)]
                stock = evaluate_rounds(contenders, small, args)
                changed = set_nodelay(relay_port)  # every connection is open: providers and customers
                nodelay = evaluate_rounds(contenders, small, args)
            finally:
                customers.close()
    finally:
        stub.stop()
        METER.pids.pop("stub process", None)
    for result in (stock, nodelay):
        result.pop("_speedup")
    return {
        "provider_time_per_job_ms": rnd(remote_ms, 1),
        "remote_ms": args.remote_ms,
        "eval_max_tokens": small,
        "relay_as_is": stock,
        "relay_tcp_nodelay": {**nodelay, "sockets_changed": changed},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs < 1 or args.in_flight < 1 or args.providers < 1 or args.rounds < 1:
        raise SystemExit("--jobs, --in-flight, --providers and --rounds must be >= 1")
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    # The tiny model never emits EOS: every answer is "truncated"; keep that warning off stderr.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    logging.getLogger("dspy.evaluate.evaluate").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        report = run(args, Path(tmp))
    evaluation = report["evaluate"]
    speedup = evaluation.pop("_speedup")
    lost = {m["send"]: m["lost"] for m in report["many_jobs"]}
    lost_evaluate = sum(evaluation["lost"].values())
    emit(
        {
            "benchmark": "swarm_throughput",
            "providers": args.providers,
            "concurrency": args.concurrency,
            "in_flight": args.in_flight,
            **report,
            "targets": {"speedup_four_over_one>=": TARGET_SPEEDUP, "lost==": TARGET_LOST},
            "met": {
                "speedup_four_over_one>=": speedup >= TARGET_SPEEDUP,
                "lost== (spread)": lost["spread"] == TARGET_LOST,
                "lost== (broadcast)": lost["broadcast"] == TARGET_LOST,
                "lost== (evaluate)": lost_evaluate == TARGET_LOST,
            },
            "llama": {"parallel": 16, "threads": args.llama_threads, "shared_by": "all providers"},
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
