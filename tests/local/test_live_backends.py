"""Live tests against a real Ollama (127.0.0.1:11434) and a real Apple FM bridge (127.0.0.1:11435).

They are the only tests in the suite that skip, and only when nothing answers on the
port: a server that answers but misbehaves makes them fail. Each first undoes the autouse
``closed_backends`` fixture's environment so pylon finds the servers on their default ports.
Run just these with ``pytest -m "live_ollama or live_fm_bridge"``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dspy import lm15

import dspy_pylon as pylon

OLLAMA_URL = "http://127.0.0.1:11434"
FM_BRIDGE_URL = "http://127.0.0.1:11435"
PROMPT = "In one short line: what is the capital of France?"


def require_answer(url: str, path: str) -> None:
    """Skip unless something answers HTTP at ``url`` (any status counts as an answer)."""
    try:
        httpx.get(url + path, timeout=2.0, trust_env=False)
    except httpx.HTTPError as exc:
        pytest.skip(f"nothing answers at {url} ({type(exc).__name__})")


def use_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo ``closed_backends``: let pylon use the default local ports."""
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_URL", raising=False)
    monkeypatch.delenv("FM_BRIDGE_URL", raising=False)


def text_of(output: Any) -> str:
    # DSPy returns a dict when the model also reported reasoning (thinking models).
    return str(output["text"] if isinstance(output, dict) else output)


def check_one_line(lm: pylon.PylonLM, backend: str, base_url: str) -> None:
    outputs = lm(PROMPT)
    assert len(outputs) == 1
    assert text_of(outputs[0]).strip(), f"empty answer from {backend}"
    entry = lm.history[-1]
    assert entry["usage"]["prompt_tokens"] > 0
    assert entry["usage"]["completion_tokens"] > 0
    assert entry["cost"] == 0
    route = lm.route()
    assert (route.venue, route.backend, route.base_url) == ("local", backend, base_url)
    record = entry["response"].provider_data["pylon"]
    assert (record["backend"], record["base_url"], record["model"]) == (backend, base_url, route.model)


@pytest.mark.live_ollama
def test_live_ollama_one_line_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real one-line completion on the real Ollama: text, token counts, route."""
    use_default_ports(monkeypatch)
    require_answer(OLLAMA_URL, "/api/version")
    tags = httpx.get(OLLAMA_URL + "/api/tags", timeout=5.0, trust_env=False).json()
    lm = pylon.LM("pylon:local:ollama", cache=False, max_tokens=256, temperature=0.0)
    check_one_line(lm, "ollama", OLLAMA_URL)
    assert lm.route().model in [m["name"] for m in tags["models"]]


@pytest.mark.live_ollama
def test_live_ollama_is_auto_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a real Ollama answering, ``pylon:local`` (auto) routes to it."""
    use_default_ports(monkeypatch)
    require_answer(OLLAMA_URL, "/api/version")
    route = pylon.LM("pylon:local", cache=False).route()
    assert (route.backend, route.base_url) == ("ollama", OLLAMA_URL)


@pytest.mark.live_ollama
def test_live_ollama_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real streamed completion on the real Ollama: text deltas, then usage in the end event."""
    use_default_ports(monkeypatch)
    require_answer(OLLAMA_URL, "/api/version")
    lm = pylon.LM("pylon:local:ollama", cache=False)
    request = lm15.Request(
        model=lm.model,
        messages=(lm15.Message.user(PROMPT),),
        config=lm15.Config(max_tokens=256, temperature=0.0),
    )
    events = list(pylon.PylonEngine(lm.runtime).stream(request))
    deltas = [e.delta for e in events if isinstance(e, lm15.StreamDeltaEvent)]
    assert "".join(d.text for d in deltas).strip()
    end = events[-1]
    assert isinstance(end, lm15.StreamEndEvent)
    assert (end.usage.input_tokens or 0) > 0 and (end.usage.output_tokens or 0) > 0
    assert end.provider_data["pylon"]["backend"] == "ollama"


@pytest.mark.live_fm_bridge
def test_live_fm_bridge_one_line_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real one-line completion on the real Apple FM bridge: text, token counts, route."""
    use_default_ports(monkeypatch)
    require_answer(FM_BRIDGE_URL, "/health")
    lm = pylon.LM("pylon:local:apple-fm", cache=False, max_tokens=128, temperature=0.0)
    check_one_line(lm, "apple-fm", FM_BRIDGE_URL)
