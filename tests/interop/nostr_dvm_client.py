"""nostr-dvm 1.1.8's client side (its bot's job, feedback and payment handling) as a foreign customer peer.

Run by ``.venv-dvm/bin/python -P`` (``-P``: this folder's modules stay off its sys.path), never
imported by pytest; :mod:`tests.interop.dvm_side` runs it.
nostr-dvm ships no "send a job, wait for the result" helper: its client logic lives in
``nostr_dvm/bot.py`` (a DM-to-DVM bridge). This script does what the bot does for one job,
with nostr-dvm's own helpers where they exist (``nostr_utils.send_event``,
``nip89_utils.nip89_fetch_events_pubkey`` / ``nip89_fetch_all_dvms_by_kind``,
``zap_utils.pay_bolt11_ln_bits``) and raw nostr-sdk 0.45 calls made as nostr-dvm makes them.

``job`` mode, one JSON argument::

    {"relay": "ws://...", "provider": "<hex>", "prompt": "...", "encrypt": false | true | "announced",
     "lnbits_url": "http://...", "lnbits_admin_key": "...", "timeout": 30}

``"announced"`` encrypts only when the provider's NIP-89 announcement says ``supportsEncryption``
(what ``external_dvm_utils.build_external_dvm`` reads for the bot). Like the bot, the request has
no ``bid``; on ``payment-required`` the bolt11 of the ``amount`` tag is paid through LNbits when
an admin key is given. Prints one JSON line: the result, the feedback seen, what was billed.

``discover`` mode, ``{"relay": "ws://...", "kind": 5050}``: prints the NIP-89 announcements
``nip89_fetch_all_dvms_by_kind`` finds, with their content parsed as nostr-dvm reads it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

from nostr_dvm.utils.dvmconfig import DVMConfig
from nostr_dvm.utils.nip89_utils import nip89_fetch_all_dvms_by_kind, nip89_fetch_events_pubkey
from nostr_dvm.utils.nostr_utils import send_event
from nostr_dvm.utils.zap_utils import pay_bolt11_ln_bits
from nostr_sdk import (
    ClientBuilder,
    EventBuilder,
    Filter,
    Keys,
    Kind,
    Nip44Version,
    PublicKey,
    RelayUrl,
    ReqTarget,
    SignerAuthenticator,
    Tag,
    Timestamp,
    nip04_decrypt,
    nip44_decrypt,
    nip44_encrypt,
)


async def _client(config: DVMConfig) -> Any:
    # As external_dvm_utils.build_client does (importing it loads every task's dependencies),
    # except that it waits for the connection: a bare connect() returns before the websocket is
    # up, and a subscription or job sent meanwhile can be lost (seen: no job, no answer). The
    # waiting form is the one nostr-dvm's own tasks use (connect(timedelta(seconds=15))).
    client = ClientBuilder().authenticator(SignerAuthenticator(Keys.parse(config.PRIVATE_KEY))).build()
    for relay in config.RELAY_LIST:
        await client.add_relay(RelayUrl.parse(relay))
    await client.connect(timedelta(seconds=10))
    return client


def _decrypt(keys: Any, author: Any, content: str) -> str:
    # The bot's order: NIP-44 first, NIP-04 when that fails (bot.py handle_nip90_feedback).
    try:
        return str(nip44_decrypt(keys.secret_key(), author, content))
    except Exception:
        return str(nip04_decrypt(keys.secret_key(), author, content))


def _read(keys: Any, event: Any) -> tuple[list[list[str]], str, bool]:
    """An event's tags and content as the bot reads them: encrypted feedback's tags (status,
    amount, content) are JSON inside its content; an encrypted result's content is the answer."""
    tags = [list(t.to_vec()) for t in event.tags()]
    content = str(event.content())
    encrypted = ["encrypted"] in tags
    if not encrypted:
        return tags, content, False
    plain = _decrypt(keys, event.author(), content)
    if event.kind().as_u16() != 7000:
        return tags, plain, True
    hidden = json.loads(plain)
    content = next((t[1] for t in hidden if t[0] == "content" and len(t) > 1), "")
    # The bot replaces the tags with the decrypted ones (plus p and encrypted).
    return [*hidden, *(t for t in tags if t[0] in ("p", "encrypted", "e"))], content, True


