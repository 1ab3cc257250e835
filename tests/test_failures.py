"""Bad input and broken backends: clear errors of the right type, nothing hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.local.embedded import free_port


def _cause(exc: BaseException) -> BaseException | None:
    return exc.__cause__


def test_no_backend_names_every_url_and_the_ways_out(closed_backends: dict[str, str]) -> None:
    lm = pylon.LM("pylon:local", embedded_fallback=False, num_retries=0)
    with pytest.raises(dspy_errors.LMNotConfiguredError) as info:
        lm("hello")
    cause = _cause(info.value)
    assert isinstance(cause, pylon.NoLocalBackend)
    message = str(cause)
    for url in closed_backends.values():
        assert url in message
    assert "ollama serve" in message and "llama-server" in message and "dspy-pylon[embedded]" in message
    assert "OLLAMA_HOST" in message and "LLAMACPP_URL" in message and "FM_BRIDGE_URL" in message
    assert not dspy_errors.is_retryable_lm_error(info.value)
    assert lm.history == []


def test_embedded_fallback_can_be_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLON_EMBEDDED", "0")
    with pytest.raises(dspy_errors.LMNotConfiguredError):
        pylon.LM("pylon:local", num_retries=0)("hello")


def test_named_backend_down_probes_only_that_backend(closed_backends: dict[str, str]) -> None:
    with pytest.raises(dspy_errors.LMNotConfiguredError) as info:
        pylon.LM("pylon:local:ollama", num_retries=0)("hello")
    message = str(_cause(info.value))
    assert "the ollama backend did not answer" in message
    assert closed_backends["OLLAMA_HOST"] in message
    assert closed_backends["LLAMACPP_URL"] not in message


def test_unknown_llamacpp_model_lists_what_is_served(llamacpp_url: str) -> None:
    with pytest.raises(dspy_errors.LMUnsupportedModelError) as info:
        pylon.LM("pylon:local:llamacpp:no-such-model", num_retries=0)("hello")
    cause = _cause(info.value)
    assert isinstance(cause, pylon.UnknownModel)
    assert any(name.endswith("tiny.gguf") for name in cause.available)
    assert "tiny.gguf" in str(cause) and "no-such-model" in str(cause)


def test_llamacpp_model_may_be_named_by_file_stem(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp:tiny", max_tokens=2, cache=False)
    assert lm("x")[0]
    assert lm.route().model.endswith("tiny.gguf")


def test_prompt_over_the_context_window(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=2, cache=False, num_retries=0)
    with pytest.raises(dspy_errors.ContextWindowExceededError) as info:
        lm("x " * 40_000)
    assert isinstance(_cause(info.value), pylon.ContextTooLong)


def test_timeout_is_a_retryable_timeout_error(llamacpp_url: str) -> None:
    lm = pylon.LM("pylon:local:llamacpp", timeout=0.05, max_tokens=16_000, cache=False, num_retries=0)
    with pytest.raises(dspy_errors.LMTimeoutError) as info:
        lm("take your time")
    assert isinstance(_cause(info.value), pylon.BackendTimeout)
    assert "0.05 s" in str(info.value)
    assert dspy_errors.is_retryable_lm_error(info.value)


class ServerProcess:
    """``pylon local serve`` in its own process, so a test can SIGKILL a real llama.cpp server."""

    def __init__(self, model: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "dspy_pylon.cli", "local", "serve", "--model", str(model)]
        command += ["--port", str(port), "--parallel", "1", "--ctx", "16384"]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("serving tiny.gguf at "), line

    def busy(self) -> bool:
        slots = httpx.get(f"{self.url}/slots", timeout=1).json()
        return any(slot.get("is_processing") for slot in slots)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def killable(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    server = ServerProcess(tiny_model, free_port())
    monkeypatch.setenv("LLAMACPP_URL", server.url)
    yield server
    if server.proc.poll() is None:
        server.kill()


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def test_backend_killed_mid_call_raises_retryable_transport_error(
    killable: ServerProcess, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=16_000, cache=False, num_retries=0)
    assert lm("warm up", max_tokens=1)[0] is not None
    errors: list[BaseException] = []

    def call() -> None:
        try:
            lm("a very long answer please")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    _wait_until(killable.busy)
    killable.kill()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the call hung after its backend died"
    [error] = errors
    assert isinstance(error, dspy_errors.LMTransportError)
    assert isinstance(_cause(error), pylon.BackendConnectionError)
    assert "dropped the connection" in str(error)
    assert dspy_errors.is_retryable_lm_error(error)

    # A server that comes back (here on another port) is found again on the next call.
    replacement = ServerProcess(tiny_model, free_port())
    try:
        monkeypatch.setenv("LLAMACPP_URL", replacement.url)
        assert lm("back again", max_tokens=2)[0]
        assert lm.route().base_url == replacement.url
    finally:
        replacement.kill()


def test_dead_backend_before_the_call_is_a_connection_error(killable: ServerProcess) -> None:
    lm = pylon.LM("pylon:local:llamacpp", max_tokens=2, cache=False, num_retries=0)
    assert lm("resolve the route first")[0]
    killable.kill()
    with pytest.raises(dspy_errors.LMTransportError) as info:
        lm("now it is gone")
    assert isinstance(_cause(info.value), pylon.BackendConnectionError)
    assert "could not connect" in str(info.value) or "dropped" in str(info.value)
