"""The HUD's web server: the page, its live event stream, and an endpoint other processes send to.

Starlette routes over an :class:`~dspy_pylon.hud.events.EventLog`:

* ``GET /`` — the page (static HTML and script; it draws everything from the stream).
* ``GET /events`` — Server-Sent Events, each with its id: a page that reconnects sends
  ``Last-Event-ID`` (browsers do it themselves) or ``?since=N`` and gets what it missed.
* ``POST /ingest`` — a batch of events from a :class:`~dspy_pylon.hud.callback.HudCallback` in
  another process (``{"events": [{"kind": ..., "data": ...}], "dropped": n}``).

Bound to anything but loopback, every route needs the server's token (``?token=`` or an
``Authorization: Bearer`` header), and :class:`HudServer` makes one when none is given.
:class:`HudServer` runs uvicorn on a thread of its own; constructing it does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import secrets
import threading
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from dspy_pylon.hud.events import EventKind, EventLog
from dspy_pylon.plain_errors import ConfigError

#: How often a connected page is sent what arrived (events are batched, never sent one by one).
TICK_SECONDS = 0.1
PING_SECONDS = 15.0
MAX_INGEST_BYTES = 8 * 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def page_html() -> str:
    """The page (shipped with the package)."""
    return resources.files("dspy_pylon.hud").joinpath("page.html").read_text(encoding="utf-8")


def make_app(log: EventLog, token: str | None = None, allowed_hosts: Sequence[str] | None = None) -> Any:
    """The Starlette application serving ``log``; ``token`` (when set) guards every route, and
    ``allowed_hosts`` (when set) are the only ``Host`` headers it answers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    html = page_html()

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        given = request.query_params.get("token") or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = given or header[7:]
        return hmac.compare_digest(given.encode(), token.encode())

    def refused() -> Response:
        return PlainTextResponse("a token is needed: open the URL `pylon hud` printed", status_code=403)

    async def page(request: Request) -> Response:
        if not allowed(request):
            return refused()
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        if not allowed(request):
            return refused()
        try:
            last = int(request.headers.get("last-event-id") or request.query_params.get("since") or 0)
        except ValueError:
            return PlainTextResponse("Last-Event-ID and since are event numbers", status_code=400)

        async def stream() -> AsyncIterator[str]:
            # Written by hand rather than with sse-starlette: each tick sends everything that
            # arrived as one write (an event per write cost the run several percent at 1,000/s).
            nonlocal last
            idle = 0.0
            yield "retry: 1000\n\n"
            if last > log.last_id:  # the page saw a server before this one: it starts over
                last = 0
                yield "event: reset\ndata: {}\n\n"
            while True:
                batch, missed = log.since(last)
                if not batch and not missed:
                    await asyncio.sleep(TICK_SECONDS)
                    idle += TICK_SECONDS
                    if idle >= PING_SECONDS:  # a comment line keeps proxies from closing the stream
                        idle = 0.0
                        yield ": ping\n\n"
                    continue
                idle = 0.0
                parts = [f"event: missed\ndata: {json.dumps({'count': missed})}\n\n"] if missed else []
                parts.extend(f"id: {event.id}\ndata: {event.json}\n\n" for event in batch)
                if batch:
                    last = batch[-1].id
                yield "".join(parts)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def ingest(request: Request) -> Response:
        if not allowed(request):
            return refused()
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # A web page can POST text/plain anywhere without asking: only JSON is taken.
            return PlainTextResponse("send application/json", status_code=415)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_INGEST_BYTES:
            return PlainTextResponse("batch too large", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_INGEST_BYTES:
                return PlainTextResponse("batch too large", status_code=413)
        try:
            document = json.loads(body)
            items = document["events"]
            dropped = int(document.get("dropped", 0))
            parsed = [(EventKind(item["kind"]), dict(item["data"])) for item in items]
        except (ValueError, TypeError, KeyError, RecursionError):
            return PlainTextResponse("expected {'events': [{'kind': ..., 'data': {...}}], 'dropped': n}", 400)
        for kind, data in parsed:
            log.append(kind, data)
        if dropped > 0:
            log.append(EventKind.DROPPED, {"count": dropped})
        return JSONResponse({"accepted": len(parsed), "last_id": log.last_id})

    middleware = []
    if allowed_hosts is not None:
        from starlette.middleware import Middleware
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        # A page served to 127.0.0.1 answers only requests that name it: a site that rebinds its
        # own name to 127.0.0.1 (DNS rebinding) cannot read the stream.
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    return Starlette(
        routes=[
            Route("/", page),
            Route("/events", events),
            Route("/ingest", ingest, methods=["POST"]),
        ],
        middleware=middleware,
    )


class HudServer:
    """The HUD served by uvicorn on a thread of its own.

    ``port=0`` takes a free one (:attr:`url` says which, with the token when there is one).
    Bound to anything but loopback, a token is required: ``token`` or one made here.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, log: EventLog | None = None
    ) -> None:
        if token is not None and not token:
            raise ConfigError("an empty HUD token guards nothing")
        self.host = host
        self.port = port
        self.token = token if token is not None or is_loopback(host) else secrets.token_urlsafe(24)
        self.log = log if log is not None else EventLog()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Where it listens (no token)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The page's URL, with the token when one is needed."""
        return self.base_url + "/" + (f"?token={urllib.parse.quote(self.token, safe='')}" if self.token else "")

    def start(self, timeout: float = 15.0) -> HudServer:
        """Serve until :meth:`close`; returns once it listens."""
        import uvicorn

        if self._thread is not None:
            return self
        # IPv4 loopback and localhost: Starlette's host check cannot read a bracketed IPv6 host.
        hosts = ("127.0.0.1", "localhost") if is_loopback(self.host) and ":" not in self.host else None
        config = uvicorn.Config(
            make_app(self.log, self.token, hosts),
            host=self.host,
            port=self.port,
            log_level="critical",  # a port in use is reported below, as a ConfigError
            lifespan="off",
            timeout_graceful_shutdown=1,  # open event streams never end by themselves
        )
        self._server = server = uvicorn.Server(config)

        def serve() -> None:
            with contextlib.suppress(SystemExit):  # uvicorn exits its thread when it cannot bind
                server.run()

        self._thread = threading.Thread(target=serve, name="pylon-hud", daemon=True)
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(timeout / 0.01)):
            if server.started:
                ready.set()
                break
            if not self._thread.is_alive():
                break
            ready.wait(0.01)
        if not server.started:
            self.close()
            raise ConfigError(f"the HUD could not listen on {self.host}:{self.port}")
        self.port = server.servers[0].sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Stop serving (a connected page sees the stream end and retries)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None
        self._server = None

    def __enter__(self) -> HudServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
