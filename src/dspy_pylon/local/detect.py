"""Probing local servers: short, concurrent HTTP checks (the I/O edge of detection)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

from dspy_pylon.local.endpoints import Endpoint, endpoints_for

PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class ProbeResult:
    """What probing one endpoint found: ``ok`` and, if not, why not."""

    endpoint: Endpoint
    ok: bool
    detail: str


def probe(
    endpoint: Endpoint, timeout: float = PROBE_TIMEOUT_S, transport: httpx.BaseTransport | None = None
) -> ProbeResult:
    """Check one endpoint: the first probe path that answers 2xx proves it is up (through
    ``transport`` when given: a test's or an application's own)."""
    import httpx  # deferred: httpx costs ~60 ms at import, paid only when probing

    detail = "no answer"
    try:
        with httpx.Client(base_url=endpoint.base_url, timeout=timeout, trust_env=False, transport=transport) as client:
            for path in endpoint.probe_paths:
                response = client.get(path)
                if response.is_success:
                    return ProbeResult(endpoint, True, f"{path} answered {response.status_code}")
                detail = f"{path} answered HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ProbeResult(endpoint, False, detail)


def probe_all(
    endpoints: Sequence[Endpoint], timeout: float = PROBE_TIMEOUT_S, transport: httpx.BaseTransport | None = None
) -> list[ProbeResult]:
    """Probe every endpoint at once (threads: a user waits for the slowest, not the sum)."""
    if len(endpoints) == 1:
        return [probe(endpoints[0], timeout, transport)]
    with ThreadPoolExecutor(max_workers=len(endpoints), thread_name_prefix="pylon-probe") as pool:
        return list(pool.map(lambda e: probe(e, timeout, transport), endpoints))


def detect(
    backend: str = "auto", timeout: float = PROBE_TIMEOUT_S, transport: httpx.BaseTransport | None = None
) -> list[ProbeResult]:
    """Probe the servers for ``backend`` (``auto``: Ollama, Apple FM bridge, llama.cpp), in probe order."""
    return probe_all(endpoints_for(backend), timeout, transport)
