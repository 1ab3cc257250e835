"""HTTP edge for local chat: sends codec-built bodies with httpx and maps failures to pylon errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from dspy import lm15

from dspy_pylon.capabilities import Capabilities
from dspy_pylon.errors import (
    BackendConnectionError,
    BackendRequestError,
    BackendServerError,
    BackendTimeout,
    ContextTooLong,
    PylonError,
)
from dspy_pylon.local import ollama_native, openai_chat
from dspy_pylon.route import Route

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class _Dialect:
    """One chat wire: where to post, how to build the body and read the answer and stream."""

    path: str
    payload: Callable[..., dict[str, Any]]
    parse: Callable[[Any, Route, float], lm15.Response]
    payloads: Callable[[Iterable[str]], Iterator[str]]
    events: Callable[[str, openai_chat.StreamState, Route], list[lm15.StreamEvent]]


_OPENAI = _Dialect(
    CHAT_PATH, openai_chat.chat_payload, openai_chat.parse_chat_response, openai_chat.sse_data, openai_chat.chunk_events
)
_OLLAMA_NATIVE = _Dialect(
    ollama_native.NATIVE_PATH,
    ollama_native.native_payload,
    ollama_native.parse_native_response,
    ollama_native.ndjson,
    ollama_native.native_chunk_events,
)


def _prepare(
    request: lm15.Request,
    route: Route,
    caps: Capabilities | None,
    options: Mapping[str, Any] | None,
    *,
    stream: bool,
) -> tuple[_Dialect, dict[str, Any]]:
    """The wire for this call and the body to post on it."""
    # Ollama's /v1 ignores its own option names; its native API reads them.
    wire = _OLLAMA_NATIVE if route.backend == "ollama" and options else _OPENAI
    return wire, wire.payload(request, route.model, stream=stream, capabilities=caps, options=options)


def _answer(response: httpx.Response, wire: _Dialect, route: Route, start: float) -> lm15.Response:
    """The lm15 response of a whole (non-streamed) answer, or the pylon error it carries."""
    if not response.is_success:
        raise status_error(route, response.status_code, _error_text(response))
    return wire.parse(_json(response, route), route, _ms(start))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)[:500]
        if error:
            return str(error)[:500]
    return response.text[:500]


def status_error(route: Route, status: int, text: str) -> PylonError:
    """The pylon error for a non-2xx answer from a local backend."""
    where = f"{route.backend} at {route.base_url}"
    if status in (408, 429) or status >= 500:
        return BackendServerError(f"{where} failed with HTTP {status}: {text}", status=status, provider=route.backend)
    if "context" in text.lower() and ("exceed" in text.lower() or "too long" in text.lower()):
        return ContextTooLong(f"{where}: {text}", status=status, provider=route.backend)
    return BackendRequestError(
        f"{where} refused the request (HTTP {status}): {text}", status=status, provider=route.backend
    )


def transport_error(route: Route, exc: httpx.HTTPError, timeout: float) -> PylonError:
    """The pylon error for a transport failure talking to a local backend."""
    where = f"{route.backend} at {route.base_url}"
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"{where} did not answer within {timeout:g} s", provider=route.backend)
    if isinstance(exc, httpx.ConnectError):
        return BackendConnectionError(f"could not connect to {where}: is it still running?", provider=route.backend)
    return BackendConnectionError(
        f"{where} dropped the connection mid-call ({type(exc).__name__}); it may have crashed or restarted",
        provider=route.backend,
    )


class ChatClient:
    """Chat completions against one local server. Thread-safe; one async pool per event loop.

    ``transport`` replaces the network (an ``httpx.MockTransport``, an application's own);
    async calls need it to implement ``handle_async_request`` too.
    """

    def __init__(self, base_url: str, timeout: float, transport: Any = None) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.transport = transport
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self._limits = limits
        self._sync = httpx.Client(
            base_url=base_url, timeout=timeout, limits=limits, trust_env=False, transport=transport
        )
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None:
                client = httpx.AsyncClient(
                    base_url=self.base_url,
                    timeout=self.timeout,
                    limits=self._limits,
                    trust_env=False,
                    transport=self.transport,
                )
                self._async[loop] = client
            return client

    # ─── plain requests ───

    def get_json(self, path: str) -> Any:
        """GET a JSON document from the server (model listings); failures are BackendConnectionError."""
        try:
            response = self._sync.get(path)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise BackendConnectionError(f"GET {self.base_url}{path} failed: {exc}") from exc
        return response.json()

    def complete(
        self,
        request: lm15.Request,
        route: Route,
        caps: Capabilities | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> lm15.Response:
        """One chat completion, blocking."""
        wire, body = _prepare(request, route, caps, options, stream=False)
        start = time.perf_counter()
        try:
            response = self._sync.post(wire.path, json=body)
        except httpx.HTTPError as exc:
            raise transport_error(route, exc, self.timeout) from exc
        return _answer(response, wire, route, start)

    async def acomplete(
        self,
        request: lm15.Request,
        route: Route,
        caps: Capabilities | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> lm15.Response:
        """One chat completion, awaited."""
        wire, body = _prepare(request, route, caps, options, stream=False)
        start = time.perf_counter()
        try:
            response = await self._async_client().post(wire.path, json=body)
        except httpx.HTTPError as exc:
            raise transport_error(route, exc, self.timeout) from exc
        return _answer(response, wire, route, start)

    # ─── streaming ───

    def stream(
        self,
        request: lm15.Request,
        route: Route,
        caps: Capabilities | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Iterator[lm15.StreamEvent]:
        """A chat completion as lm15 stream events, blocking."""
        wire, body = _prepare(request, route, caps, options, stream=True)
        state = openai_chat.StreamState()
        start = time.perf_counter()
        try:
            with self._sync.stream("POST", wire.path, json=body) as response:
                if not response.is_success:
                    response.read()
                    raise status_error(route, response.status_code, _error_text(response))
                for data in wire.payloads(response.iter_lines()):
                    yield from wire.events(data, state, route)
        except httpx.HTTPError as exc:
            raise transport_error(route, exc, self.timeout) from exc
        yield openai_chat.end_event(state, route, _ms(start))

    async def astream(
        self,
        request: lm15.Request,
        route: Route,
        caps: Capabilities | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[lm15.StreamEvent]:
        """A chat completion as lm15 stream events, awaited."""
        wire, body = _prepare(request, route, caps, options, stream=True)
        state = openai_chat.StreamState()
        start = time.perf_counter()
        try:
            async with self._async_client().stream("POST", wire.path, json=body) as response:
                if not response.is_success:
                    await response.aread()
                    raise status_error(route, response.status_code, _error_text(response))
                async for line in response.aiter_lines():
                    for data in wire.payloads((line,)):
                        for event in wire.events(data, state, route):
                            yield event
        except httpx.HTTPError as exc:
            raise transport_error(route, exc, self.timeout) from exc
        yield openai_chat.end_event(state, route, _ms(start))

    def close(self) -> None:
        """Close the blocking connection pool (async pools close with their loops)."""
        self._sync.close()


def _json(response: httpx.Response, route: Route) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendServerError(f"{route.backend} at {route.base_url} answered with invalid JSON") from exc


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
