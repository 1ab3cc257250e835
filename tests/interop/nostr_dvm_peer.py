"""nostr-dvm 1.1.8 DVMs (PyPI ``nostr-dvm``, the Python NIP-90 framework) as a foreign provider peer.

Run by ``.venv-dvm/bin/python -P`` (nostr-dvm pins its own nostr-sdk and dependencies; ``-P``:
this folder's modules stay off its sys.path), never imported by pytest;
:mod:`tests.interop.dvm_side` starts it. The working directory must be a
temporary one: nostr-dvm writes ``./db/<name>.db`` and ``./outputs/`` there.

One JSON argument::

    {"relay": "ws://127.0.0.1:PORT",
     "dvms": [{"name": "...", "secret_key": "<hex|nsec>", "fix_cost": 0,
               "lnbits_url": "", "lnbits_invoice_key": "", "announce": true,
               "dtag": "...", "announcement": {...extra NIP-89 content fields...}}]}

Each DVM is a kind-5050 text task that answers ``ECHO:`` + the last text input (what the
built-in text tasks feed their model), so a test can check which prompt reached it. All DVMs
share this process, as nostr-dvm's own multi-DVM launchers run them. SIGTERM stops them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from typing import Any

import nostr_dvm.dvm as dvm_module
from nostr_dvm.interfaces.dvmtaskinterface import DVMTaskInterface
from nostr_dvm.utils.admin_utils import AdminConfig
from nostr_dvm.utils.dvmconfig import DVMConfig
from nostr_dvm.utils.nip89_utils import NIP89Config
from nostr_sdk import Keys, Kind, LogLevel

_parse_amount = dvm_module.parse_amount_from_bolt11_invoice
_NETWORK = re.compile(r"ln(bcrt|tbs|tb|bc|sb)", re.IGNORECASE)


def _parse_amount_any_network(bolt11: str) -> int:
    # nostr-dvm's parser (zap_utils.parse_amount_from_bolt11_invoice) skips a 4-character
    # "lnbc" prefix, so a regtest "lnbcrt..." invoice (what our development wallet issues)
    # makes it call float("") after the invoice was paid; the exception ends the DVM's main
    # loop and the paid job is never answered. Strip the real network prefix and hand it the
    # mainnet spelling it can read (the amount part is the same).
    match = _NETWORK.match(bolt11)
    return _parse_amount("lnbc" + bolt11[match.end() :] if match else bolt11)


# dvm.py imported the parser by name: the name it calls must be replaced, before run().
dvm_module.parse_amount_from_bolt11_invoice = _parse_amount_any_network


class EchoTextDVM(DVMTaskInterface):
    """A deterministic kind-5050 task: ``ECHO:`` + the last ``text`` input."""

    KIND: Kind = Kind(5050)
    TASK: str = "text-to-text"
    FIX_COST: float = 0
    # Empty: install_dependencies() would otherwise pip-install a task's packages at start.
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012 - nostr-dvm's class attribute

    async def init_dvm(self, *args: Any, **kwargs: Any) -> None:
        # The built-in tasks set dvm_config.SCRIPT here, which turns the pip installs on.
        pass

    async def is_input_supported(self, tags: Any, client: Any = None, dvm_config: Any = None) -> bool:
        # Rejecting non-text inputs here also keeps nostr-dvm from fetching events or URLs to price them.
        return all(len(t.to_vec()) > 2 and t.to_vec()[2] == "text" for t in tags if t.to_vec()[0] == "i")

    async def create_request_from_nostr_event(self, event: Any, client: Any = None, dvm_config: Any = None) -> dict:
        prompt = ""
        for tag in event.tags():
            parts = tag.to_vec()
            if parts[0] == "i" and len(parts) > 2 and parts[2] == "text":
                prompt = parts[1]  # the last text input wins, as in nostr-dvm's text-generation tasks
        return {"jobID": event.id().to_hex(), "options": json.dumps({"prompt": prompt})}

    async def process(self, request_form: dict) -> str:
        return "ECHO:" + json.loads(request_form["options"])["prompt"]

    async def post_process(self, result: str, event: Any) -> str:
        # The default rewrites words in every result ("sets" -> "Sats", "Noster" -> "Nostr").
        return result


def _config(relay: str, spec: dict[str, Any]) -> DVMConfig:
    cfg = DVMConfig()  # not build_default_config(): it reads site-packages/.env and calls LNbits
    cfg.PRIVATE_KEY = spec["secret_key"]
    # Every relay list points at the test relay; the defaults are public relays on the internet.
    cfg.RELAY_LIST = [relay]
    cfg.ANNOUNCE_RELAY_LIST = [relay]
    cfg.SYNC_DB_RELAY_LIST = [relay]
    cfg.NUTZAP_RELAYS = [relay]
    cfg.FIX_COST = float(spec.get("fix_cost", 0))
    cfg.PER_UNIT_COST = 0
    cfg.LNBITS_URL = spec.get("lnbits_url", "")
    cfg.LNBITS_INVOICE_KEY = spec.get("lnbits_invoice_key", "")
    # No admin key: with one the DVM pays refunds on errors (to a lud16 on the internet).
    cfg.LNBITS_ADMIN_KEY = ""
    cfg.LN_ADDRESS = ""
    # Stopping must not delete the announcement a later test (discovery) reads.
    cfg.DELETE_ANNOUNCEMENT_ON_SHUTDOWN = False
    cfg.EXPIRATION_DURATION = 3600
    cfg.LOGLEVEL = LogLevel.INFO
    return cfg


def _announcement(spec: dict[str, Any]) -> NIP89Config:
    nip89 = NIP89Config()
    nip89.DTAG = spec.get("dtag", spec["name"])
    # The content nostr-dvm's build_example() functions write, plus what the test adds.
    content = {
        "name": spec["name"],
        "picture": "",
        "about": "nostr-dvm test peer: echoes the prompt",
        "supportsEncryption": True,
        "acceptsNutZaps": False,
        "nip90Params": {},
        **spec.get("announcement", {}),
    }
    nip89.CONTENT = json.dumps(content)
    return nip89


def main() -> None:
    conf = json.loads(sys.argv[1])
    # Each DVM's thread creates ./db and ./outputs with "if not exists: makedirs" (database_utils
    # create_sql_table); two DVMs starting together race there, and the loser's FileExistsError
    # skips creating its user table, after which it answers nothing. Made here, before they start.
    for folder in ("db", "outputs"):
        os.makedirs(folder, exist_ok=True)
    tasks = []
    for spec in conf["dvms"]:
        admin = AdminConfig()
        admin.REBROADCAST_NIP89 = bool(spec.get("announce", True))
        task = EchoTextDVM(
            name=spec["name"],
            dvm_config=_config(conf["relay"], spec),
            nip89config=_announcement(spec),
            admin_config=admin,
        )
        task.run()  # a non-daemon thread running DVM(...), which asyncio.run()s its loop
        tasks.append(task)
        print("READY", Keys.parse(spec["secret_key"]).public_key().to_hex(), flush=True)

    stopping = threading.Event()

    def stop(*_: object) -> None:
        # task.join() does not stop a DVM: its loop reads the class attribute DVM.stop_thread.
        dvm_module.DVM.stop_thread = True
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    for task in tasks:
        task.nostr_dvm_thread.join(10)
    alive = [task.NAME for task in tasks if task.nostr_dvm_thread.is_alive()]
    print("STOPPED" if not alive else f"STILL RUNNING {alive}", flush=True)
    sys.stderr.flush()
    # A normal interpreter exit often segfaults in nostr-sdk 0.45.1's teardown.
    os._exit(1 if alive else 0)


if __name__ == "__main__":
    main()
