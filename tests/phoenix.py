"""A real trace viewer for tests: Arize Phoenix (PyPI ``arize-phoenix``) in its own process.

It comes from ``.venv-phoenix`` (installed by ``scripts/install_phoenix.sh``, which
``scripts/test.sh`` runs), serves on free loopback ports with its SQLite database in a
temporary working directory, takes OTLP/HTTP at ``/v1/traces`` and lists what it stored at
``GET /v1/projects/default/spans``. A missing install is an error, never a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from dspy_pylon.local.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
PHOENIX_BIN = REPO / ".venv-phoenix" / "bin" / "phoenix"


class PhoenixNotInstalled(RuntimeError):
    """``.venv-phoenix`` is missing: the test command installs it."""


class PhoenixProcess:
    """``phoenix serve`` on loopback ports, its data in a temporary directory removed on :meth:`close`."""

    def __init__(self, startup_timeout: float = 120.0) -> None:
        if not PHOENIX_BIN.exists():
            raise PhoenixNotInstalled(
                f"{PHOENIX_BIN} is missing: run scripts/install_phoenix.sh (scripts/test.sh runs it)"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="phoenix-")
        self.workdir = Path(self._tmp.name)
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.traces_url = f"{self.url}/v1/traces"
        self.log_path = self.workdir / "phoenix.log"
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PhoenixProcess:
        env = {
            **os.environ,
            "PHOENIX_WORKING_DIR": str(self.workdir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
        }
        for name in [k for k in env if k.startswith("OTEL_")]:  # Phoenix must not trace itself to ours
            env.pop(name)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(PHOENIX_BIN), "serve"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"phoenix not ready in {self.startup_timeout} s: {self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix stored in ``project`` (all pages)."""
        spans: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            url = f"{self.url}/v1/projects/{project}/spans?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url, timeout=30) as response:
                page = json.load(response)
            spans.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return spans

    def trace_spans(self, trace_id: str, expected: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The spans of one trace, once ``expected`` of them arrived (Phoenix inserts in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [s for s in self.spans() if s["context"]["trace_id"] == trace_id]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.25)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._tmp.cleanup()

    def __enter__(self) -> PhoenixProcess:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@pytest.fixture(scope="session")
def phoenix() -> Iterator[PhoenixProcess]:
    """A Phoenix server for the whole session (started on first use)."""
    with PhoenixProcess() as server:
        yield server
