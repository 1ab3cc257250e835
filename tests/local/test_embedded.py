"""The embedded llama.cpp server with the bundled SmolLM2-135M-Instruct model (real answers)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dspy import lm15

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama, default_model_path, embedded_available, shared_embedded

pytestmark = pytest.mark.smollm2


def test_bundled_model_is_installed() -> None:
    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert embedded_available()


def _capital_of_france(lm: pylon.PylonLM) -> str:
    request = lm15.Request(
        model=lm.model,
        system="You are a helpful assistant.",
        messages=(lm15.Message.user("What is the capital of France?"),),
        config=lm15.Config(max_tokens=24, temperature=0.0),
    )
    text = lm(request).text
    assert text is not None
    return text


def test_embedded_backend_answers_paris() -> None:
    lm = pylon.LM("pylon:local:embedded", cache=False)
    assert "Paris" in _capital_of_france(lm)
    route = lm.route()
    assert route.backend == "embedded" and route.model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert lm.usage().completion_tokens > 0


def test_auto_falls_back_to_embedded_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    lm = pylon.LM("pylon:local", cache=False)
    with caplog.at_level(logging.WARNING, logger="dspy_pylon.local"):
        assert "Paris" in _capital_of_france(lm)
    assert lm.route().backend == "embedded"
    assert any("starting the embedded llama.cpp server" in r.getMessage() for r in caplog.records)


def test_shared_embedded_is_started_once() -> None:
    assert shared_embedded() is shared_embedded()


def test_own_server_on_a_chosen_port(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = pylon.local.embedded.free_port()
    with EmbeddedLlama(tiny_model, port=port, n_ctx=2048) as server:
        assert server.running and server.url == f"http://127.0.0.1:{port}"
        monkeypatch.setenv("LLAMACPP_URL", server.url)
        assert pylon.LM("pylon:local:llamacpp", max_tokens=2, cache=False)("hi")[0]
    assert not server.running


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(pylon.EmbeddedUnavailable, match="model file not found"):
        EmbeddedLlama(tmp_path / "nope.gguf").start()


def test_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(pylon.EmbeddedUnavailable, match="could not load"):
        EmbeddedLlama(bad).start()


def test_url_before_start_is_an_error(tiny_model: Path) -> None:
    with pytest.raises(pylon.EmbeddedUnavailable, match="not been started"):
        _ = EmbeddedLlama(tiny_model).url
