"""Choosing the local server for a call: detection, embedded fallback, model resolution."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import PurePath
from typing import Any

import httpx
from dspy import lm15

from dspy_pylon.config import Local
from dspy_pylon.errors import BackendConnectionError, BackendRequestError, NoLocalBackend, UnknownModel
from dspy_pylon.local.client import ChatClient
from dspy_pylon.local.detect import ProbeResult, detect
from dspy_pylon.local.embedded import INSTALL_HINT, embedded_available, shared_embedded
from dspy_pylon.local.endpoints import ServerKind
from dspy_pylon.route import Route

log = logging.getLogger("dspy_pylon.local")

#: Set to ``0`` to forbid the embedded fallback of ``auto`` process-wide.
EMBEDDED_ENV = "PYLON_EMBEDDED"

FM_DEFAULT_MODEL = "apple-foundation-model"


def no_backend_message(results: list[ProbeResult], backend: str) -> str:
    """The error text when no local server answered: every URL probed and three ways out."""
    probed = "; ".join(f"{r.endpoint.kind} {r.endpoint.base_url} ({r.detail})" for r in results)
    what = "no local backend answered" if backend == "auto" else f"the {backend} backend did not answer"
    env = ", ".join(sorted({v for r in results for v in r.endpoint.env_vars}))
    return (
        f"{what}: probed {probed}. Start one: `ollama serve` (then `ollama pull llama3.2`), "
        f"or a llama.cpp server (`llama-server -m model.gguf --port 8080`, or `pylon local serve`), "
        f"or install the embedded server to run llama.cpp inside this process: `{INSTALL_HINT}`. "
        f"Point pylon at a server elsewhere with {env}."
    )


def _model_names(kind: ServerKind, listing: Any) -> list[str]:
    names: list[str] = []
    if not isinstance(listing, dict):
        return names
    if kind == "ollama":
        for entry in listing.get("models") or ():
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.append(entry["name"])
        return names
    for entry in listing.get("data") or ():
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            names.append(entry["id"])
            names.extend(a for a in entry.get("aliases") or () if isinstance(a, str))
    return names


def match_model(kind: ServerKind, wanted: str, available: list[str]) -> str | None:
    """The served name for ``wanted``, or None. Ollama's ``llama3.2`` means ``llama3.2:latest``;
    a llama.cpp model may be named by its file name or stem."""
    if wanted in available:
        return wanted
    for name in available:
        if kind == "ollama" and name == f"{wanted}:latest":
            return name
        if kind != "ollama":
            path = PurePath(name)
            if wanted in (path.name, path.stem):
                return name
    return None


def unknown_model(kind: ServerKind, model: str, base_url: str, available: list[str], why: str = "") -> UnknownModel:
    """The error for a model ``kind`` at ``base_url`` does not serve, listing what it does."""
    error = UnknownModel(
        f"model {model!r} is not served by {kind} at {base_url}{why}; available: "
        + (", ".join(available) if available else "none")
        + (f" (pull it with `ollama pull {model}`)" if kind == "ollama" else "")
    )
    error.available = tuple(available)
    return error


def _is_model_missing(exc: BackendRequestError) -> bool:
    # Ollama: HTTP 404 `model "x" not found, try pulling it first` (the model was
    # removed after pylon resolved it, or another process renamed it).
    text = str(exc).lower()
    return getattr(exc, "status", None) == 404 and "model" in text and "not found" in text


class RoutedClient(ChatClient):
    """A :class:`ChatClient` whose "model not found" answers become :class:`UnknownModel`.

    The error lists the models the server serves now, and the router forgets its
    resolution so the next call resolves the model again.
    """

    def __init__(self, base_url: str, timeout: float, router: LocalRouter) -> None:
        super().__init__(base_url, timeout)
        self._router = router

    def _model_missing(self, route: Route, exc: BackendRequestError) -> UnknownModel | None:
        if not _is_model_missing(exc) or route.backend not in ("ollama", "apple-fm", "llamacpp"):
            return None
        self._router.invalidate()
        kind: ServerKind = route.backend  # type: ignore[assignment]  # membership checked above
        try:
            available = _model_names(kind, self.get_json("/api/tags" if kind == "ollama" else "/v1/models"))
        except (httpx.HTTPError, ValueError):
            available = []
        return unknown_model(kind, route.model, route.base_url, available, " (the chat call answered HTTP 404)")

    def complete(self, request: lm15.Request, route: Route) -> lm15.Response:
        try:
            return super().complete(request, route)
        except BackendRequestError as exc:
            if (error := self._model_missing(route, exc)) is None:
                raise
            raise error from exc

    async def acomplete(self, request: lm15.Request, route: Route) -> lm15.Response:
        try:
            return await super().acomplete(request, route)
        except BackendRequestError as exc:
            if (error := self._model_missing(route, exc)) is None:
                raise
            raise error from exc

    def stream(self, request: lm15.Request, route: Route) -> Iterator[lm15.StreamEvent]:
        try:
            yield from super().stream(request, route)
        except BackendRequestError as exc:
            if (error := self._model_missing(route, exc)) is None:
                raise
            raise error from exc

    async def astream(self, request: lm15.Request, route: Route) -> AsyncIterator[lm15.StreamEvent]:
        try:
            async for event in super().astream(request, route):
                yield event
        except BackendRequestError as exc:
            if (error := self._model_missing(route, exc)) is None:
                raise
            raise error from exc


class LocalRouter:
    """Resolves a :class:`~dspy_pylon.config.Local` venue to a route and a client, once.

    The resolution is cached; a connection failure invalidates it so the next call
    probes again (the server may have restarted elsewhere, or a different one started).
    """

    def __init__(self, venue: Local, model: str | None, timeout: float) -> None:
        self.venue = venue
        self.model = model
        self.timeout = timeout
        self._lock = threading.Lock()
        self._resolved: tuple[Route, ChatClient] | None = None
        self._clients: dict[str, ChatClient] = {}

    def resolve(self) -> tuple[Route, ChatClient]:
        """The route and client for the next call (probing only when nothing is cached)."""
        resolved = self._resolved
        if resolved is not None:
            return resolved
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve()
            return self._resolved

    def invalidate(self) -> None:
        """Forget the cached resolution: the next call probes again."""
        self._resolved = None

    def _client(self, base_url: str) -> ChatClient:
        client = self._clients.get(base_url)
        if client is None:
            client = self._clients[base_url] = RoutedClient(base_url, self.timeout, self)
        return client

    def _resolve(self) -> tuple[Route, ChatClient]:
        backend = self.venue.backend
        if backend == "embedded":
            return self._embedded()
        results = detect(backend)
        for result in results:
            if result.ok:
                kind = result.endpoint.kind
                client = self._client(result.endpoint.base_url)
                model = self._resolve_model(kind, client)
                route = Route("local", kind, result.endpoint.base_url, model)
                log.debug("pylon:local -> %s at %s, model %s", kind, route.base_url, model)
                return route, client
        fallback = backend == "auto" and self.venue.embedded_fallback and os.environ.get(EMBEDDED_ENV, "1") != "0"
        if fallback and embedded_available():
            log.warning(
                "no local model server answered (%s); starting the embedded llama.cpp server "
                "with the bundled SmolLM2-135M-Instruct model",
                ", ".join(r.endpoint.base_url for r in results),
            )
            return self._embedded()
        raise NoLocalBackend(no_backend_message(results, backend))

    def _embedded(self) -> tuple[Route, ChatClient]:
        server = shared_embedded()
        client = self._client(server.url)
        model = self._resolve_model("llamacpp", client)
        return Route("local", "embedded", server.url, model), client

    def _resolve_model(self, kind: ServerKind, client: ChatClient) -> str:
        path = "/api/tags" if kind == "ollama" else "/v1/models"
        try:
            listing = client.get_json(path)
        except (httpx.HTTPError, ValueError) as exc:
            if kind == "apple-fm":
                # The bridge may not list models; it serves exactly one.
                return self.model or FM_DEFAULT_MODEL
            raise BackendConnectionError(
                f"{kind} at {client.base_url} answered its health check but not {path}: {exc}"
            ) from exc
        available = _model_names(kind, listing)
        if self.model is None:
            if available:
                return available[0]
            if kind == "ollama":
                raise UnknownModel(f"Ollama at {client.base_url} has no models; run `ollama pull llama3.2`")
            return FM_DEFAULT_MODEL if kind == "apple-fm" else "default"
        served = match_model(kind, self.model, available)
        if served is None:
            raise unknown_model(kind, self.model, client.base_url, available)
        return served

    def close(self) -> None:
        """Close every client this router opened."""
        for client in self._clients.values():
            client.close()
