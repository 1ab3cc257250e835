"""The live HUD: a web page that shows a run as it happens (call tree, LM routes and money, the
budget gauge, optimizer candidates as a score chart and a lineage tree).

``pylon.hud.open()`` serves it in this process and records every DSPy run from then on;
``pylon hud`` serves it on its own and :class:`HudCallback` (its URL) streams to it from another
process. See :mod:`dspy_pylon.hud.server` for the routes and the token.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from dspy_pylon.hud.callback import HudCallback
from dspy_pylon.hud.events import EventKind, EventLog, HudEvent
from dspy_pylon.hud.server import HudServer


@dataclass
class Hud:
    """A HUD open in this process: its server, and the callback recording every run into it."""

    server: HudServer
    callback: HudCallback

    @property
    def url(self) -> str:
        """The page's URL (with its token, when one is needed)."""
        return self.server.url

    def close(self) -> None:
        """Stop recording and serving."""
        self.callback.close()
        self.server.close()

    def __enter__(self) -> Hud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    keep_content: bool = False,
    announce: TextIO | bool = True,
) -> Hud:
    """Serve the HUD here and record every DSPy run into it from now on; prints its URL to
    ``announce`` (``True``: standard error, as it is when called; ``False``: silent; or a
    stream) and returns the :class:`Hud` (``hud.url``, ``hud.close()``)."""
    from dspy_pylon.callbacks import set_callback

    server = HudServer(host, port, token=token).start()
    callback = HudCallback(log=server.log, keep_content=keep_content)
    try:
        set_callback(callback)
    except RuntimeError as exc:  # DSPy lets only the thread that configured it configure it
        server.close()
        from dspy_pylon.plain_errors import ConfigError

        raise ConfigError(f"pylon.hud.open() must run where DSPy was configured: {exc}") from None
    except BaseException:
        server.close()
        raise
    if announce is not False:
        print(f"pylon HUD: {server.url}", file=sys.stderr if announce is True else announce, flush=True)
    return Hud(server, callback)


__all__ = ["EventKind", "EventLog", "Hud", "HudCallback", "HudEvent", "HudServer", "open"]
