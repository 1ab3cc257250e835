"""Per-call overhead of pylon's local venue versus DSPy's own client and a raw HTTP post.

One embedded llama.cpp server (xllamacpp) serves the tiny deterministic test model
(about 5 ms a request). Three contenders send the same chat request to it, round-robin
within each iteration (the order rotates every iteration), after a warm-up:

* ``raw``   - ``httpx.Client.post`` of the exact JSON body pylon sends (captured from pylon);
* ``dspy``  - ``dspy.LM("openai/<served id>", api_base=<url>/v1, api_key="none")``, DSPy's
  own network client (its native lm15 ``openai-chat`` engine), called as ``lm(prompt)``;
* ``pylon`` - ``pylon.LM("pylon:local:llamacpp")`` with ``LLAMACPP_URL`` at the server,
  called the same way.

Before timing, the script checks that all three get the same answer text and prompt
token count from the same server, and that DSPy chose its native openai-chat engine with
the server's address (not LiteLLM, not api.openai.com). Caching is off everywhere.

Prints one JSON line. Exit code 0 whether or not the targets are met (a measurement);
1 only when the set-up or the checks fail.

    .venv/bin/python benchmarks/local_overhead.py [--iterations 300] [--warmup 30]
"""

from __future__ import annotations

import os

# Before dspy is imported: LiteLLM must not fetch its cost map over the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
import httpx
from dspy.clients.backend_selection import select_backend

import dspy_pylon as pylon
from _common import emit, machine, median, percentile, rnd, rotated
from dspy_pylon.local.client import CHAT_PATH
from dspy_pylon.testing.tiny_gguf import write_tiny_gguf

TARGET_PYLON_OVER_DSPY = 1.05
TARGET_PYLON_MINUS_RAW_MS = 1.0
NAMES = ("raw", "dspy", "pylon")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300, help="timed rounds (each runs all three once)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed rounds first")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--prompt", default="Say hello in one word.")
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the tiny test model)")
    return parser.parse_args(argv)


def capture_pylon_body(lm: pylon.PylonLM, prompt: str) -> tuple[dict[str, Any], list[str]]:
    """The exact JSON body pylon posts for ``prompt`` (one real call, seen by an httpx hook)."""
    _route, client = lm.runtime.local_router().resolve()  # the benchmark's one peek inside pylon
    seen: list[bytes] = []

    def hook(request: httpx.Request) -> None:
        if request.url.path == CHAT_PATH:
            seen.append(request.read())

    saved = client._sync.event_hooks
    client._sync.event_hooks = {"request": [hook], "response": []}
    try:
        outputs = lm(prompt)
    finally:
        client._sync.event_hooks = saved
    if len(seen) != 1:
        raise SystemExit(f"expected pylon to post once to {CHAT_PATH}, saw {len(seen)} posts")
    return json.loads(seen[0]), outputs


def last_usage(lm: dspy.LM) -> dict[str, Any]:
    return dict(lm.history[-1]["usage"] or {})


def check_same_answers(
    raw_json: dict[str, Any], dspy_lm: dspy.LM, dspy_out: list[str], pylon_lm: pylon.PylonLM, pylon_out: list[str]
) -> dict[str, Any]:
    """Fail loudly unless all three reached the same server and got the same answer."""
    raw_text = raw_json["choices"][0]["message"]["content"]
    texts = {"raw": raw_text, "dspy": dspy_out[0], "pylon": pylon_out[0]}
    if len(set(texts.values())) != 1:
        raise SystemExit(f"the three clients got different answers: {texts}")
    prompt_tokens = {
        "raw": raw_json["usage"]["prompt_tokens"],
        "dspy": last_usage(dspy_lm).get("prompt_tokens"),
        "pylon": last_usage(pylon_lm).get("prompt_tokens"),
    }
    if len(set(prompt_tokens.values())) != 1:
        raise SystemExit(f"the three clients sent different prompts (prompt tokens {prompt_tokens})")
    served = {
        "dspy": dspy_lm.history[-1]["response_model"],
        "pylon": pylon_lm.history[-1]["response"].provider_data["pylon"]["model"],
    }
    if {raw_json["model"], *served.values()} != {raw_json["model"]}:
        raise SystemExit(f"served model differs: raw {raw_json['model']!r}, {served}")
    return {"answer": raw_text, "prompt_tokens": prompt_tokens["raw"]}


def check_dspy_route(lm: dspy.LM, base_url: str) -> str:
    """DSPy must use its native openai-chat engine aimed at our server, not LiteLLM or OpenAI."""
    selection = select_backend(lm)
    if not selection.native or selection.resolution is None:
        raise SystemExit(f"DSPy selected its LiteLLM compatibility engine for {lm.model!r}: {selection}")
    if selection.resolution.provider != "openai-chat":
        raise SystemExit(f"DSPy routed {lm.model!r} to {selection.resolution.provider!r}, not openai-chat")
    if selection.clients.get("api_base") != base_url:
        raise SystemExit(f"DSPy's api_base is {selection.clients.get('api_base')!r}, expected {base_url!r}")
    return f"lm15:{selection.resolution.provider}"


