"""A trace graph as OpenTelemetry spans, through the SDK's own in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import dspy_pylon as pylon
from dspy_pylon.trace.graph import TraceGraph
from dspy_pylon.trace.otel import export, graph_to_spans
from dspy_pylon.trace.recorder import TraceRecorder
from tests.cli_run import run_pylon
from tests.helpers import WholeAnswerAdapter
from tests.trace.test_recorder import Two, _dummy, _examples, compile_small


def _spans_of(recorder: TraceRecorder, **kwargs: object) -> list:
    exporter = InMemorySpanExporter()
    export(recorder.graph, exporter, **kwargs)  # type: ignore[arg-type]
    return list(exporter.get_finished_spans())


def test_an_evaluate_run_is_one_trace_with_every_parent_present() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        dspy.Evaluate(devset=_examples(16), metric=lambda e, p, t=None: True, num_threads=8)(Two())
    spans = _spans_of(recorder)
    assert len(spans) == len(recorder.graph)
    assert len({s.context.trace_id for s in spans}) == 1
    ids = {s.context.span_id for s in spans}
    assert len(ids) == len(spans) and all(s.context.span_id != 0 and s.context.trace_id != 0 for s in spans)
    for span in spans:
        assert span.parent is None or span.parent.span_id in ids
        assert span.end_time > span.start_time
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["evaluate Evaluate"]
    names = {s.name for s in spans}
    assert {"Two", "ChainOfThought", "predict question -> answer", "chat dummy"} <= names
    assert all(s.kind is SpanKind.CLIENT for s in spans if s.name == "chat dummy")


def test_lm_spans_carry_tokens_and_cost_and_parents_carry_none(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=4, cache=False)
    recorder = TraceRecorder()
    with dspy.context(lm=lm, callbacks=[recorder], adapter=WholeAnswerAdapter()):
        Two()(question="Say hi")
    spans = _spans_of(recorder)
    lm_spans = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(lm_spans) == 2
    for span in lm_spans:
        assert span.name == "chat pylon:local:llamacpp" and span.kind is SpanKind.CLIENT
        assert span.attributes["gen_ai.usage.input_tokens"] > 0 and span.attributes["gen_ai.usage.output_tokens"] > 0
        assert span.attributes["pylon.cost_msats"] == 0 and span.attributes["gen_ai.provider.name"] == "llamacpp"
        assert span.attributes["gen_ai.response.model"]
    for span in spans:
        if span not in lm_spans:
            assert "pylon.cost_msats" not in span.attributes and "gen_ai.usage.input_tokens" not in span.attributes
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent Two" and root.attributes["gen_ai.agent.name"] == "Two"


def test_the_same_graph_exports_the_same_spans_and_a_manifest_marks_the_root() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Two()(question="q1")
    program = dspy.Predict("question -> answer")
    manifest = pylon.build_manifest(program, optimizer="LabeledFewShot")
    saved = TraceGraph.from_json(recorder.graph.to_json())
    first = graph_to_spans(recorder.graph, manifest)
    again = graph_to_spans(saved, manifest)
    assert [(s.context.span_id, s.parent and s.parent.span_id, s.name) for s in first] == [
        (s.context.span_id, s.parent and s.parent.span_id, s.name) for s in again
    ]
    [root] = [s for s in first if s.parent is None]
    assert root.attributes["dsrs.compiled_id"] == manifest.compiled_id
    assert root.attributes["dsrs.optimizer"] == "LabeledFewShot"


def test_a_failure_is_an_error_span_with_the_exception() -> None:
    class Broken(dspy.Module):
        def forward(self, question: str) -> None:
            raise ValueError("no answer today")

    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]), pytest.raises(ValueError):
        Broken()(question="q")
    [span] = _spans_of(recorder)
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "ValueError"
    [event] = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert "exception.message" not in event.attributes and "no answer" not in str(span.status.description)


def test_content_is_exported_only_when_asked_for() -> None:
    recorder = TraceRecorder(keep_content=True)
    with dspy.context(lm=DummyLM([{"answer": "secret answer"}]), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="a private question")
    plain = _spans_of(recorder)
    assert not any("private" in str(s.attributes) for s in plain)
    full = _spans_of(recorder, include_content=True)
    assert any("a private question" in str(s.attributes.get("pylon.inputs", "")) for s in full)


def test_export_without_an_exporter_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(pylon.ConfigError):
        export(TraceGraph())


class OtlpReceiver:
    """A real OTLP/HTTP exchange: the SDK's exporter posts protobuf to this receiver, which decodes it
    with the OTLP protocol's own messages (opentelemetry-proto); Phoenix, a full backend, is next."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        received = self.received = []

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                received.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list:
        return [s for r in self.received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.server.shutdown()


def test_otlp_http_export_reaches_a_receiver(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Two()(question="q2")
    spans = export(recorder.graph)
    got = receiver.spans()
    assert len(got) == len(spans) == len(recorder.graph)
    ids = {span.span_id for span in got}
    assert all(not span.parent_span_id or span.parent_span_id in ids for span in got)
    lm = [span for span in got if span.name == "chat dummy"]
    assert len(lm) == 2 and all(span.kind == span.SPAN_KIND_CLIENT for span in lm)


def test_pylon_trace_export_resends_a_saved_graph(receiver: OtlpReceiver, tmp_path: Path) -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        Two()(question="q3")
    saved = tmp_path / "graph.json"
    saved.write_text(recorder.graph.to_json())
    result = run_pylon("trace", "export", str(saved), "--otlp", receiver.url)
    assert result.returncode == 0, result.stderr
    assert f"exported {len(recorder.graph)} spans from 1 run(s)" in result.stdout
    assert len(receiver.spans()) == len(recorder.graph)
    (tmp_path / "bad.json").write_text("{")
    bad = run_pylon("trace", "export", str(tmp_path / "bad.json"), "--otlp", receiver.url)
    assert bad.returncode == 1 and "ManifestError" in bad.stderr and "Traceback" not in bad.stderr


def test_instrument_exports_every_finished_run_without_blocking_it() -> None:
    exporter = InMemorySpanExporter()
    recorder = pylon.trace.instrument(exporter)
    try:
        with dspy.context(lm=_dummy()):
            Two()(question="q1")
            Two()(question="q2")
        assert recorder.flush()
    finally:
        recorder.close()
        dspy.configure(callbacks=[])
    spans = exporter.get_finished_spans()
    # Each run: Two, ChainOfThought, and two predictors with their format, LM and parse nodes.
    assert len(spans) == 2 * (2 + 2 * 4) and len({s.context.trace_id for s in spans}) == 2
    assert len(recorder.graph) == 0  # exported runs are forgotten: a long-lived process does not grow


def test_instrument_without_an_exporter_or_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(pylon.ConfigError):
        pylon.trace.instrument()


def test_candidate_spans_do_not_collide_with_their_compile() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=_dummy(), callbacks=[recorder]):
        compile_small()
    spans = graph_to_spans(recorder.graph)
    assert len({s.context.span_id for s in spans}) == len(spans)
    [candidate] = [s for s in spans if s.attributes["dsrs.node_type"] == "candidate"]
    [compile_span] = [s for s in spans if s.attributes["dsrs.node_type"] == "compile"]
    assert candidate.parent is not None and candidate.parent.span_id == compile_span.context.span_id


def test_without_content_every_span_carries_the_digests_of_what_it_saw() -> None:
    recorder = TraceRecorder()
    with dspy.context(lm=DummyLM([{"answer": "secret answer"}]), callbacks=[recorder]):
        dspy.Predict("question -> answer")(question="a private question")
    spans = _spans_of(recorder)
    assert not any("private" in str(s.attributes) or "secret" in str(s.attributes) for s in spans)
    by_type = {s.attributes["dsrs.node_type"]: s for s in spans}
    node = next(n for n in recorder.graph if n.type.value == "predictor")
    assert by_type["predictor"].attributes["pylon.inputs.sha256"] == node.inputs["sha256"]
    assert by_type["predictor"].attributes["pylon.outputs.sha256"] == node.outputs["sha256"]
