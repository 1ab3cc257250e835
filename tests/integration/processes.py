"""Real ``pylon relay`` and ``pylon serve`` processes for reliability tests (killable, restartable)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _pylon(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dspy_pylon.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )


def _first_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        raise AssertionError(f"expected a line starting {prefix!r}, got {line!r} (exit {proc.poll()})")
    return line.strip()


class RelayProcess:
    """``pylon relay`` on a fixed port, so it can be restarted at the same URL."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"ws://127.0.0.1:{port}"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[str]:
        proc = _pylon(["relay", "--port", str(self.port)], {})
        _first_line(proc, "relay at ws://")
        return proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.proc = self._start()


class ProviderProcess:
    """``pylon serve`` with its own identity (``pylon init`` in its own PYLON_HOME)."""

    def __init__(
        self, home: Path, relay_url: str, backend_url: str, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.env = {"PYLON_HOME": str(home), **(env or {})}
        init = subprocess.run(
            [sys.executable, "-m", "dspy_pylon.cli", "init"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            check=True,
        )
        npub = next(line.split()[1] for line in init.stdout.splitlines() if line.startswith("npub:"))
        import nostr_sdk

        self.pubkey = str(nostr_sdk.PublicKey.parse(npub).to_hex())
        args = ["serve", "--relay", relay_url, "--backend", "llamacpp", "--backend-url", backend_url, *extra]
        self.proc = _pylon(args, self.env)
        self.banner = _first_line(self.proc, "provider npub1")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> str:
        """SIGTERM (graceful) and return what it printed after its banner."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        return out


class DevWalletProcess:
    """``pylon wallet dev`` serving on a relay, with accounts created (and funded) at start."""

    def __init__(self, home: Path, relay_url: str, accounts: dict[str, int]) -> None:
        self.home = home
        self.env = {"PYLON_HOME": str(home)}
        args = ["wallet", "dev", "--relay", relay_url]
        for name, funds in accounts.items():
            args += ["--account", name, "--fund", str(funds)]
        self.proc = _pylon(args, self.env)
        self.label = _first_line(self.proc, "development wallet")
        assert self.proc.stdout is not None
        for _ in accounts:
            _first_line(self.proc, "account ")
        _first_line(self.proc, "development wallet ")

    def uri(self, account: str) -> str:
        """The account's NWC URI, from the 0600 file the command wrote."""
        return (self.home / "dev-wallet" / f"{account}.nwc").read_text().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
