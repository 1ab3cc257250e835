"""PyPI ``nostr-dvm`` 1.1.8 as a foreign NIP-90 peer: its DVMs and its client, run from ``.venv-dvm``.

nostr-dvm pins its own nostr-sdk and pulls in pandas, yt-dlp and more, so it lives in a
virtualenv of its own (``scripts/install_dvm.sh``, which ``scripts/test.sh`` runs) and runs in
subprocesses: :class:`NostrDvmPeer` runs ``nostr_dvm_peer.py`` (DVMs), :func:`run_client`
runs ``nostr_dvm_client.py`` (its client side). :class:`LNbitsStandIn` is the LNbits its
priced jobs and its client's payments go through, settled in pylon's development wallet.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nostr_sdk as n

from dspy_pylon.errors import WalletError
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.pay import nip47
from dspy_pylon.pay.dev_wallet import DevWalletStore

REPO = Path(__file__).resolve().parents[2]
# -P: the scripts' own folder (this test package's modules) must not lead their sys.path.
SAFE_PATH = "-P"
DVM_VENV = REPO / ".venv-dvm"
DVM_PYTHON = DVM_VENV / "bin" / "python"
HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "nostr_dvm_peer.py"
CLIENT_SCRIPT = HERE / "nostr_dvm_client.py"


class DvmNotInstalled(RuntimeError):
    """``.venv-dvm`` is missing: the nostr-dvm interop tests must fail, not skip."""


def dvm_python() -> Path:
    """The virtualenv's python, or :class:`DvmNotInstalled`."""
    if not DVM_PYTHON.exists():
        raise DvmNotInstalled(
            f"{DVM_PYTHON} is missing: run scripts/install_dvm.sh (scripts/test.sh runs it) to install "
            "the PyPI nostr-dvm 1.1.8 the interop tests run as a foreign peer"
        )
    return DVM_PYTHON


# ─── nostr-dvm's DVMs ───


@dataclass
class DvmSpec:
    """One nostr-dvm DVM of :class:`NostrDvmPeer` (its fields are the runner's JSON)."""

    name: str
    fix_cost_sats: int = 0
    lnbits_url: str = ""
    lnbits_invoice_key: str = ""
    #: Extra fields of its NIP-89 content (what its operator wrote besides nostr-dvm's own).
    announcement: dict[str, Any] = field(default_factory=dict)
    keys: Any = field(default_factory=n.Keys.generate)

    @property
    def pubkey(self) -> str:
        return str(self.keys.public_key().to_hex())

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtag": self.name,
            "secret_key": self.keys.secret_key().to_hex(),
            "fix_cost": self.fix_cost_sats,
            "lnbits_url": self.lnbits_url,
            "lnbits_invoice_key": self.lnbits_invoice_key,
            "announce": True,
            "announcement": self.announcement,
        }


