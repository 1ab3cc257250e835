"""Backend endpoints and environment overrides (pure)."""

from __future__ import annotations

import pytest

from dspy_pylon.local.endpoints import AUTO_ORDER, endpoint_for, endpoints_for, normalize_url


@pytest.mark.parametrize(
    ("value", "port", "expected"),
    [
        ("127.0.0.1:11434", None, "http://127.0.0.1:11434"),
        ("0.0.0.0:11434", None, "http://127.0.0.1:11434"),
        ("0.0.0.0", 11434, "http://127.0.0.1:11434"),
        ("http://gpu-box:11434/", None, "http://gpu-box:11434"),
        ("https://example.org/ollama/", None, "https://example.org/ollama"),
        ("localhost", 11434, "http://localhost:11434"),
        ("[::1]:8080", None, "http://[::1]:8080"),
    ],
)
def test_normalize_url(value: str, port: int | None, expected: str) -> None:
    assert normalize_url(value, default_port=port) == expected


def test_defaults_and_probe_order() -> None:
    assert AUTO_ORDER == ("ollama", "apple-fm", "llamacpp")
    endpoints = endpoints_for("auto", environ={})
    assert [e.base_url for e in endpoints] == [
        "http://127.0.0.1:11434",
        "http://127.0.0.1:11435",
        "http://127.0.0.1:8080",
    ]
    assert endpoints[0].probe_paths == ("/api/version", "/api/tags")
    assert endpoints[1].probe_paths == ("/health",) and endpoints[2].probe_paths == ("/health",)


def test_environment_overrides() -> None:
    env = {"OLLAMA_HOST": "0.0.0.0", "FM_BRIDGE_URL": "http://mac:9000/", "LLAMACPP_URL": "http://127.0.0.1:9999"}
    assert endpoint_for("ollama", env).base_url == "http://127.0.0.1:11434"
    assert endpoint_for("apple-fm", env).base_url == "http://mac:9000"
    assert endpoint_for("llamacpp", env).base_url == "http://127.0.0.1:9999"
    assert endpoint_for("ollama", {"OLLAMA_URL": "http://other:1234"}).base_url == "http://other:1234"
    assert endpoint_for("ollama", {"OLLAMA_HOST": "  "}).base_url == "http://127.0.0.1:11434"


def test_named_backend_probes_only_itself() -> None:
    assert [e.kind for e in endpoints_for("llamacpp", environ={})] == ["llamacpp"]
