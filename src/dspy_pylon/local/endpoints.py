"""Where each local backend listens, and how to tell it is there (pure, no I/O)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

ServerKind: TypeAlias = Literal["ollama", "apple-fm", "llamacpp"]

#: Probe order for ``backend="auto"``: the first that answers wins.
AUTO_ORDER: tuple[ServerKind, ...] = ("ollama", "apple-fm", "llamacpp")


@dataclass(frozen=True)
class Endpoint:
    """One local server to probe: its kind, base URL and the paths that prove it is up."""

    kind: ServerKind
    base_url: str
    probe_paths: tuple[str, ...]
    env_vars: tuple[str, ...]


_DEFAULTS: dict[ServerKind, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "ollama": ("http://127.0.0.1:11434", ("/api/version", "/api/tags"), ("OLLAMA_HOST", "OLLAMA_URL")),
    "apple-fm": ("http://127.0.0.1:11435", ("/health",), ("FM_BRIDGE_URL",)),
    "llamacpp": ("http://127.0.0.1:8080", ("/health",), ("LLAMACPP_URL",)),
}


def normalize_url(value: str, default_port: int | None = None) -> str:
    """Turn ``host:port``, ``0.0.0.0:11434`` or ``http://host:port/`` into ``http://host:port``.

    Ollama documents ``OLLAMA_HOST`` without a scheme and often as the bind address
    ``0.0.0.0``, which is not an address to connect to: it becomes ``127.0.0.1``.
    """
    url = value.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host[len("0.0.0.0") :]
    if default_port is not None and ":" not in host.rsplit("]", 1)[-1]:
        host = f"{host}:{default_port}"
    return f"{scheme}://{host}{slash}{path}".rstrip("/")


def endpoint_for(kind: ServerKind, environ: Mapping[str, str] | None = None) -> Endpoint:
    """The endpoint of ``kind``, honouring its environment override if set."""
    env = os.environ if environ is None else environ
    default, paths, env_vars = _DEFAULTS[kind]
    url = default
    for name in env_vars:
        if env.get(name, "").strip():
            port = int(default.rsplit(":", 1)[1])
            url = normalize_url(env[name], default_port=port if kind == "ollama" else None)
            break
    return Endpoint(kind=kind, base_url=url, probe_paths=paths, env_vars=env_vars)


def endpoints_for(backend: str, environ: Mapping[str, str] | None = None) -> tuple[Endpoint, ...]:
    """The endpoints to probe for a backend name (``auto`` means all, in probe order)."""
    kinds: tuple[ServerKind, ...] = AUTO_ORDER if backend == "auto" else (backend,)  # type: ignore[assignment]
    return tuple(endpoint_for(kind, environ) for kind in kinds)
