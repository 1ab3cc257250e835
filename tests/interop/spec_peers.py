"""NIP-90 peers written from the NIP text with raw nostr-sdk - deliberately not pylon's codec.

:class:`SpecProvider` is a text-generation DVM as the spec reads: it takes the first
``text`` input (in the clear, or from the JSON tags of an encrypted request), answers with
a kind-6050 result carrying ``request``, ``e`` and ``p`` (encrypted like the request, in
NIP-04 as the spec says), or with error feedback the way nostr-dvm writes it for encrypted
jobs (status and ``content`` as JSON tags inside the encrypted content). It reads only the
schemes it is told to: a NIP-04-only peer ignores what it cannot decrypt, as a real one would.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import nostr_sdk as n

from dspy_pylon.nostr.loop import NostrLoop


def tags_of(event: Any) -> list[list[str]]:
    return [list(tag.to_vec()) for tag in event.tags()]


def value(tags: list[list[str]], name: str) -> str | None:
    return next((t[1] for t in tags if t and t[0] == name and len(t) > 1), None)


def sign(keys: Any, kind: int, content: str, tags: list[list[str]]) -> Any:
    return n.EventBuilder(n.Kind(kind), content).tags([n.Tag.parse(t) for t in tags]).finalize(keys)


class _Peer:
    """A raw nostr-sdk client on ``loop`` with a task pumping its notifications."""

    loop: NostrLoop
    client: Any
    _pump: asyncio.Task[None] | None

    def close(self) -> None:
        async def stop() -> None:
            if self._pump is not None:
                self._pump.cancel()
            await self.client.shutdown()

        self.loop.run(stop(), 10)


class SpecProvider(_Peer):
    """A spec-built provider on ``relay_url`` (its own client on ``loop``)."""

    def __init__(
        self,
        loop: NostrLoop,
        relay_url: str,
        *,
        reads: tuple[str, ...] = ("nip04",),
        reply: str = "result",
        announce: dict[str, Any] | None = None,
    ) -> None:
        self.loop = loop
        self.keys = n.Keys.generate()
        self.pubkey = self.keys.public_key().to_hex()
        self.reads = reads
        self.reply = reply
        #: (scheme or "clear", prompt) of every request it could read; "unreadable" for the others.
        self.seen: list[tuple[str, str]] = []
        self.client: Any = None
        self._pump: asyncio.Task[None] | None = None
        loop.run(self._start(relay_url, announce), 30)

    async def _start(self, relay_url: str, announce: dict[str, Any] | None) -> None:
        self.client = n.Client()
        await self.client.add_relay(n.RelayUrl.parse(relay_url))
        await self.client.connect(timedelta(seconds=3))
        notes = self.client.notifications()
        if announce is not None:  # NIP-89, as a DVM announces itself
            event = sign(self.keys, 31990, json.dumps(announce), [["d", "spec-dvm"], ["k", "5050"]])
            await self.client.send_event(event)
        since = n.Timestamp.now()
        await self.client.subscribe(n.ReqTarget.auto([n.Filter().kind(n.Kind(5050)).since(since)]))
        self._pump = asyncio.get_running_loop().create_task(self._serve(notes))

    async def _serve(self, notes: Any) -> None:
        while True:
            note = await notes.next()
            if note.is_new_event() and note.event.kind().as_u16() == 5050:
                await self._handle(note.event)

    def _read(self, event: Any) -> tuple[str, list[list[str]]] | None:
        tags = tags_of(event)
        if not any(t[0] == "encrypted" for t in tags):
            return "clear", tags
        content = event.content()
        scheme = "nip04" if "?iv=" in content else "nip44"
        if scheme not in self.reads:
            return None
        author = event.author()
        plain = (
            self.keys.nip04_decrypt(author, content) if scheme == "nip04" else self.keys.nip44_decrypt(author, content)
        )
        return scheme, tags + json.loads(plain)

    async def _handle(self, event: Any) -> None:
        targets = [t[1] for t in tags_of(event) if t[0] == "p" and len(t) > 1]
        if targets and self.pubkey not in targets:
            return
        read = self._read(event)
        if read is None:
            self.seen.append(("unreadable", ""))
            return
        scheme, tags = read
        prompt = next((t[1] for t in tags if t[0] == "i" and len(t) > 2 and t[2] == "text"), "")
        self.seen.append((scheme, prompt))
        encrypted = scheme != "clear"
        author = event.author()
        job_id, customer = event.id().to_hex(), author.to_hex()

        def hide(text: str) -> str:
            # A reply to an encrypted request goes back encrypted, NIP-04 as NIP-90 says.
            return self.keys.nip04_encrypt(author, text) if encrypted else text

        if self.reply == "dvm-error":
            hidden = [["e", job_id], ["alt", "NIP90 DVM task had an error"], ["status", "error"]]
            hidden.append(["content", "spec provider: cannot do this job"])
            if encrypted:
                reply = sign(self.keys, 7000, hide(json.dumps(hidden)), [["encrypted"], ["p", customer], ["e", job_id]])
            else:
                reply = sign(self.keys, 7000, "cannot do this job", [*hidden[:3], ["p", customer]])
        else:
            tags = [["request", event.as_json()], ["e", job_id], ["p", customer]]
            reply = sign(self.keys, 6050, hide(f"spec answer to: {prompt[:200]}"), tags + [["encrypted"]] * encrypted)
        await self.client.send_event(reply)


class SpecCustomer(_Peer):
    """A spec-built customer on ``relay_url``: publishes kind-5050 requests and kind-5
    deletions, and keeps every result and feedback addressed to it, by job id."""

    def __init__(self, loop: NostrLoop, relay_url: str) -> None:
        self.loop = loop
        self.keys = n.Keys.generate()
        self.replies: dict[str, list[Any]] = {}
        self.client: Any = None
        self._pump: asyncio.Task[None] | None = None
        loop.run(self._start(relay_url), 30)

    async def _start(self, relay_url: str) -> None:
        self.client = n.Client()
        await self.client.add_relay(n.RelayUrl.parse(relay_url))
        await self.client.connect(timedelta(seconds=3))
        notes = self.client.notifications()
        mine = n.Filter().kinds([n.Kind(6050), n.Kind(7000)]).pubkey(self.keys.public_key()).since(n.Timestamp.now())
        await self.client.subscribe(n.ReqTarget.auto([mine]))
        self._pump = asyncio.get_running_loop().create_task(self._collect(notes))

    async def _collect(self, notes: Any) -> None:
        while True:
            note = await notes.next()
            if note.is_new_event():
                job_id = value(tags_of(note.event), "e") or ""
                self.replies.setdefault(job_id, []).append(note.event)

    def request(self, prompt: str, *, provider: str, relays: tuple[str, ...] = (), **params: str) -> str:
        """Publish a plain job for ``provider`` (asking for answers on ``relays`` too); returns its id."""
        tags = [["i", prompt, "text"], ["p", provider], *(["param", k, v] for k, v in params.items())]
        tags += [["relays", *relays]] if relays else []
        event = sign(self.keys, 5050, "", tags)
        self.loop.run(self.client.send_event(event), 10)
        return str(event.id().to_hex())

    def delete(self, job_id: str) -> None:
        """Cancel ``job_id``: a NIP-09 deletion naming the request's kind."""
        self.loop.run(self.client.send_event(sign(self.keys, 5, "never mind", [["e", job_id], ["k", "5050"]])), 10)

    def kinds(self, job_id: str) -> list[str]:
        """What came back for ``job_id``: "result", or the feedback status, in arrival order."""
        out = []
        for event in self.replies.get(job_id, []):
            kind = event.kind().as_u16()
            out.append("result" if kind == 6050 else str(value(tags_of(event), "status")))
        return out
