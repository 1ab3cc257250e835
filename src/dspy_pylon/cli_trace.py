"""The ``pylon trace`` commands: re-export a saved trace graph as OpenTelemetry spans; fetch and
verify a trace published as receipts on Nostr.

Registered on the ``pylon`` group by :mod:`dspy_pylon.cli`; OpenTelemetry loads only when it runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from dspy_pylon.plain_errors import PylonError


@click.group()
def trace() -> None:
    """Traces of runs: graph.json files written by pylon.TraceRecorder (or pylon demo)."""


@trace.command("export")
@click.argument("graph_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--otlp", "endpoint", default=None, help="OTLP/HTTP base URL [default: OTEL_EXPORTER_OTLP_ENDPOINT].")
@click.option("--content", is_flag=True, help="Include inputs and outputs, when the graph kept them.")
def trace_export(graph_file: Path, endpoint: str | None, content: bool) -> None:
    """Send a saved trace graph to an OTLP collector (Phoenix, Jaeger...) as spans."""
    try:
        from dspy_pylon.trace.graph import TraceGraph
        from dspy_pylon.trace.otel import export

        graph = TraceGraph.from_json(graph_file.read_bytes())
        exporter = None
        if endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        try:
            spans = export(graph, exporter, include_content=content)
        finally:
            if exporter is not None:
                exporter.shutdown()  # type: ignore[no-untyped-call]
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot read {graph_file}: {exc.strerror or exc}") from exc
    click.echo(f"exported {len(spans)} spans from {len(graph.roots())} run(s) in {graph_file}")


@trace.command("fetch")
@click.argument("event_id")
@click.option("--relay", "relays", multiple=True, required=True, help="A relay to read from (repeatable).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the graph as JSON.")
def trace_fetch(event_id: str, relays: tuple[str, ...], out: Path | None) -> None:
    """Rebuild a trace published as receipts from its summary EVENT_ID, and print it."""
    from dspy_pylon.trace.graph import tree_lines
    from dspy_pylon.trace.nostr_bridge import NostrBridge

    bridge = NostrBridge(relays)
    try:
        fetched = bridge.fetch_trace(event_id)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    finally:
        bridge.close()
    for line in tree_lines(fetched.graph):
        click.echo(line)
    totals = fetched.summary.totals
    click.echo(
        f"{len(fetched.graph)} nodes from {len(fetched.receipts)} receipts and {len(fetched.structures)} structure "
        f"parts; {totals.get('lm_calls', 0)} LM calls, {fetched.summary.cost_msats} msats; "
        f"published by {fetched.summary.event.pubkey[:16]}…"
    )
    if out is not None:
        try:
            out.write_text(fetched.graph.to_json())
        except OSError as exc:
            raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
        click.echo(f"graph written to {out}")


@trace.command("verify")
@click.argument("event_id")
@click.option("--relay", "relays", multiple=True, required=True, help="A relay to read from (repeatable).")
def trace_verify(event_id: str, relays: tuple[str, ...]) -> None:
    """Check a published trace: signatures, the job results its receipts link to, the costs.

    Exits 0 when every check holds, 1 when one does not.
    """
    from dspy_pylon.trace.nostr_bridge import NostrBridge

    bridge = NostrBridge(relays)
    try:
        verification = bridge.verify_trace(event_id)
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    finally:
        bridge.close()
    click.echo(
        f"trace {verification.summary_id[:16]}… by {verification.author[:16]}…: {verification.receipts} receipts, "
        f"{verification.jobs_checked} swarm jobs checked, {verification.cost_msats} msats"
    )
    if verification.ok:
        click.echo("verified: every event signed by its author, every job result by its provider, the costs add up")
        return
    for problem in verification.problems:
        click.echo(f"✗ {problem}", err=True)
    raise SystemExit(1)
