"""``pylon hud``: serve the live HUD page on its own, for runs in other processes to stream to.

Registered on the ``pylon`` group by :mod:`dspy_pylon.cli`; Starlette and uvicorn load only when it runs.
"""

from __future__ import annotations

import signal
import threading

import click

from dspy_pylon.plain_errors import PylonError


@click.command("hud")
@click.option("--host", default="127.0.0.1", show_default=True, help="Anything but loopback needs the token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: a free one.")
@click.option("--token", default=None, help="The page's token [default: none on loopback, a random one elsewhere].")
def hud(host: str, port: int, token: str | None) -> None:
    """Serve the live HUD and print its URL; Ctrl-C stops it.

    A program streams to it with dspy.configure(callbacks=[pylon.HudCallback(URL)]).
    """
    from dspy_pylon.hud.server import HudServer

    try:
        server = HudServer(host, port, token=token).start()
    except PylonError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"pylon HUD: {server.url}")
    click.echo(f"stream a run to it: dspy.configure(callbacks=[pylon.HudCallback({server.url!r})])")
    try:
        stop.wait()
    finally:
        server.close()
