"""A recorded-response HTTP server standing in for Ollama and the Apple FM bridge in tests.

This is a test double, used only because no real Ollama server and no Apple Foundation
Models bridge can run on the machines this suite runs on (no package registry carries
Ollama, and the bridge needs macOS 26+). It serves the real-shaped bodies recorded in
``tests/local/recorded/`` on the routes the real servers use, and mimics the few
behaviours of theirs that pylon relies on:

* Ollama (``profile="ollama"``): ``GET /api/version``, ``GET /api/tags``, ``GET /``
  ("Ollama is running"), ``POST /v1/chat/completions`` and its native ``POST /api/chat``
  (bodies shaped as Ollama's API reference documents them: a tool call when tools were
  sent, NDJSON lines when streaming). Like Ollama, chat echoes the
  requested model name, accepts ``name`` for ``name:latest``, and answers an unknown
  model with its 404 ``model "..." not found, try pulling it first``.
* Apple FM bridge (``profile="fm_bridge"``): ``GET /health``, ``GET /v1/models`` and
  ``POST /v1/chat/completions``.

Streaming requests (``"stream": true``) get the recorded chunks as server-sent events in
chunked transfer encoding, the usage chunk only when ``stream_options.include_usage`` is
set, then ``data: [DONE]`` — as the real servers send them.

Every request is recorded (method, path, decoded JSON body) so tests can assert what
pylon sent; :meth:`RecordedServer.fail` makes a route answer with an error instead.
``tests/local/test_live_backends.py`` exercises the real servers when they answer.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

RECORDED = Path(__file__).parent / "recorded"

Profile = Literal["ollama", "fm_bridge"]

CHAT_PATH = "/v1/chat/completions"
NATIVE_CHAT_PATH = "/api/chat"


def load_recorded(profile: Profile, name: str) -> Any:
    """One recorded JSON body, e.g. ``load_recorded("ollama", "api_tags")``."""
    return json.loads((RECORDED / profile / f"{name}.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the server received: method, path and its JSON body (None if none)."""

    method: str
    path: str
    body: Any


@dataclass(frozen=True)
class Failure:
    """A canned error answer for a route."""

    status: int
    body: Any


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: RecordedServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET", None)

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, "HEAD", None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            self.server.owner._record("POST", self.path, raw.decode("utf-8", "replace"))
            self.server.owner._send_json(self, 400, {"error": {"message": "invalid JSON body"}})
            return
        self.server.owner._handle(self, "POST", body)