class NostrDvmPeer:
    """nostr-dvm DVMs in one process of ``.venv-dvm``'s python, on ``relay``.

    They subscribe to jobs "since now": start them before the jobs. :meth:`start` returns
    once each answered a kind-7007 ping (nostr-dvm's liveness check; its ping subscription
    is the last it makes, so a pong means it reads jobs too). ``workdir`` is its working
    directory (nostr-dvm writes ``db/`` and ``outputs/`` there) and holds ``dvm.log``.
    """

    def __init__(self, loop: NostrLoop, relay: str, dvms: list[DvmSpec], workdir: Path) -> None:
        self.python = dvm_python()
        self.loop = loop
        self.relay = relay
        self.dvms = {spec.name: spec for spec in dvms}
        self.workdir = workdir
        self.log_path = workdir / "dvm.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __getitem__(self, name: str) -> DvmSpec:
        return self.dvms[name]

    def start(self, timeout: float = 30.0) -> NostrDvmPeer:
        conf = {"relay": self.relay, "dvms": [spec.as_json() for spec in self.dvms.values()]}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.python), SAFE_PATH, str(PEER_SCRIPT), json.dumps(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Unbuffered: the log must show what it did when it dies or hangs.
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            self.loop.run(self._pongs(timeout), timeout + 5)
        except BaseException as exc:
            self.stop()
            raise RuntimeError(f"nostr-dvm DVMs not ready after {timeout} s ({exc!r}):\n{self.log_tail()}") from exc
        return self

    async def _pongs(self, timeout: float) -> None:
        keys = n.Keys.generate()
        client = n.Client()
        await client.add_relay(n.RelayUrl.parse(self.relay))
        await client.connect(timedelta(seconds=3))
        notes = client.notifications()
        await client.subscribe(n.ReqTarget.auto([n.Filter().kind(n.Kind(7000)).pubkey(keys.public_key())]))
        waiting = {spec.pubkey for spec in self.dvms.values()}
        deadline = time.monotonic() + timeout
        try:
            while waiting:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"the nostr-dvm process exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no pong from {sorted(waiting)}")
                for pubkey in waiting:  # again each round: a ping sent before it subscribed is not read
                    ping = n.EventBuilder(n.Kind(7007), "").tags([n.Tag.parse(["p", pubkey])]).finalize(keys)
                    await client.send_event(ping)
                ends = time.monotonic() + 0.5
                while waiting and (left := ends - time.monotonic()) > 0:
                    try:
                        note = await asyncio.wait_for(notes.next(), left)
                    except TimeoutError:
                        break
                    if note is None or not note.is_new_event():
                        continue
                    tags = [list(t.to_vec()) for t in note.event.tags()]
                    if ["status", "pong"] in tags:
                        waiting.discard(note.event.author().to_hex())
        finally:
            await client.shutdown()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (each DVM's loop ends within a second), SIGKILL past ``timeout``; the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode


# ─── nostr-dvm's client ───


def run_client(mode: str, conf: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """Run nostr-dvm's client side (``job`` or ``discover``, see ``nostr_dvm_client.py``); its JSON answer."""
    done = subprocess.run(
        [str(dvm_python()), SAFE_PATH, str(CLIENT_SCRIPT), mode, json.dumps(conf)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=HERE,
    )
    # nostr-dvm prints as it goes: the answer is the last line.
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise AssertionError(
            f"nostr-dvm client ({mode}) exited with {done.returncode}:\n{done.stdout.decode(errors='replace')}\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


# ─── LNbits ───


@dataclass(frozen=True)
class LNbitsKey:
    """An LNbits wallet key: the development-wallet account behind it, and whether it may pay."""

    account: str
    admin: bool


class LNbitsStandIn:
    """The LNbits HTTP API nostr-dvm calls, on a loopback port, settled in pylon's development wallet.

    A stand-in because a real LNbits needs a Lightning funding source (a node, or an account
    at a hosted wallet), which a test cannot run. Its wallets are accounts of the same
    development wallet the pylon side pays and is paid through over NWC (``LocalSwarm``'s
    ``wallet_store``), so a payment between nostr-dvm and pylon moves real development-wallet
    balances end to end, through every check of the wallet (issued here, not expired, not
    paid twice, covered by the payer's balance).

    It serves exactly the calls nostr-dvm 1.1.8 makes (``utils/zap_utils.py``), with LNbits'
    field names and ``X-Api-Key`` header:

    * ``POST /api/v1/payments`` ``{"out": false, "amount": sats, "memo"}`` with an invoice or
      admin key: an invoice to that key's account; ``{"payment_hash", "payment_request"}``;
    * ``POST /api/v1/payments`` ``{"out": true, "bolt11"}`` with an admin key: pays it from
      that key's account; ``{"payment_hash"}``;
    * ``GET /api/v1/payments/{payment_hash}`` with a key of the payee or the payer: ``{"paid"}``.

    :meth:`use` points it at a test's wallet store (None: it answers 503) and forgets earlier
    calls; each call is kept in :attr:`calls` as ``(method, path, account, body)``. Served by
    the standard library's ``http.server`` in a thread (Starlette and uvicorn are not in the
    project's environment, and four JSON routes need neither).
    """

    def __init__(self) -> None:
        self.keys: dict[str, LNbitsKey] = {}
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []
        self._store: DevWalletStore | None = None
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stand_in._serve(self, "POST")

            def do_GET(self) -> None:
                stand_in._serve(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the calls are kept in LNbitsStandIn.calls

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port, taken atomically
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="lnbits-stand-in", daemon=True)

    def start(self) -> LNbitsStandIn:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def key(self, account: str, *, admin: bool) -> str:
        """A new API key for ``account`` (an admin key also pays)."""
        secret = os.urandom(16).hex()
        self.keys[secret] = LNbitsKey(account, admin)
        return secret

    def use(self, store: DevWalletStore | None) -> None:
        with self._lock:
            self._store = store
            self.calls.clear()

    def calls_of(self, account: str, method: str = "POST") -> list[dict[str, Any]]:
        with self._lock:
            return [body for verb, _, who, body in self.calls if who == account and verb == method]

    def _serve(self, http: BaseHTTPRequestHandler, method: str) -> None:
        try:
            length = int(http.headers.get("Content-Length") or 0)
            body = json.loads(http.rfile.read(length) or b"{}") if method == "POST" else {}
        except ValueError:
            return self._reply(http, HTTPStatus.BAD_REQUEST, {"detail": "body is not JSON"})
        key = self.keys.get(http.headers.get("X-Api-Key") or "")
        if key is None:
            return self._reply(http, HTTPStatus.UNAUTHORIZED, {"detail": "Invalid key"})
        with self._lock:
            store = self._store
            self.calls.append((method, http.path, key.account, body))
        if store is None:
            return self._reply(http, HTTPStatus.SERVICE_UNAVAILABLE, {"detail": "no wallet in use"})
        if method == "GET" and http.path.startswith("/api/v1/payments/"):
            return self._status(http, store, key, http.path.rsplit("/", 1)[1])
        if method == "POST" and http.path == "/api/v1/payments":
            return self._pay(http, store, key, body) if body.get("out") else self._invoice(http, store, key, body)
        return self._reply(http, HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

    def _invoice(self, http: BaseHTTPRequestHandler, store: DevWalletStore, key: LNbitsKey, body: Any) -> None:
        amount = body.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return self._reply(http, HTTPStatus.BAD_REQUEST, {"detail": "amount must be a positive number of sats"})
        invoice = store.make_invoice(key.account, amount * 1000, str(body.get("memo") or ""))
        answer = {"payment_hash": invoice.payment_hash, "payment_request": invoice.bolt11}
        self._reply(http, HTTPStatus.CREATED, {**answer, "checking_id": invoice.payment_hash})

    def _pay(self, http: BaseHTTPRequestHandler, store: DevWalletStore, key: LNbitsKey, body: Any) -> None:
        if not key.admin:
            return self._reply(http, HTTPStatus.UNAUTHORIZED, {"detail": "Invalid adminkey"})
        try:
            paid = store.pay_invoice(key.account, str(body.get("bolt11") or ""))
        except WalletError as exc:
            return self._reply(http, HTTPStatus.BAD_REQUEST, {"detail": str(exc)})
        answer = {"payment_hash": paid.invoice.payment_hash, "checking_id": paid.invoice.payment_hash}
        self._reply(http, HTTPStatus.CREATED, answer)

    def _status(self, http: BaseHTTPRequestHandler, store: DevWalletStore, key: LNbitsKey, payment_hash: str) -> None:
        invoice = store.invoice(payment_hash)
        if invoice is None or key.account not in (invoice.payee, invoice.payer):
            return self._reply(http, HTTPStatus.NOT_FOUND, {"detail": "Payment does not exist."})
        paid = invoice.state == nip47.SETTLED
        answer = {
            "paid": paid,
            "status": "success" if paid else "pending",
            "preimage": invoice.preimage if paid else None,
        }
        self._reply(http, HTTPStatus.OK, answer)

    @staticmethod
    def _reply(http: BaseHTTPRequestHandler, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)
