"""``pylon demo``: one small DSPy program on ``pylon:local``, ``pylon:swarm`` and ``pylon:hybrid``.

Everything is embedded and ephemeral: llama.cpp with the bundled SmolLM2-135M-Instruct,
a nostr-sdk relay on a free loopback port, a provider node with its own llama.cpp, and
throw-away keys (the user's identity and reputation files are not touched). The hybrid
part stops the local server first, so every call falls back to the swarm.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

QUESTIONS = (
    "What is the capital of France?",
    "What color is the sky on a clear day?",
    "How many legs does a spider have?",
    "What is the largest planet in the solar system?",
    "Which ocean lies between Europe and North America?",
)


@dataclass(frozen=True)
class CallRow:
    """One demo call as shown in the table."""

    question: str
    answer: str
    venue: str
    backend: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_msats: int
    provider: str = ""
    note: str = ""

    @property
    def route(self) -> str:
        """Where the call went, for the table."""
        route = f"{self.venue}/{self.backend}"
        if self.provider:
            route += f" {self.provider[:10]}…"
        return route


def _forgiving_adapter() -> Any:
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    class ForgivingChatAdapter(dspy.ChatAdapter):  # type: ignore[misc]
        """ChatAdapter that, for a one-field answer, takes the whole reply when a tiny
        model forgets DSPy's field markers (SmolLM2-135M often does)."""

        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            try:
                parsed: dict[str, Any] = super().parse(signature, completion)
                return parsed
            except AdapterParseError:
                fields = list(signature.output_fields)
                if len(fields) != 1:
                    raise
                return {fields[0]: completion.strip()}

    return ForgivingChatAdapter()


def run_program(console: Console, label: str, lm: Any, questions: tuple[str, ...]) -> list[CallRow]:
    """Answer ``questions`` with ``dspy.Predict`` on ``lm``; print and return one row per call."""
    import dspy

    from dspy_pylon.usage import pylon_data

    qa = dspy.Predict("question -> answer")
    rows: list[CallRow] = []
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn(), TimeElapsedColumn()]
    with dspy.context(lm=lm, adapter=_forgiving_adapter()), Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=len(questions))
        for question in questions:
            progress.update(task, description=f"{label}  {question[:36]}")
            answer = str(qa(question=question).answer)
            entry = lm.history[-1]
            data = pylon_data(getattr(entry["response"], "provider_data", None))
            usage = entry.get("usage") or {}
            reason = str(data.get("fallback_reason", ""))
            rows.append(
                CallRow(
                    question=question,
                    answer=answer,
                    venue=str(data.get("venue", "?")),
                    backend=str(data.get("backend", "?")),
                    model=os.path.basename(str(data.get("model", "?"))),
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                    latency_ms=float(data.get("latency_ms", 0.0)),
                    cost_msats=int(entry.get("cost") or 0),
                    provider=str(data.get("provider", "")),
                    note=f"local failed: {reason.split(':', 1)[0]}" if reason else "",
                )
            )
            progress.advance(task)
    console.print(calls_table(f"{label} — one row per LM call", rows))
    total = lm.usage()
    console.print(
        f"{len(rows)} calls, {total.prompt_tokens} prompt + {total.completion_tokens} completion tokens, "
        f"spent {lm.total_spent_msats()} msats\n"
    )
    return rows