class RecordedServer:
    """Serves recorded Ollama or Apple FM bridge responses on ``127.0.0.1`` (a free port).

    Use as a context manager. ``url`` is ``http://127.0.0.1:<port>``; ``host_port`` is the
    same without a scheme (how ``OLLAMA_HOST`` is usually written).
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._lock = threading.Lock()
        self._received: list[ReceivedRequest] = []
        self._failures: dict[str, Failure] = {}
        self.chat_completion: dict[str, Any] = load_recorded(profile, "chat_completion")
        self.stream_chunks: list[dict[str, Any]] = load_recorded(profile, "chat_completion_stream")
        self._routes: dict[str, Any]
        if profile == "ollama":
            self._tags: dict[str, Any] = load_recorded("ollama", "api_tags")
            self._routes = {"/api/version": load_recorded("ollama", "api_version")}
        else:
            self._routes = {
                "/health": load_recorded("fm_bridge", "health"),
                "/v1/models": load_recorded("fm_bridge", "v1_models"),
            }
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ─── lifecycle ───

    def start(self) -> RecordedServer:
        """Bind a free loopback port and serve in a daemon thread (listening on return)."""
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        # A short poll interval keeps stop() (shutdown waits for the next poll) fast.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=f"recorded-{self.profile}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> RecordedServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        """``127.0.0.1:<port>``, without a scheme."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self.host_port}"

    # ─── what tests control and inspect ───

    @property
    def received(self) -> list[ReceivedRequest]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._received)

    def paths(self, method: str | None = None) -> list[str]:
        """The paths requested so far (optionally only for one method)."""
        return [r.path for r in self.received if method is None or r.method == method]

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies posted to ``/v1/chat/completions``, in order."""
        return [r.body for r in self.received if r.method == "POST" and r.path == CHAT_PATH]

    def native_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies posted to Ollama's native ``/api/chat``, in order."""
        return [r.body for r in self.received if r.method == "POST" and r.path == NATIVE_CHAT_PATH]

    def fail(self, path: str, status: int, body: Any = None) -> None:
        """Answer every later request to ``path`` with ``status`` and ``body`` (JSON)."""
        with self._lock:
            self._failures[path] = Failure(status, body if body is not None else {"error": f"HTTP {status}"})

    def clear_failures(self) -> None:
        """Serve the recorded answers again on every route."""
        with self._lock:
            self._failures.clear()

    def model_names(self) -> list[str]:
        """The models this server lists (``/api/tags`` names, or ``/v1/models`` ids)."""
        with self._lock:
            if self.profile == "ollama":
                return [m["name"] for m in self._tags["models"]]
            return [m["id"] for m in self._routes["/v1/models"]["data"]]

    def remove_model(self, name: str) -> None:
        """Drop a model from ``/api/tags`` (what ``ollama rm`` does); Ollama profile only."""
        assert self.profile == "ollama"
        with self._lock:
            self._tags["models"] = [m for m in self._tags["models"] if m["name"] != name]

    def pull_model(self, name: str) -> None:
        """List a new model first in ``/api/tags`` (Ollama lists the newest first); Ollama profile only."""
        assert self.profile == "ollama"
        with self._lock:
            first = dict(self._tags["models"][0], name=name, model=name)
            self._tags["models"] = [first, *self._tags["models"]]

    # ─── request handling (server threads) ───

    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self._received.append(ReceivedRequest(method, path, body))

    def _handle(self, handler: _Handler, method: str, body: Any) -> None:
        path = handler.path.split("?", 1)[0]
        self._record(method, path, body)
        with self._lock:
            failure = self._failures.get(path)
            tags = copy.deepcopy(self._tags) if self.profile == "ollama" else None
        if failure is not None:
            self._send_json(handler, failure.status, failure.body)
            return
        if method == "POST" and path == CHAT_PATH:
            self._chat(handler, body)
        elif method == "POST" and path == NATIVE_CHAT_PATH and self.profile == "ollama":
            self._native_chat(handler, body)
        elif method in ("GET", "HEAD") and path == "/api/tags" and tags is not None:
            self._send_json(handler, 200, tags)
        elif method in ("GET", "HEAD") and path in self._routes:
            self._send_json(handler, 200, self._routes[path])
        elif method in ("GET", "HEAD") and path == "/" and self.profile == "ollama":
            self._send(handler, 200, b"Ollama is running", "text/plain; charset=utf-8")
        elif self.profile == "ollama":
            # Ollama's router (Go's default) answers unknown routes in plain text.
            self._send(handler, 404, b"404 page not found", "text/plain; charset=utf-8")
        else:
            self._send_json(handler, 404, {"error": {"message": f"no route {method} {path}"}})

    def _ollama_served_name(self, model: str) -> str | None:
        names = self.model_names()
        for candidate in (model, f"{model}:latest"):
            if candidate in names:
                return candidate
        return None

    def _chat(self, handler: _Handler, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._send_json(handler, 400, {"error": {"message": "model is required", "type": "invalid_request_error"}})
            return
        model: str = body["model"]
        if self.profile == "ollama" and self._ollama_served_name(model) is None:
            error = load_recorded("ollama", "error_model_not_found")
            error["error"]["message"] = error["error"]["message"].replace('"nope"', json.dumps(model))
            self._send_json(handler, 404, error)
            return
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(handler, model, include_usage)
            return
        answer = copy.deepcopy(self.chat_completion)
        if self.profile == "ollama":
            answer["model"] = model  # Ollama echoes the model name it was asked for
        self._send_json(handler, 200, answer)

    def _native_chat(self, handler: _Handler, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._send_json(handler, 400, {"error": "model is required"})
            return
        model: str = body["model"]
        if self._ollama_served_name(model) is None:
            self._send_json(handler, 404, {"error": f"model {json.dumps(model)} not found, try pulling it first"})
            return
        if body.get("stream", True):  # the native API streams unless told not to
            handler.send_response(200)
            handler.send_header("Content-Type", "application/x-ndjson")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for chunk in load_recorded("ollama", "api_chat_stream"):
                chunk["model"] = model
                self._write_chunk(handler, (json.dumps(chunk) + "\n").encode())
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
            return
        answer = load_recorded("ollama", "api_chat_tool_call" if body.get("tools") else "api_chat")
        answer["model"] = model
        self._send_json(handler, 200, answer)

    def _stream(self, handler: _Handler, model: str, include_usage: bool) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for chunk in copy.deepcopy(self.stream_chunks):
            if "usage" in chunk and not chunk.get("choices") and not include_usage:
                continue
            if self.profile == "ollama":
                chunk["model"] = model
            self._write_chunk(handler, f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode())
        self._write_chunk(handler, b"data: [DONE]\n\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _write_chunk(handler: _Handler, data: bytes) -> None:
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _send_json(handler: _Handler, status: int, body: Any) -> None:
        RecordedServer._send(handler, status, json.dumps(body).encode(), "application/json; charset=utf-8")

    @staticmethod
    def _send(handler: _Handler, status: int, data: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        handler.wfile.flush()
