"""The ``pylon trace`` commands: re-export a saved trace graph as OpenTelemetry spans.

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