@contextmanager
def _quiet_dspy() -> Iterator[None]:
    # A 135M model often rambles to max_tokens; the table shows that, DSPy need not warn per call.
    logger = logging.getLogger("dspy.clients.lm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _started(console: Console, what: str, started: float) -> None:
    console.print(f"[green]✓[/] {what} ({(time.perf_counter() - started) * 1000:.0f} ms)")


def run_local_demo(
    console: Console, backend: str = "embedded", questions: tuple[str, ...] = QUESTIONS
) -> list[CallRow]:
    """The local part: ``pylon:local:<backend>`` (starting the embedded server if named)."""
    import dspy_pylon as pylon
    from dspy_pylon.local.embedded import shared_embedded

    if backend == "embedded":
        started = time.perf_counter()
        with console.status("starting the embedded llama.cpp server (SmolLM2-135M-Instruct)..."):
            server = shared_embedded()
        _started(console, f"embedded llama.cpp at {server.url} ({server.model_path.name})", started)
    lm = pylon.LM(f"pylon:local:{backend}", max_tokens=48, temperature=0.0, cache=False)
    with _quiet_dspy():
        return run_program(console, "pylon:local", lm, questions)


class DemoSwarm:
    """An embedded relay and one provider node with its own llama.cpp server, on their own loops."""

    def __init__(self, state_dir: Path) -> None:
        import nostr_sdk

        from dspy_pylon.local.embedded import EmbeddedLlama
        from dspy_pylon.nostr.loop import NostrLoop
        from dspy_pylon.nostr.relay_server import start_embedded_relay
        from dspy_pylon.swarm.provider import ProviderNode, ProviderSettings

        self.loop = NostrLoop("pylon-demo")
        self.relay, self.url = self.loop.run(start_embedded_relay())
        self.llama = EmbeddedLlama().start()
        settings = ProviderSettings(
            relays=(self.url,),
            state_dir=state_dir,
            backend="llamacpp",
            backend_url=self.llama.url,
            name="pylon demo provider",
        )
        self.node = ProviderNode(nostr_sdk.Keys.generate(), settings)
        self.loop.run(self.node.start(), 60)
        self.serving = self.loop.submit(self.node.serve())

    def close(self) -> None:
        """Stop the provider (finishing jobs in flight), its llama.cpp and the relay."""
        self.loop.loop.call_soon_threadsafe(self.node.request_stop)
        self.serving.result(60)
        self.llama.stop()
        self.relay.shutdown()
        self.loop.stop()


def run_swarm_demo(console: Console, questions: tuple[str, ...] = QUESTIONS) -> tuple[list[CallRow], list[CallRow]]:
    """The swarm part (``pylon:swarm``) and the hybrid part with the local server stopped."""
    import nostr_sdk

    import dspy_pylon as pylon
    from dspy_pylon.local.embedded import shared_embedded

    with tempfile.TemporaryDirectory(prefix="pylon-demo-") as tmp:
        previous_home = os.environ.get("PYLON_HOME")
        os.environ["PYLON_HOME"] = tmp  # reputation of throw-away providers stays out of the user's home
        started = time.perf_counter()
        with console.status("starting an embedded relay and a provider node..."):
            swarm = DemoSwarm(Path(tmp) / "provider")
        _started(console, f"relay at {swarm.url}; provider {swarm.node.pubkey[:12]}… serving kind 5050", started)
        try:
            customer = nostr_sdk.Keys.generate().secret_key().to_hex()
            config = pylon.PylonConfig(venue=pylon.Swarm(relays=(swarm.url,)), timeout=60)
            swarm_lm = pylon.PylonLM.swarm(customer, config, max_tokens=48, temperature=0.0, cache=False)
            with _quiet_dspy():
                swarm_rows = run_program(console, "pylon:swarm", swarm_lm, questions)

            local = shared_embedded()
            os.environ["LLAMACPP_URL"] = local.url
            local.stop()
            console.print(f"[yellow]■[/] local llama.cpp at {local.url} stopped: pylon:hybrid must fall back")
            hybrid = pylon.PylonConfig(venue=pylon.Hybrid(backend="llamacpp", relays=(swarm.url,)), timeout=60)
            hybrid_lm = pylon.PylonLM.swarm(customer, hybrid, max_tokens=48, temperature=0.0, cache=False)
            with _quiet_dspy():
                hybrid_rows = run_program(console, "pylon:hybrid", hybrid_lm, questions)
        finally:
            swarm.close()
            if previous_home is None:
                os.environ.pop("PYLON_HOME", None)
            else:
                os.environ["PYLON_HOME"] = previous_home
    return swarm_rows, hybrid_rows


def run_demo(console: Console, backend: str = "embedded") -> None:
    """The whole demo: local, then swarm, then hybrid."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    run_local_demo(console, backend)
    run_swarm_demo(console)


def calls_table(title: str, rows: list[CallRow]) -> Table:
    """A rich table with one row per call."""
    models = sorted({row.model for row in rows})
    table = Table(title=f"{title}\nmodel: {', '.join(models)}", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("question", ratio=1)
    table.add_column("answer", ratio=1)
    table.add_column("route", ratio=1)
    table.add_column("tokens\nin/out", justify="right", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for i, row in enumerate(rows, 1):
        lines = row.answer.strip().splitlines()
        answer = lines[0] if lines else ""
        answer = answer if len(answer) <= 80 else answer[:77] + "..."
        route = row.route + (f"\n({row.note})" if row.note else "")
        table.add_row(
            str(i),
            row.question,
            answer,
            route,
            f"{row.prompt_tokens}/{row.completion_tokens}",
            f"{row.latency_ms:.0f} ms",
            f"{row.cost_msats} msat",
        )
    return table
