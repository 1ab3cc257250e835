"""A different model never answers silently: once a server served an LM, its failure is retryable, never a switch.

The embedded fallback (llama.cpp in-process with the bundled SmolLM2) is installed here, so
these tests would see it take over if pylon still switched to it mid-run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.local.embedded import EmbeddedLlama, embedded_available, free_port
from tests.helpers import pylon_cause


def test_the_embedded_model_is_installed_so_a_silent_switch_would_show() -> None:
    assert embedded_available()


def test_a_served_backend_that_dies_raises_retryable_and_never_switches(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("LLAMACPP_URL", f"http://127.0.0.1:{port}")
    server = EmbeddedLlama(tiny_model, port=port, n_ctx=4096, parallel=1).start()
    lm = pylon.LM("pylon:local", max_tokens=2, cache=False, num_retries=0)
    try:
        assert lm("one")
        served = lm.route()
        assert served.backend == "llamacpp"
    finally:
        server.stop()
    with pytest.raises(dspy_errors.LMError) as info:
        lm("two")
    assert dspy_errors.is_retryable_lm_error(info.value)
    cause = pylon_cause(info.value, pylon.BackendConnectionError)
    assert served.base_url in str(cause)
    # Probed again, still the same route: not the embedded model, not "no backend".
    with pytest.raises(dspy_errors.LMError) as again:
        lm("three")
    assert "will not switch" in str(pylon_cause(again.value, pylon.BackendConnectionError))
    assert [entry["response"].provider_data["pylon"]["backend"] for entry in lm.history] == ["llamacpp"]


def test_num_retries_rides_through_a_server_restart(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("LLAMACPP_URL", f"http://127.0.0.1:{port}")
    server = EmbeddedLlama(tiny_model, port=port, n_ctx=4096, parallel=1).start()
    lm = pylon.LM("pylon:local", max_tokens=2, cache=False, num_retries=3)
    assert lm("before")
    served = lm.route()
    server.stop()
    restarted: list[EmbeddedLlama] = []

    def restart() -> None:
        time.sleep(0.5)
        restarted.append(EmbeddedLlama(tiny_model, port=port, n_ctx=4096, parallel=1).start())

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        assert lm("after the restart")  # DSPy's first retry waits 1 s: the server is back by then
    finally:
        thread.join()
        for again in restarted:
            again.stop()
    assert lm.route() == served
    assert lm.history[-1]["response"].provider_data["pylon"]["base_url"] == served.base_url


def test_a_cached_answer_of_one_model_is_never_returned_for_another(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_model = tmp_path / "other.gguf"
    other_model.write_bytes(tiny_model.read_bytes())  # the same weights under another served name
    with (
        EmbeddedLlama(tiny_model, n_ctx=4096, parallel=1) as first,
        EmbeddedLlama(other_model, n_ctx=4096, parallel=1) as second,
    ):
        monkeypatch.setenv("LLAMACPP_URL", first.url)
        one = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0)
        one("the same prompt")
        monkeypatch.setenv("LLAMACPP_URL", second.url)
        two = pylon.LM("pylon:local:llamacpp", max_tokens=3, temperature=0.0)
        two("the same prompt")
        # Same model string, settings and prompt: only the served model differs, and DSPy's cache knows it.
        assert two.history[-1]["usage"], "the second model's call was answered from the first model's cache"
        assert two.history[-1]["response"].provider_data["pylon"]["model"] == str(other_model)
        one("the same prompt")
        assert not one.history[-1]["usage"]  # its own answer, now from the cache
