"""Real Nostr relays for tests: the embedded nostr-sdk relay and a production-like ``nostr-relay`` process.

* :class:`EmbeddedRelay` — nostr-sdk's ``LocalRelay`` (what ``pylon relay`` runs), in this process, on a
  random loopback port, driven from its own event-loop thread. In-memory: a restart loses stored events.
  It refuses events whose JSON is over 64 KiB.
* :class:`NostrRelayProcess` — PyPI ``nostr-relay`` (SQLite, uvicorn) from ``.venv-relay`` (installed by
  ``scripts/install_relay.sh``, which ``scripts/test.sh`` runs), in its own process on a free loopback
  port, with ``max_event_size`` raised for LLM output. A restart keeps its database.

Fixtures (import them into a conftest): ``embedded_relay`` and ``nostr_relay`` (session-scoped, started
on first use) and ``any_relay`` (the URL of each of them in turn).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest

from dspy_pylon.local.embedded import free_port
from dspy_pylon.nostr.relay_server import start_embedded_relay

T = TypeVar("T")

__all__ = [
    "EMBEDDED_MAX_EVENT_BYTES",
    "MAX_EVENT_SIZE",
    "EmbeddedRelay",
    "NostrRelayProcess",
    "RelayNotInstalled",
    "any_relay",
    "embedded_relay",
    "nostr_relay",
]

REPO = Path(__file__).resolve().parents[1]
RELAY_VENV = REPO / ".venv-relay"
RELAY_BIN = RELAY_VENV / "bin" / "nostr-relay"
# nostr-relay's default (4096 characters of content) is too small for LLM output.
MAX_EVENT_SIZE = 262_144
# The validators nostr-relay's own default config enables. They must be listed: a config file that
# does not name them leaves only the signature check (no size limit, no future/old-date check).
VALIDATORS = (
    "nostr_relay.validators.is_not_too_large",
    "nostr_relay.validators.is_signed",
    "nostr_relay.validators.is_recent",
    "nostr_relay.validators.is_not_hellthread",
)
# The embedded relay refuses events whose serialized JSON is larger than this (not configurable).
EMBEDDED_MAX_EVENT_BYTES = 65_536


class RelayNotInstalled(RuntimeError):
    """``.venv-relay`` is missing: tests that need nostr-relay must fail, not skip."""


class EmbeddedRelay:
    """nostr-sdk's ``LocalRelay`` on 127.0.0.1, run from its own event-loop thread.

    Use as a context manager, or :meth:`start` / :meth:`stop` / :meth:`close`. ``port=None`` takes a
    random free port on the first start; :meth:`restart` reuses that port, so clients keep the URL.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.url = ""
        self.startup_seconds = 0.0
        self._relay: Any = None  # kept referenced: a LocalRelay stops when garbage-collected
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-relay", daemon=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, timeout: float = 10.0) -> EmbeddedRelay:
        if self._relay is not None:
            return self
        if not self._thread.is_alive():
            self._thread.start()
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                self._relay, self.url = self._call(start_embedded_relay("127.0.0.1", self.port))
                break
            except Exception:
                # On a restart the old listener may still hold the port for a moment.
                if self.port is None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.startup_seconds = time.monotonic() - started
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        return self

    def stop(self) -> None:
        """Stop serving (clients see their connection closed at once). Stored events are lost."""
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.shutdown()

    def restart(self) -> None:
        """Stop, then serve again on the same port (a fresh, empty in-memory database)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> EmbeddedRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class NostrRelayProcess:
    """PyPI ``nostr-relay`` served by uvicorn, in its own process, on a loopback port.

    ``workdir`` holds ``config.yaml``, the SQLite database and ``relay.log`` (a temporary directory,
    removed on :meth:`close`, when not given). :meth:`restart` keeps the port and the database.
    """

    def __init__(self, workdir: Path | None = None, port: int | None = None, startup_timeout: float = 30.0) -> None:
        if not RELAY_BIN.exists():
            raise RelayNotInstalled(
                f"{RELAY_BIN} is missing: run scripts/install_relay.sh (scripts/test.sh runs it) to install "
                "the nostr-relay used by the integration tests"
            )
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="nostr-relay-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.database = self.workdir / "nostr.sqlite3"
        self.config_path = self.workdir / "config.yaml"
        self.log_path = self.workdir / "relay.log"
        self.startup_timeout = startup_timeout
        self.startup_seconds = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        # JSON is YAML: no YAML writer needed on this side.
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def config(self) -> dict[str, Any]:
        """The relay's configuration (the keys of nostr_relay.config.ConfigClass / its config.yaml)."""
        return {
            "DEBUG": False,
            "relay_name": "pylon test relay",
            "max_event_size": MAX_EVENT_SIZE,
            "storage": {
                "sqlalchemy.url": f"sqlite+aiosqlite:///{self.database}",
                "validators": list(VALIDATORS),
            },
            # `serve --use-uvicorn` passes this section to uvicorn.Config (`bind` -> port, `loglevel` -> log_level).
            "gunicorn": {"bind": f"127.0.0.1:{self.port}", "host": "127.0.0.1", "workers": 1, "loglevel": "warning"},
            "authentication": {"enabled": False},
            "verification": {"nip05_verification": "disabled"},
            "logging": {
                "version": 1,
                "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
                "root": {"level": "WARNING", "handlers": ["console"]},
            },
        }

    def start(self) -> NostrRelayProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(RELAY_BIN), "-c", str(self.config_path), "serve", "--use-uvicorn"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = started + self.startup_timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nostr-relay exited with {self.proc.returncode} on start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nostr-relay not ready after {self.startup_timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.startup_seconds = time.monotonic() - started
        return self

    def _answers(self) -> bool:
        """True when the relay serves its NIP-11 document (HTTP on the websocket URL)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/", headers={"Accept": "application/nostr+json"})
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200 and "software" in json.loads(response.read()))
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (uvicorn closes the connections), SIGKILL if still running after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> None:
        """Stop and start again on the same port with the same database."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> NostrRelayProcess:
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
def embedded_relay() -> Iterator[EmbeddedRelay]:
    """The embedded nostr-sdk relay, for the whole session."""
    with EmbeddedRelay() as relay:
        yield relay


@pytest.fixture(scope="session")
def nostr_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NostrRelayProcess]:
    """A nostr-relay process (SQLite, max_event_size 262144), for the whole session."""
    with NostrRelayProcess(tmp_path_factory.mktemp("nostr-relay")) as relay:
        yield relay


@pytest.fixture(params=["embedded", "nostr-relay"])
def any_relay(request: pytest.FixtureRequest) -> str:
    """The ws:// URL of each relay in turn (only the one a test runs with is started)."""
    name = "embedded_relay" if request.param == "embedded" else "nostr_relay"
    return str(request.getfixturevalue(name).url)