async def job(conf: dict[str, Any]) -> dict[str, Any]:
    keys = Keys.generate()
    config = DVMConfig()
    config.PRIVATE_KEY = keys.secret_key().to_hex()
    config.RELAY_LIST = [conf["relay"]]
    config.LNBITS_URL = conf.get("lnbits_url", "")
    config.LNBITS_ADMIN_KEY = conf.get("lnbits_admin_key", "")
    client = await _client(config)
    provider = PublicKey.parse(conf["provider"])
    encrypt = conf.get("encrypt", False)
    announced: dict[str, Any] = {}
    if encrypt == "announced":
        content = await nip89_fetch_events_pubkey(client, provider.to_hex(), Kind(5050))
        announced = json.loads(content) if content else {}
        encrypt = bool(announced.get("supportsEncryption"))
    # The tags of bot.py's build_params for a text task, then the p tag of the DVM.
    inner = [
        Tag.parse(["i", conf["prompt"], "text"]),
        Tag.parse(["alt", "text-generation"]),
        Tag.parse(["output", "text/plain"]),
        Tag.parse(["relays", *config.RELAY_LIST]),
    ]
    p_tag = Tag.parse(["p", provider.to_hex()])
    if encrypt:
        secret = nip44_encrypt(keys.secret_key(), provider, json.dumps([t.to_vec() for t in inner]), Nip44Version.V2)
        request = EventBuilder(Kind(5050), secret).tags([p_tag, Tag.parse(["encrypted"])]).finalize(keys)
    else:
        request = EventBuilder(Kind(5050), "").tags([*inner, p_tag]).finalize(keys)
    job_id = request.id().to_hex()
    # The bot's subscription: results and feedback addressed to it.
    results = Filter().kinds([Kind(6050), Kind(7000)]).pubkey(keys.public_key()).since(Timestamp.now())
    subscribed = await client.subscribe(ReqTarget.auto([results]), None)
    stream = client.notifications()
    sent = await send_event(request, client=client, dvm_config=config)

    out: dict[str, Any] = {
        "job_id": job_id,
        "customer": keys.public_key().to_hex(),
        "encrypted": bool(encrypt),
        "announced": announced,
        "result": None,
        "result_encrypted": None,
        "feedback": [],
        "billed_msats": None,
        "bolt11": None,
        "payment_hash": None,
    }
    if not subscribed.success or sent is None or not sent.success:
        out["error"] = f"not subscribed ({subscribed.failed}) or not sent ({sent and sent.failed})"
        await client.shutdown()
        return out
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(conf.get("timeout", 30))
    try:
        while True:
            try:
                note = await asyncio.wait_for(stream.next(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                out["error"] = "timed out"
                return out
            if note is None or not note.is_new_event():
                continue
            event = note.event
            if event.author().to_hex() != provider.to_hex():
                continue
            tags, content, hidden = _read(keys, event)
            if next((t[1] for t in tags if t[0] == "e"), None) != job_id:
                continue
            if event.kind().as_u16() == 6050:
                out["result"], out["result_encrypted"] = content, hidden
                return out
            status = next((t for t in tags if t[0] == "status"), ["status", ""])
            amount = next((t for t in tags if t[0] == "amount"), None)
            out["feedback"].append(
                {"status": status[1], "content": content or (status[2] if len(status) > 2 else ""), "hidden": hidden}
            )
            if status[1] == "error":
                out["error"] = content
                return out
            if status[1] == "payment-required" and amount is not None:
                out["billed_msats"] = int(amount[1])
                out["bolt11"] = amount[2] if len(amount) > 2 else None
                if out["bolt11"] and config.LNBITS_ADMIN_KEY:
                    # bot.py pays the bolt11 of the amount tag through LNbits, in a thread.
                    out["payment_hash"] = await asyncio.to_thread(pay_bolt11_ln_bits, out["bolt11"], config)
    finally:
        await client.shutdown()


async def discover(conf: dict[str, Any]) -> dict[str, Any]:
    config = DVMConfig()
    config.PRIVATE_KEY = Keys.generate().secret_key().to_hex()
    config.RELAY_LIST = [conf["relay"]]
    client = await _client(config)
    try:
        events = await nip89_fetch_all_dvms_by_kind(client, conf.get("kind", 5050))
        found = []
        for event in events:
            try:
                content = json.loads(event.content())
            except ValueError:
                content = event.content()
            found.append(
                {
                    "pubkey": event.author().to_hex(),
                    "tags": [list(t.to_vec()) for t in event.tags()],
                    "content": content,
                }
            )
        return {"announcements": found}
    finally:
        await client.shutdown()


def main() -> None:
    mode, conf = sys.argv[1], json.loads(sys.argv[2])
    out = asyncio.run(job(conf) if mode == "job" else discover(conf))
    print(json.dumps(out), flush=True)
    sys.stderr.flush()
    # nostr-sdk 0.45.1 sometimes segfaults in interpreter teardown: the answer is out, leave now.
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
