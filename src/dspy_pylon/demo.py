"""``pylon demo``: a small DSPy program on ``pylon:local``, with a per-call table.

Starts the embedded llama.cpp server with the bundled SmolLM2-135M-Instruct model (or
uses whatever local backend is named), answers a few questions through ``dspy.Predict``
and prints, per call, the route taken, tokens, latency and cost.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
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


def run_local_demo(
    console: Console, backend: str = "embedded", questions: tuple[str, ...] = QUESTIONS
) -> list[CallRow]:
    """Run the demo program on ``pylon:local:<backend>`` and print its table; returns the rows."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    import dspy_pylon as pylon
    from dspy_pylon.local.embedded import shared_embedded
    from dspy_pylon.usage import pylon_data

    if backend == "embedded":
        with console.status("starting the embedded llama.cpp server (SmolLM2-135M-Instruct)..."):
            started = time.perf_counter()
            server = shared_embedded()
        console.print(
            f"[green]✓[/] embedded llama.cpp at {server.url} "
            f"({server.model_path.name}, ready in {(time.perf_counter() - started) * 1000:.0f} ms)"
        )
    lm = pylon.LM(f"pylon:local:{backend}", max_tokens=48, temperature=0.0, cache=False)
    # A 135M model often rambles to max_tokens; the table shows that, DSPy need not warn per call.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    qa = dspy.Predict("question -> answer")
    rows: list[CallRow] = []
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn(), TimeElapsedColumn()]
    with dspy.context(lm=lm, adapter=_forgiving_adapter()), Progress(*columns, console=console) as progress:
        task = progress.add_task("pylon:local", total=len(questions))
        for question in questions:
            progress.update(task, description=f"pylon:local  {question[:40]}")
            answer = str(qa(question=question).answer)
            entry = lm.history[-1]
            data = pylon_data(getattr(entry["response"], "provider_data", None))
            usage = entry.get("usage") or {}
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
                )
            )
            progress.advance(task)
    console.print(calls_table("pylon:local — one row per LM call", rows))
    total = lm.usage()
    console.print(
        f"{len(rows)} calls, {total.prompt_tokens} prompt + {total.completion_tokens} completion tokens, "
        f"spent {lm.total_spent_msats()} msats"
    )
    return rows


def calls_table(title: str, rows: list[CallRow]) -> Table:
    """A rich table with one row per call."""
    models = sorted({row.model for row in rows})
    table = Table(title=f"{title}\nmodel: {', '.join(models)}", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("question", ratio=1)
    table.add_column("answer", ratio=1)
    table.add_column("route", no_wrap=True)
    table.add_column("tokens\nin/out", justify="right", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for i, row in enumerate(rows, 1):
        lines = row.answer.strip().splitlines()
        answer = lines[0] if lines else ""
        answer = answer if len(answer) <= 80 else answer[:77] + "..."
        table.add_row(
            str(i),
            row.question,
            answer,
            f"{row.venue}/{row.backend}",
            f"{row.prompt_tokens}/{row.completion_tokens}",
            f"{row.latency_ms:.0f} ms",
            f"{row.cost_msats} msat",
        )
    return table