def run(args: argparse.Namespace, model_path: Path) -> dict[str, Any]:
    with pylon.EmbeddedLlama(model_path, n_ctx=16384, parallel=4) as server:
        os.environ["LLAMACPP_URL"] = server.url
        http = httpx.Client(base_url=server.url, timeout=60.0, trust_env=False)
        served_id = http.get("/v1/models").json()["data"][0]["id"]

        pylon_lm = pylon.LM("pylon:local:llamacpp", cache=False, max_tokens=args.max_tokens, temperature=0)
        dspy_lm = dspy.LM(
            f"openai/{served_id}",
            api_base=f"{server.url}/v1",
            api_key="none",
            cache=False,
            max_tokens=args.max_tokens,
            temperature=0,
        )
        engine = check_dspy_route(dspy_lm, f"{server.url}/v1")

        # The raw contender posts exactly what pylon posts.
        body, pylon_out = capture_pylon_body(pylon_lm, args.prompt)
        if body.get("max_tokens") != args.max_tokens or body.get("temperature") != 0:
            raise SystemExit(f"pylon's body lacks max_tokens/temperature: {body}")
        raw_response = http.post(CHAT_PATH, json=body)
        raw_response.raise_for_status()
        checked = check_same_answers(raw_response.json(), dspy_lm, dspy_lm(args.prompt), pylon_lm, pylon_out)

        def raw() -> None:
            response = http.post(CHAT_PATH, json=body)
            response.raise_for_status()
            response.json()

        prompt = args.prompt
        contenders: list[tuple[str, Callable[[], Any]]] = [
            ("raw", raw),
            ("dspy", lambda: dspy_lm(prompt)),
            ("pylon", lambda: pylon_lm(prompt)),
        ]
        for i in range(args.warmup):
            for _, call in rotated(contenders, i):
                call()

        samples: dict[str, list[float]] = {name: [] for name in NAMES}
        clock = time.perf_counter_ns
        for i in range(args.iterations):
            for name, call in rotated(contenders, i):
                start = clock()
                call()
                samples[name].append((clock() - start) / 1e6)

        # The answers must not have drifted while timing (same server, same text).
        final = dspy_lm.history[-1]["outputs"][0], pylon_lm.history[-1]["outputs"][0]
        if set(final) != {checked["answer"]}:
            raise SystemExit(f"answers changed during the run: {final} vs {checked['answer']!r}")
        pylon_lm.close()
        http.close()
    return {"samples": samples, "engine": engine, "served_model": served_id, **checked}


def report(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    samples: dict[str, list[float]] = result["samples"]
    med = {name: median(samples[name]) for name in NAMES}
    p90 = {name: percentile(samples[name], 90) for name in NAMES}
    over_dspy = med["pylon"] / med["dspy"]
    over_raw = med["pylon"] / med["raw"]
    minus_raw = med["pylon"] - med["raw"]
    # Paired differences (same iteration, adjacent in time) are less exposed to drift.
    paired_raw = median([p - r for p, r in zip(samples["pylon"], samples["raw"], strict=True)])
    paired_dspy = median([p - d for p, d in zip(samples["pylon"], samples["dspy"], strict=True)])
    return {
        "benchmark": "local_overhead",
        "iterations": args.iterations,
        "median_ms": {name: rnd(med[name]) for name in NAMES},
        "p90_ms": {name: rnd(p90[name]) for name in NAMES},
        "ratio_pylon_over_dspy": rnd(over_dspy, 4),
        "ratio_pylon_over_raw": rnd(over_raw, 4),
        "pylon_minus_raw_ms": rnd(minus_raw),
        "targets": {"pylon_over_dspy<=": TARGET_PYLON_OVER_DSPY, "pylon_minus_raw_ms<=": TARGET_PYLON_MINUS_RAW_MS},
        "met": {
            "pylon_over_dspy<=": over_dspy <= TARGET_PYLON_OVER_DSPY,
            "pylon_minus_raw_ms<=": minus_raw <= TARGET_PYLON_MINUS_RAW_MS,
        },
        "paired_median_ms": {"pylon_minus_raw": rnd(paired_raw), "pylon_minus_dspy": rnd(paired_dspy)},
        "warmup": args.warmup,
        "max_tokens": args.max_tokens,
        "dspy_engine": result["engine"],
        "prompt_tokens": result["prompt_tokens"],
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        raise SystemExit("--iterations must be >= 1 and --warmup >= 0")
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    # The tiny model never emits EOS, so every answer stops at max_tokens and DSPy logs a
    # "truncated" warning per call on both LM paths; silence it so stderr I/O is not timed.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="pylon-bench-") as tmp:
        model_path = args.model or write_tiny_gguf(Path(tmp) / "tiny.gguf")
        result = run(args, model_path)
    emit(report(args, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
