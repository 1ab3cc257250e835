"""``pylon demo``: one small DSPy program on ``pylon:local``, ``pylon:swarm`` and ``pylon:hybrid``,
and a compiled program as a signed, verified artifact.

Everything is embedded and ephemeral: llama.cpp with the bundled SmolLM2-135M-Instruct,
a nostr-sdk relay on a free loopback port, the development wallet (NIP-47, no real
money) with a funded customer account, a priced provider node with its own llama.cpp,
and throw-away keys (the user's identity, ledger and reputation files are not touched).
Swarm calls are paid over Nostr Wallet Connect within a budget. The hybrid part stops
the local server first, so every call falls back to the (paid) swarm. It ends with the
spend ledger, one row per paid call, and both wallet balances. Between the local and the
swarm parts, ``pylon.compile`` optimizes a small program (BootstrapFewShot), scores it before
and after, and saves it signed; it is verified, reloaded, and refused once a byte changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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

if TYPE_CHECKING:
    from dspy_pylon.lm import PylonLM

#: What the demo provider charges per job, the customer's bid, funds and budget.
PRICE_MSATS = 1_500
BID_MSATS = 2_000
CUSTOMER_FUNDS_MSATS = 100_000
BUDGET_SATS = 50
#: The demo node's sandbox prices: per job, and per CPU-second a job may use (billed before it runs).
SANDBOX_BASE_MSATS = 1_000
SANDBOX_CPU_SECOND_MSATS = 10
SANDBOX_LIMITS = {"cpus": 1, "memory_mb": 256, "timeout_secs": 20, "disk_mb": 64}
#: The small project the sandbox job tests: a module and its unittest suite, sent as an inline tarball.
SANDBOX_PROJECT = {
    "plural.py": "def plural(word):\n    return word[:-1] + 'ies' if word.endswith('y') else word + 's'\n",
    "test_plural.py": (
        "import unittest\nfrom plural import plural\n\n\nclass Plural(unittest.TestCase):\n"
        "    def test_regular(self):\n        self.assertEqual(plural('cat'), 'cats')\n\n"
        "    def test_y(self):\n        self.assertEqual(plural('city'), 'cities')\n\n"
        "    def test_word(self):\n        self.assertEqual(plural('word'), 'words')\n"
    ),
}

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
        rows = run_program(console, "pylon:local", lm, questions)
        run_structured(console, lm)
    return rows


def run_structured(console: Console, lm: Any, enforced_by: str | None = None) -> None:
    """Typed outputs through DSPy's JSONAdapter: the backend enforces the schema pylon sends
    (over the swarm, in a ``pylon.chat.v2`` job, the provider's backend does)."""
    import dspy

    from dspy_pylon.usage import pylon_data

    class CityFacts(dspy.Signature):  # type: ignore[misc]  # dspy ships no types
        """Facts about a city."""

        city: str = dspy.InputField()
        country: str = dspy.OutputField()
        is_capital: bool = dspy.OutputField()
        continent: Literal["Africa", "America", "Asia", "Europe", "Oceania"] = dspy.OutputField()

    structured = lm.copy(max_tokens=96)
    started = time.perf_counter()
    with dspy.context(lm=structured, adapter=dspy.JSONAdapter()):
        facts = dspy.Predict(CityFacts)(city="Paris")
    cost = pylon_data(structured.history[-1]["response"].provider_data).get("cost_msats", 0)
    console.print(
        f"[green]✓[/] structured output (JSONAdapter, schema enforced by {enforced_by or lm.route().backend}): "
        f"country={facts.country!r} is_capital={facts.is_capital!r} continent={facts.continent!r} "
        f"({(time.perf_counter() - started) * 1000:.0f} ms, {cost} msats)"
    )


#: The compile part's task: a 135M model answers ``{plural}`` zero-shot and learns the format
#: (and the answers) from three demos; measured in every run, not assumed.
PLURALS = (
    ("cat", "cats"),
    ("dog", "dogs"),
    ("book", "books"),
    ("car", "cars"),
    ("tree", "trees"),
    ("house", "houses"),
    ("bird", "birds"),
    ("cup", "cups"),
    ("shoe", "shoes"),
)


def plural_correct(example: Any, prediction: Any, trace: Any = None) -> bool:
    """The demo's metric: the predicted plural, trimmed and lower-cased, is the expected one."""
    answer = str(prediction.get("plural", "") or "").strip().lower().rstrip(".")
    return bool(answer == example.plural)


def run_compile_demo(console: Console, backend: str = "embedded", rollouts: int = 2) -> Any:
    """The compiler contract: compile a program on ``pylon:local``, score it before and after,
    save it signed, verify and reload it, and show that a changed byte is refused."""
    import dspy

    import dspy_pylon as pylon
    from dspy_pylon.cli_manifest import manifest_table
    from dspy_pylon.contract.files import PROGRAM_FILE

    lm = pylon.LM(f"pylon:local:{backend}", max_tokens=24, temperature=0.0)
    examples = [dspy.Example(word=w, plural=p).with_inputs("word") for w, p in PLURALS]
    train, val = examples[:4], examples[4:]
    optimizer = dspy.BootstrapFewShot(metric=plural_correct, max_bootstrapped_demos=3, max_labeled_demos=3)
    started = time.perf_counter()
    with (
        dspy.context(lm=lm),
        _quiet_dspy(),
        warnings.catch_warnings(),
        console.status("compiling word -> plural with BootstrapFewShot..."),
    ):
        # At temperature 0 the rollouts repeat each other (DSPy says so once); the demo knows.
        warnings.filterwarnings("ignore", category=UserWarning, module="dspy")
        compiled, manifest = pylon.compile(
            dspy.Predict("word -> plural"), optimizer, train, val, metric=plural_correct, rollouts=rollouts
        )
    before, after = manifest.baseline_scorecard, manifest.scorecard
    assert before is not None and after is not None
    _started(
        console,
        f"compiled: {plural_correct.__name__} {before.median_score:.2f} → {after.median_score:.2f} "
        f"(median of {rollouts} rollouts on {len(val)} held-out words)",
        started,
    )
    with tempfile.TemporaryDirectory(prefix="pylon-compiled-") as tmp:
        # A throw-away key signs it: the demo never touches the user's identity.
        signer = pylon.Identity(os.urandom(32))
        directory = pylon.save_compiled(compiled, manifest, Path(tmp) / "plural", identity=signer)
        verified = pylon.verify_compiled(directory, trusted_signers=[signer.npub])
        console.print(manifest_table(verified.manifest, verified.signer))
        loaded, _ = pylon.load_compiled(directory, dspy.Predict("word -> plural"), lm=lm, trusted_signers=[signer.npub])
        with _quiet_dspy():
            answer = loaded(word="lamp").plural
        console.print(
            f"[green]✓[/] saved to {directory.name}/ (program.json + manifest.json, signed by {signer.npub[:16]}…), "
            f"verified, reloaded: compiled_id {pylon.compiled_id_of(loaded)[:16]}… — lamp → {answer!r}"
        )
        program_file = directory / PROGRAM_FILE
        data = bytearray(program_file.read_bytes())
        data[data.index(b"cats")] = ord("b")
        program_file.write_bytes(bytes(data))
        try:
            pylon.load_compiled(directory, dspy.Predict("word -> plural"), lm=lm)
        except pylon.IntegrityError as refused:
            console.print(f"[yellow]■[/] one byte of {PROGRAM_FILE} changed (cats → bats): {type(refused).__name__}")
        else:
            raise AssertionError("a changed program.json was loaded")
    return manifest


def run_swarm_demo(console: Console, questions: tuple[str, ...] = QUESTIONS) -> tuple[list[CallRow], list[CallRow]]:
    """The paid swarm part (``pylon:swarm``, its calls published as signed receipts and rebuilt
    from the relay), then hybrid with the local server stopped; the spend."""
    import dspy
    import nostr_sdk

    import dspy_pylon as pylon
    from dspy_pylon.local.embedded import shared_embedded
    from dspy_pylon.pay.dev_wallet import DEV_WALLET_LABEL
    from dspy_pylon.testing import LocalSwarm
    from dspy_pylon.trace.recorder import TraceRecorder

    with tempfile.TemporaryDirectory(prefix="pylon-demo-") as tmp:
        started = time.perf_counter()
        # Everything under tmp: the demo's ledger and reputation stay out of the user's home.
        offer, refusal = _sandbox_offer()
        settings: dict[str, Any] = {"name": "pylon demo", **({"sandbox": offer} if offer is not None else {})}
        swarm = LocalSwarm(tmp, price_msats=PRICE_MSATS, funds_msats=CUSTOMER_FUNDS_MSATS, provider_settings=settings)
        with console.status("starting an embedded relay, the development wallet and a priced provider..."):
            swarm.start()
        kinds = "kinds 5050 and 5930 (sandbox)" if offer is not None else "kind 5050"
        _started(console, f"relay at {swarm.url}; provider {swarm.nodes[0].pubkey[:12]}… serving {kinds}", started)
        console.print(
            f"[green]✓[/] {DEV_WALLET_LABEL}: customer funded with {CUSTOMER_FUNDS_MSATS} msats; "
            f"provider price {PRICE_MSATS} msats per job; customer bid {BID_MSATS} msats, budget {BUDGET_SATS} sats"
        )
        try:
            customer = nostr_sdk.Keys.generate().secret_key().to_hex()

            def paying_lm(venue: pylon.Swarm | pylon.Hybrid) -> pylon.PylonLM:
                return swarm.lm(
                    venue=venue,
                    budget_sats=BUDGET_SATS,
                    private_key=customer,
                    max_tokens=48,
                    temperature=0.0,
                    cache=False,
                )

            swarm_lm = paying_lm(pylon.Swarm(relays=(swarm.url,), bid_msats=BID_MSATS, auto_pay=True))
            swarm_part = TraceRecorder()  # the paid calls, published as receipts below
            with _quiet_dspy(), dspy.context(callbacks=[*(dspy.settings.get("callbacks", None) or []), swarm_part]):
                swarm_rows = run_program(console, "pylon:swarm", swarm_lm, questions)
            _show_receipts(console, swarm_part, swarm.url, customer)
            with _quiet_dspy():
                run_structured(console, swarm_lm, "the provider's llama.cpp, sent in a pylon.chat.v2 job")
            _show_private_job(console, paying_lm, swarm.url, swarm.nodes[0].pubkey)
            console.print(f"budget left: {swarm_lm.remaining_budget_msats()} msats")
            one_sat = swarm.lm(bid_msats=BID_MSATS, budget_sats=1, private_key=customer, cache=False, num_retries=0)
            _show_budget_refusal(console, one_sat)

            _show_refine(console, pylon.LM("pylon:local", max_tokens=16, temperature=0.0, cache=False), swarm_lm)
            local = shared_embedded()
            local.stop()
            console.print(f"[yellow]■[/] local llama.cpp at {local.url} stopped: pylon:hybrid must fall back")
            hybrid_lm = paying_lm(
                pylon.Hybrid(
                    backend="llamacpp", base_url=local.url, relays=(swarm.url,), bid_msats=BID_MSATS, auto_pay=True
                )
            )
            with _quiet_dspy():
                hybrid_rows = run_program(console, "pylon:hybrid", hybrid_lm, questions)
            if offer is not None:
                _show_sandbox_job(console, swarm, customer)
            else:
                console.print(f"[yellow]■[/] no sandbox job: this host cannot isolate one ({refusal})")
            console.print(spend_table(swarm.ledger_path))
            console.print(
                f"{DEV_WALLET_LABEL} — balances: customer {swarm.balance('customer')} msats "
                f"(started with {CUSTOMER_FUNDS_MSATS}), provider {swarm.balance('provider-0')} msats"
            )
        finally:
            swarm.close()
    return swarm_rows, hybrid_rows


def _show_receipts(console: Console, recorder: Any, relay: str, secret_key: str) -> None:
    """Publish the recorded runs as signed receipts, rebuild the trace from the relay, verify it."""
    from dspy_pylon.trace.graph import tree_lines
    from dspy_pylon.trace.nostr_bridge import NostrBridge

    publisher = NostrBridge([relay], secret_key)
    reader = NostrBridge([relay])
    try:
        published = publisher.publish_trace(recorder.graph)
        fetched = reader.fetch_trace(published.summary_id)
        verification = reader.verify_trace(published.summary_id)
    finally:
        publisher.close()
        reader.close()
    same = "identical to the recorded one" if fetched.graph.to_json() == recorder.graph.to_json() else "DIFFERENT"
    console.print(
        f"[green]✓[/] receipts: {len(published.event_ids)} signed kind-3590 events (one per LM call, "
        f"{len(published.structure_ids)} structure, {len(published.index_ids)} index, the summary "
        f"{published.summary_id[:16]}…) on {relay}"
    )
    console.print(f"  rebuilt from the relay ({len(fetched.graph)} nodes, {same}):", markup=False)
    for line in tree_lines(fetched.graph):
        console.print(f"    {line}", markup=False, highlight=False)
    if verification.ok:
        console.print(
            f"[green]✓[/] verified: {verification.jobs_checked} job results signed by the provider each receipt "
            f"names, costs add up to {verification.cost_msats} msats"
        )
    else:
        console.print(f"[red]✗[/] receipts do not verify: {'; '.join(verification.problems)}")


def _show_refine(console: Console, local_lm: Any, fallback_lm: Any) -> None:
    """pylon.Refine with the local model first and the paid swarm as its fallback: each attempt's
    route, score and cost."""
    import dspy

    import dspy_pylon as pylon

    def reward(inputs: dict[str, Any], prediction: Any) -> tuple[float, str | None]:
        answer = str(prediction.answer).strip().rstrip(".")
        return (1.0, None) if answer == "4" else (0.0, f"{answer[:24]!r} is not the digit 4")

    refine = pylon.Refine(
        dspy.Predict("question -> answer"),
        max_retries=1,
        reward_fn=reward,
        threshold=1.0,
        fallback=fallback_lm,
        on_failure="best",
    )
    with _quiet_dspy(), dspy.context(lm=local_lm, adapter=_forgiving_adapter()):
        result = refine.run(question="What is 2 + 2? Reply with the digit only.")
    table = Table(title="pylon.Refine — local first, the paid swarm as fallback", box=box.SIMPLE_HEAD)
    for column in ("attempt", "route", "score", "cost", "feedback / error"):
        table.add_column(column)
    for attempt in result.attempts:
        said = attempt.feedback or (f"{attempt.error_type}: {attempt.error}" if attempt.error_type else "")
        table.add_row(
            str(attempt.index),
            f"{'fallback' if attempt.fallback else 'primary'} {attempt.lm}",
            "-" if attempt.score is None else f"{attempt.score:.1f}",
            f"{attempt.cost_msats} msats",
            said,
        )
    console.print(table)
    verdict = "reached the threshold" if result.met_threshold else "did not reach the threshold (best kept)"
    who = "the fallback" if result.used_fallback else "the primary"
    console.print(
        f"Refine: {len(result.attempts)} attempts, {verdict}, {who} answered "
        f"{str(result.prediction.answer)[:40]!r}, {result.cost_msats} msats"
    )


def _show_private_job(console: Console, paying_lm: Any, relay: str, provider: str) -> None:
    """One job to one provider: its inputs, params and answer encrypted to it."""
    import dspy_pylon as pylon

    lm = paying_lm(pylon.Swarm(relays=(relay,), providers=(provider,), bid_msats=BID_MSATS, auto_pay=True))
    [answer] = lm("Name one primary color.")
    data = lm.history[-1]["response"].provider_data["pylon"]
    said = answer.strip()[:60]
    console.print(
        f"[green]✓[/] private job to provider {provider[:12]}…: prompt, params and answer encrypted "
        f"({data['encryption']}, the scheme its announcement names), {data['cost_msats']} msats: {said!r}"
    )


def _sandbox_offer() -> tuple[Any, str]:
    """The demo node's sandbox offer, or None and why when this host cannot isolate jobs (no
    bubblewrap, no cgroup controllers, no tmpfs): the node then sells inference only."""
    from dspy_pylon.errors import SandboxRefused
    from dspy_pylon.sandbox import SandboxExecutor, SandboxOffer

    try:
        SandboxExecutor().probe()
    except SandboxRefused as exc:
        return None, str(exc)
    return SandboxOffer(base_msats=SANDBOX_BASE_MSATS, msats_per_cpu_second=SANDBOX_CPU_SECOND_MSATS), ""


def _show_sandbox_job(console: Console, swarm: Any, customer: str) -> None:
    """A paid sandbox job on the provider node: a small project's test suite, run under
    bubblewrap and cgroups there, its result verified here (provenance, hashes, status)."""
    import base64
    import io
    import tarfile

    from dspy_pylon.sandbox import PylonSandboxProvider, parse_request

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, text in SANDBOX_PROJECT.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    request = parse_request(
        {
            "commands": [{"cmd": "python3 -m unittest -v 2>&1", "workdir": "repo"}],
            "repo": {"kind": "tarball", "tarball_b64": base64.b64encode(buf.getvalue()).decode()},
            "resources": SANDBOX_LIMITS,
        }
    )
    node = swarm.nodes[0].pubkey
    client = PylonSandboxProvider(
        (swarm.url,),
        private_key=customer,
        providers=(node,),
        bid_msats=BID_MSATS,
        budget_sats=BUDGET_SATS,
        nwc_uri=swarm.customer_uri(),
        home=swarm.home,
    )
    with client:
        outcome = client.run(request)
    response, evidence = outcome.response, outcome.response.evidence
    [run] = response.runs
    summary = [line for line in run.stdout_preview.splitlines() if line.startswith(("Ran ", "OK", "FAILED"))]
    table = Table(title=f"sandbox job on provider {node[:12]}… (kind 5930, bubblewrap + cgroups)", box=box.SIMPLE_HEAD)
    for column in ("status", "command", "exit", "wall", "CPU", "memory peak", "cost", "tests"):
        table.add_column(column, justify="left" if column in ("status", "command", "tests") else "right")
    table.add_row(
        response.status.value,
        run.cmd,
        str(run.exit_code),
        f"{evidence.wall_ms} ms",
        f"{evidence.cpu_ms} ms",
        f"{evidence.memory_peak_bytes // 1024} KiB",
        f"{outcome.cost_msats} msat",
        " / ".join(summary),
    )
    console.print(table)
    provenance = response.provenance
    assert provenance is not None  # verified: a result without it is refused
    console.print(
        f"[green]✓[/] sandbox result verified ({len(outcome.verification.checked)} checks: provenance, "
        f"output hashes, status from evidence): input sha256 {provenance.input_sha256[:16]}…, "
        f"output sha256 {provenance.output_sha256[:16]}…, stdout sha256 {run.stdout_sha256[:16]}…; "
        f"billed before it ran: {SANDBOX_BASE_MSATS} + {SANDBOX_CPU_SECOND_MSATS} x 1 CPU x "
        f"{SANDBOX_LIMITS['timeout_secs']} s = {outcome.cost_msats} msats"
    )


def _show_budget_refusal(console: Console, lm: PylonLM) -> None:
    """One call whose bid does not fit its budget (1 sat): refused before anything is published."""
    import dspy_pylon as pylon

    try:
        lm("one more question")
    except Exception as exc:  # DSPy wraps pylon's BudgetExceeded in its LMBillingError
        cause = exc.__cause__ if isinstance(exc.__cause__, pylon.BudgetExceeded) else exc
        console.print(f"[yellow]■[/] budget of 1 sat: {type(cause).__name__}: {cause}")
    else:
        raise AssertionError("a 2000 msat bid fitted in a 1 sat budget")


def spend_table(ledger_path: Path) -> Table:
    """The spend ledger as a table: one row per paid call."""
    from dspy_pylon.pay.ledger import SpendLedger

    ledger = SpendLedger(ledger_path)
    try:
        entries = ledger.entries("spent")
        total = ledger.total_paid_msats()
    finally:
        ledger.close()
    table = Table(title=f"spend ledger — {len(entries)} jobs, {total} msats paid", box=box.SIMPLE_HEAD)
    for column in ("#", "job", "provider", "bid", "paid", "tokens\nin/out", "latency", "state"):
        table.add_column(column, justify="left" if column in ("job", "provider", "state") else "right")
    for i, entry in enumerate(entries, 1):
        table.add_row(
            str(i),
            entry.job_id[:10] + "…",
            entry.provider[:10] + "…" if entry.provider else "-",
            f"{entry.bid_msats} msat",
            f"{entry.paid_msats} msat",
            f"{entry.prompt_tokens}/{entry.completion_tokens}",
            "-" if entry.latency_ms is None else f"{entry.latency_ms:.0f} ms",
            entry.state,
        )
    return table


def run_demo(console: Console, backend: str = "embedded", keep_hud: bool = False) -> None:
    """The whole demo: local, compile, then swarm and hybrid, all of it traced and shown live on
    the HUD (its URL printed first; with ``keep_hud`` it stays up after the run until Ctrl-C)."""
    import dspy

    from dspy_pylon import hud as pylon_hud
    from dspy_pylon.trace.recorder import TraceRecorder

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    hud = pylon_hud.open(announce=False)
    console.print(f"[green]✓[/] live HUD at {hud.url} — open it to watch the run (the call tree, spend, candidates)")
    recorder = TraceRecorder()
    dspy.configure(callbacks=[*(dspy.settings.get("callbacks", None) or []), recorder])
    try:
        run_local_demo(console, backend)
        run_compile_demo(console, backend)
        run_swarm_demo(console)
    finally:  # what ran is traced even when a part failed
        write_trace(console, recorder)
        console.print(f"[green]✓[/] HUD: {hud.server.log.last_id} events shown, {hud.callback.dropped} dropped")
        try:
            if keep_hud:
                console.print(f"the HUD stays at {hud.url} — Ctrl-C to stop")
                _wait_for_interrupt()
        finally:
            hud.close()


def _wait_for_interrupt() -> None:
    import threading

    with suppress(KeyboardInterrupt):
        threading.Event().wait()


def write_trace(console: Console, recorder: Any) -> Path:
    """Write the demo's trace graph and its OpenTelemetry spans to files (and export them over OTLP
    when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set); print where, and what the run paid."""
    import json

    from dspy_pylon.trace.graph import NodeType
    from dspy_pylon.trace.otel import export, graph_to_spans, otlp_endpoint_set
    from dspy_pylon.trace.receipts import Totals

    graph = recorder.snapshot()
    directory = Path(tempfile.mkdtemp(prefix="pylon-demo-trace-"))
    (directory / "graph.json").write_text(graph.to_json())
    spans = graph_to_spans(graph)
    (directory / "spans.json").write_text(json.dumps([json.loads(span.to_json()) for span in spans], indent=1))
    calls = [n for n in graph if n.type is NodeType.LM]
    tokens = sum((n.usage or {}).get("prompt_tokens", 0) + (n.usage or {}).get("completion_tokens", 0) for n in calls)
    cost = Totals.of(graph).cost_msats  # LM calls, tools and sandbox jobs: what the run paid
    where = ""
    if otlp_endpoint_set():
        export(graph)
        where = ", exported over OTLP"
    console.print(
        f"[green]✓[/] trace: {len(graph)} nodes in {len(graph.roots())} runs, {len(calls)} LM calls, "
        f"{tokens} tokens, {cost} msats → {directory}/graph.json, spans.json ({len(spans)} spans){where}"
    )
    return directory


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
