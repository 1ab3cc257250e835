"""Choosing the local server for a call: detection, embedded fallback, model resolution."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from dspy import lm15

from dspy_pylon.capabilities import Capabilities, local_capabilities
from dspy_pylon.config import Local
from dspy_pylon.errors import BackendConnectionError, BackendRequestError, ConfigError, NoLocalBackend, UnknownModel
from dspy_pylon.local.detect import ProbeResult
from dspy_pylon.local.embedded import INSTALL_HINT, embedded_available, shared_embedded
from dspy_pylon.local.endpoints import ServerKind, endpoint_for, normalize_url
from dspy_pylon.route import Route

if TYPE_CHECKING:
    # The HTTP client (and httpx under it) loads on the first call, not at import.
    from dspy_pylon.local.client import ChatClient

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


def _listing_path(kind: ServerKind) -> str:
    return "/api/tags" if kind == "ollama" else "/v1/models"


# Ollama lists the most recently changed model first, which is often an embedding
# model (nomic-embed-text, mxbai-embed-large): never pick one of those for chat.
_EMBEDDING_FAMILIES = frozenset({"bert", "nomic-bert", "jina-bert", "xlm-roberta"})


def _ollama_chat_model(entry: dict[str, Any]) -> bool:
    details = entry.get("details")
    if not isinstance(details, dict):
        details = {}
    families = {details.get("family"), *(details.get("families") or ())}
    return not (families & _EMBEDDING_FAMILIES) and "embed" not in str(entry.get("name", "")).lower()


def _model_names(kind: ServerKind, listing: Any, *, chat_only: bool = False) -> list[str]:
    names: list[str] = []
    if not isinstance(listing, dict):
        return names
    if kind == "ollama":
        for entry in listing.get("models") or ():
            named = isinstance(entry, dict) and isinstance(entry.get("name"), str)
            if named and (not chat_only or _ollama_chat_model(entry)):
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


def public_model_name(name: str) -> str:
    """A served model's name fit to publish: a model file's name without its directories
    (llama.cpp serves ``-m /home/me/models/x.gguf`` as that path). :func:`match_model` takes it back."""
    path = PurePath(name.replace("\\", "/"))
    drive = len(name) > 2 and name[1] == ":" and name[2] in "/\\"
    # A file: a ``.gguf``, a path from the root, home or here, a drive, or directories and an
    # extension. ``org/model-GGUF`` (a Hugging Face name) stays as it is.
    if (
        name.lower().endswith(".gguf")
        or name.startswith(("/", "~", "."))
        or drive
        or ("/" in str(path) and path.suffix)
    ):
        return path.name
    return name


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


def _template_renders_tools(client: ChatClient) -> bool | None:
    """llama.cpp's own report of whether its chat template renders tools; None if it could not say.

    A server that does not report it (no Jinja templates, or too old) is not trusted
    with tools: it would drop them or fail, and pylon refuses them instead.
    """
    try:
        props = client.get_json("/props")
    except (OSError, ValueError, lm15.LM15Error):
        return None
    caps = props.get("chat_template_caps") if isinstance(props, dict) else None
    return bool(isinstance(caps, dict) and caps.get("supports_tools"))


class LocalRouter:
    """Resolves a :class:`~dspy_pylon.config.Local` venue to a route and a client, once.

    The resolution is cached; a connection failure invalidates it so the next call
    probes again (the server may have restarted elsewhere, or a different one started).
    """

    def __init__(
        self, venue: Local, model: str | None, timeout: float, base_url: str | None = None, transport: Any = None
    ) -> None:
        if base_url is not None and venue.backend in ("auto", "embedded"):
            raise ConfigError("base_url needs a named backend (ollama, apple-fm or llamacpp)")
        self.venue = venue
        self.model = model
        self.timeout = timeout
        self.base_url = base_url
        # Every HTTP request (probes and calls) goes through it when given.
        self.transport = transport
        self._lock = threading.Lock()
        self._resolved: tuple[Route, ChatClient] | None = None
        self._clients: dict[str, ChatClient] = {}
        self._capabilities: dict[Route, Capabilities] = {}
        # The first route this router served: once a server answered, a later failure
        # never hands the calls to another backend or the embedded model unannounced.
        self._first: Route | None = None

    def cached(self) -> tuple[Route, ChatClient] | None:
        """The resolved route and client, if resolved (never probes: safe on an event loop)."""
        return self._resolved

    def resolve(self) -> tuple[Route, ChatClient]:
        """The route and client for the next call (probing only when nothing is cached)."""
        resolved = self._resolved
        if resolved is not None:
            return resolved
        with self._lock:
            # A local: invalidate() may clear the attribute from another thread at any time.
            current = self._resolved
            if current is None:
                current = self._resolve() if self._first is None else self._resolve_again(self._first)
                self._resolved = current
                if self._first is None:
                    self._first = current[0]
            return current

    def _resolve_again(self, first: Route) -> tuple[Route, ChatClient]:
        """After a failure: the same backend kind serving the same model, or an error.

        The server may be back where it was or where its environment variable points now
        (a restart on another port). A different model answering the same calls (DSPy's
        cache would then mix their answers under one key) is what a user must never get
        silently, so neither the embedded model nor another backend kind takes over.
        """
        if first.backend == "embedded":
            return self._embedded()
        from dspy_pylon.local.detect import probe_all

        kind: ServerKind = first.backend  # type: ignore[assignment]  # a ServerKind unless embedded
        urls = [first.base_url, self.base_url or endpoint_for(kind).base_url]
        endpoints = [replace(endpoint_for(kind), base_url=normalize_url(u)) for u in dict.fromkeys(urls)]
        results = probe_all(endpoints, transport=self.transport)
        elsewhere: list[str] = []
        offered: list[str] = []
        for result in results:
            if not result.ok:
                continue
            url = result.endpoint.base_url
            client = self._client(url)
            try:
                available = _model_names(kind, client.get_json(_listing_path(kind)))
            except (OSError, ValueError, lm15.LM15Error):
                available = []  # the bridge may list nothing: the call itself will tell
            served = match_model(kind, first.model, available) if available and kind != "apple-fm" else first.model
            if served is not None:
                return Route(first.venue, first.backend, url, served), client
            elsewhere.append(f"{url} offers {', '.join(available)}")
            offered.extend(available)
        if elsewhere:
            # Not retryable: the model is gone, and waiting will not bring it back.
            error = UnknownModel(
                f"{first.model!r}, which answered this LM's earlier calls, is no longer served by {first.backend} "
                f"({'; '.join(elsewhere)}); pylon will not switch models mid-run: build a new LM to use another model"
            )
            error.available = tuple(dict.fromkeys(offered))
            raise error
        probed = "; ".join(f"{r.endpoint.base_url} ({r.detail})" for r in results)
        raise BackendConnectionError(
            f"{first.backend}, which served this LM at {first.base_url}, stopped answering (probed {probed}); "
            "pylon will not switch to another model mid-run. Restart it (DSPy retries the call), or build a new "
            "LM to pick another backend",
            provider=first.backend,
        )
        if kind != "apple-fm" and available and match_model(kind, first.model, available) is None:
            # Not retryable: the model is gone, and waiting will not bring it back.
            error = UnknownModel(
                f"{first.backend} at {first.base_url} no longer serves {first.model!r}, which answered this LM's "
                f"earlier calls (it now offers {', '.join(available)}); pylon will not switch models mid-run: "
                "build a new LM to use another model"
            )
            error.available = tuple(available)
            raise error
        return first, client

    def capabilities(self, route: Route) -> Capabilities:
        """What the server behind ``route`` honours (llama.cpp: read from its ``/props`` once)."""
        caps = self._capabilities.get(route)
        if caps is None:
            reported: bool | None = True
            if route.backend in ("llamacpp", "embedded"):
                reported = _template_renders_tools(self._client(route.base_url))
            caps = local_capabilities(route.backend, template_tools=bool(reported))
            if reported is not None:  # an unanswered /props is asked again next time, not cached
                self._capabilities[route] = caps
        return caps

    def invalidate(self) -> None:
        """Forget the cached resolution: the next call probes again."""
        self._resolved = None

    @contextmanager
    def guard(self, route: Route) -> Iterator[None]:
        """Around one call on ``route``: learn from its failures.

        A transport failure forgets the resolution (the server may be back elsewhere).
        A "model not found" answer (Ollama's 404 after ``ollama rm``) becomes
        :class:`UnknownModel` listing what the server serves now, and also forgets it.
        """
        try:
            yield
        except lm15.TransportError:
            self.invalidate()
            raise
        except BackendRequestError as exc:
            if not _is_model_missing(exc) or route.backend == "embedded":
                raise
            self.invalidate()
            kind: ServerKind = route.backend  # type: ignore[assignment]  # a ServerKind unless embedded
            try:
                available = _model_names(kind, self._client(route.base_url).get_json(_listing_path(kind)))
            except (OSError, ValueError, lm15.LM15Error):
                available = []
            why = " (the chat call answered HTTP 404)"
            raise unknown_model(kind, route.model, route.base_url, available, why) from exc

    def _client(self, base_url: str) -> ChatClient:
        from dspy_pylon.local.client import ChatClient

        client = self._clients.get(base_url)
        if client is None:
            client = self._clients[base_url] = ChatClient(base_url, self.timeout, self.transport)
        return client

    def _resolve(self) -> tuple[Route, ChatClient]:
        backend = self.venue.backend
        if backend == "embedded":
            return self._embedded()
        from dspy_pylon.local.detect import detect, probe_all

        if self.base_url is not None:
            endpoint = replace(endpoint_for(backend), base_url=normalize_url(self.base_url))  # type: ignore[arg-type]
            results = probe_all([endpoint], transport=self.transport)
        else:
            results = detect(backend, transport=self.transport)
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
        path = _listing_path(kind)
        try:
            listing = client.get_json(path)
        except (OSError, ValueError, lm15.LM15Error) as exc:
            if kind == "apple-fm":
                # The bridge may not list models; it serves exactly one.
                return self.model or FM_DEFAULT_MODEL
            raise BackendConnectionError(
                f"{kind} at {client.base_url} answered its health check but not {path}: {exc}"
            ) from exc
        available = _model_names(kind, listing)
        if self.model is None:
            chat_models = _model_names(kind, listing, chat_only=True)
            if chat_models:
                return chat_models[0]
            if kind == "ollama":
                raise UnknownModel(
                    f"Ollama at {client.base_url} has no chat models (found: {', '.join(available) or 'none'}); "
                    "run `ollama pull llama3.2`"
                )
            return FM_DEFAULT_MODEL if kind == "apple-fm" else "default"
        served = match_model(kind, self.model, available)
        if served is None:
            raise unknown_model(kind, self.model, client.base_url, available)
        return served

    def served_models(self) -> list[str]:
        """Every model the resolved server lists (the resolved one first)."""
        route, client = self.resolve()
        kind: ServerKind = "llamacpp" if route.backend == "embedded" else route.backend  # type: ignore[assignment]
        try:
            names = _model_names(kind, client.get_json(_listing_path(kind)))
        except (ValueError, lm15.LM15Error):
            names = []
        return [route.model, *(n for n in names if n != route.model)]

    def close(self) -> None:
        """Close every client this router opened."""
        for client in self._clients.values():
            client.close()
