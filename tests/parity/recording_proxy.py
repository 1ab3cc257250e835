"""A recording HTTP proxy in front of a real llama.cpp server: what each client put on the wire.

Not a test double: every request is forwarded to the real server and its real answer
returned (streams included); the proxy only keeps a copy of each request body.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass(frozen=True)
class Seen:
    """One request the proxy forwarded."""

    method: str
    path: str
    body: Any


class RecordingProxy:
    """Forwards to ``upstream`` and records requests. Use as a context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                body = json.loads(raw) if raw else None
                with proxy._lock:
                    proxy.seen.append(Seen(method, self.path.split("?", 1)[0], body))
                with httpx.Client(base_url=proxy.upstream, timeout=60, trust_env=False) as client:
                    answer = client.request(
                        method, self.path, content=raw, headers={"Content-Type": "application/json"}
                    )
                data = answer.content
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The bodies posted to the chat endpoint, oldest first."""
        with self._lock:
            return [s.body for s in self.seen if s.method == "POST" and s.path.endswith("/chat/completions")]

    def __enter__(self) -> RecordingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
