"""Shared fixtures: a real llama.cpp server on a tiny deterministic model, and a clean environment.

Every test runs with the three local-backend URLs pointed at closed loopback ports, so a
test only reaches the servers it starts itself (live tests opt back in explicitly).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# rich reads the width once, when the CLI module makes its console: tables as on a wide terminal.
os.environ.setdefault("COLUMNS", "200")

import dspy
import pytest

from dspy_pylon.local.embedded import EmbeddedLlama, free_port
from dspy_pylon.testing.tiny_gguf import write_tiny_gguf
from tests.relays import any_relay, embedded_relay, nostr_relay

__all__ = ["any_relay", "embedded_relay", "nostr_relay"]  # fixtures, shared by the whole suite

BACKEND_ENV = ("OLLAMA_HOST", "OLLAMA_URL", "FM_BRIDGE_URL", "LLAMACPP_URL", "PYLON_EMBEDDED")


@pytest.fixture(scope="session", autouse=True)
def _dspy_memory_cache_only() -> None:
    # The disk cache would carry answers between runs and hide real calls.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)


@pytest.fixture(autouse=True)
def closed_backends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Point every local backend URL at a closed port; returns the URLs set."""
    urls = {}
    for name in ("OLLAMA_HOST", "FM_BRIDGE_URL", "LLAMACPP_URL"):
        urls[name] = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv(name, urls[name])
    monkeypatch.delenv("OLLAMA_URL", raising=False)
    # Identity, reputation and provider state of a test never touch the user's home.
    monkeypatch.setenv("PYLON_HOME", str(tmp_path / "pylon-home"))
    monkeypatch.delenv("PYLON_EMBEDDED", raising=False)
    # A wallet configured in the developer's environment must never pay for a test.
    monkeypatch.delenv("PYLON_NWC_URI", raising=False)
    dspy.configure(lm=None, adapter=None, callbacks=[])
    return urls


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight GGUF (byte-identical every run)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_server(tiny_model: Path) -> Iterator[EmbeddedLlama]:
    """A real llama.cpp server (xllamacpp) serving the tiny model for the whole session."""
    with EmbeddedLlama(tiny_model, n_ctx=16384, parallel=4) as server:
        yield server


@pytest.fixture(scope="session")
def tools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLlama]:
    """The tiny model with tools as plain JSON in its template: with ``tool_choice="required"``
    llama.cpp's grammar forces a real tool call out of the random weights."""
    from dspy_pylon.testing.tiny_gguf import JSON_TOOLS_TEMPLATE

    path = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-tools.gguf", JSON_TOOLS_TEMPLATE)
    with EmbeddedLlama(path, n_ctx=8192, parallel=2) as server:
        yield server


@pytest.fixture
def llamacpp_url(tiny_server: EmbeddedLlama, monkeypatch: pytest.MonkeyPatch) -> str:
    """``LLAMACPP_URL`` pointed at the tiny server; returns its URL."""
    monkeypatch.setenv("LLAMACPP_URL", tiny_server.url)
    return tiny_server.url
