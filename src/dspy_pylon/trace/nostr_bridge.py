"""Trace receipts on Nostr relays (the I/O edge): publish a finished run's graph as signed events,
fetch them back into the same graph, and verify them against the real NIP-90 job events.

What the events hold is :mod:`dspy_pylon.trace.receipts` (pure); this module signs, sends and
fetches them on the :class:`~dspy_pylon.nostr.loop.NostrLoop` thread. Constructing a bridge
does no I/O: it connects on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dspy_pylon.errors import ConfigError, MalformedEvent, RelayUnavailable
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.trace import receipts
from dspy_pylon.trace.graph import TraceGraph

FETCH_CHUNK = 250  # ids per filter


@dataclass(frozen=True)
class PublishedTrace:
    """What :meth:`NostrBridge.publish_trace` sent: the summary's id (what ``pylon trace fetch``
    takes), each receipt's id by node, the structure parts, and relays that refused an event."""

    summary_id: str
    receipt_ids: dict[str, str]
    structure_ids: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def event_ids(self) -> tuple[str, ...]:
        """Every event published, the summary last."""
        return (*self.receipt_ids.values(), *self.structure_ids, self.summary_id)


@dataclass(frozen=True)
class FetchedTrace:
    """A trace read back from relays: the rebuilt graph and the events it came from."""

    graph: TraceGraph
    summary: receipts.Summary
    receipts: tuple[RawEvent, ...]
    structures: tuple[RawEvent, ...]


@dataclass(frozen=True)
class TraceVerification:
    """What :meth:`NostrBridge.verify_trace` found: ``ok`` when ``problems`` is empty."""

    summary_id: str
    author: str
    receipts: int
    jobs_checked: int
    cost_msats: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return not self.problems


def _keys(keys: Any) -> Any:
    if keys is None or hasattr(keys, "sign_event"):
        return keys
    if isinstance(keys, str):
        from dspy_pylon.identity import resolve_keys

        return resolve_keys(private_key=keys)
    raise ConfigError("keys are nostr_sdk.Keys, or a secret key as hex or nsec")


class NostrBridge:
    """Publishes and reads trace receipts on ``relays``, signing with ``keys`` (nostr-sdk ``Keys``
    or a secret key as hex or ``nsec``; reading needs none)."""

    def __init__(self, relays: Sequence[str], keys: Any = None, *, timeout: float = 10.0, loop: Any = None) -> None:
        if isinstance(relays, str) or not relays:
            raise ConfigError("NostrBridge needs a list of relay URLs")
        self.relays = tuple(relays)
        self.keys = _keys(keys)
        self.timeout = timeout
        self._loop = loop
        self._client: Any = None

    def _run(self, coro: Any) -> Any:
        from dspy_pylon.nostr.loop import NostrLoop

        if self._loop is None:
            self._loop = NostrLoop.shared()
        return self._loop.run(coro, timeout=self.timeout * 10)

    async def _started(self) -> Any:
        from dspy_pylon.nostr.relay_client import RelayClient

        if self._client is None:
            client = RelayClient(self.relays, ok_timeout=self.timeout)
            await client.start()
            self._client = client
        return self._client

    # ─── publishing ───

    def publish_trace(self, graph: TraceGraph, manifest: Any = None) -> PublishedTrace:
        """Publish ``graph`` (a finished run) as receipts, structure parts and a summary; returns
        their ids. Raises :class:`~dspy_pylon.errors.RelayUnavailable` when no relay takes an
        event, :class:`~dspy_pylon.errors.MalformedEvent` for a graph that cannot be receipted."""
        if self.keys is None:
            raise ConfigError("publishing receipts needs keys to sign them")
        compiled_id = getattr(manifest, "compiled_id", None)
        planned, parts = receipts.plan(graph, compiled_id)
        return self._run(self._publish(graph, planned, parts, compiled_id))  # type: ignore[no-any-return]

    async def _publish(
        self,
        graph: TraceGraph,
        planned: list[receipts.PlannedEvent],
        parts: list[receipts.PlannedEvent],
        compiled_id: str | None,
    ) -> PublishedTrace:
        client = await self._started()
        hint = self.relays[0]
        refused: dict[str, str] = {}
        receipt_ids: dict[str, str] = {}

        async def send(event: receipts.PlannedEvent) -> str:
            tags = [list(tag) for tag in event.tags]
            tags.extend(["e", receipt_ids[node_id], hint, marker] for node_id, marker in event.links)
            published = await client.publish(sign(receipts.KIND, event.content, tags, self.keys))
            refused.update(published.failed)
            return str(published.event_id)

        # In start order: a parent's receipt has its id before a child links to it.
        for event in planned:
            assert event.node_id is not None
            receipt_ids[event.node_id] = await send(event)
        structure_ids = tuple(await asyncio.gather(*(send(part) for part in parts)))
        summary = receipts.summary(graph, list(receipt_ids.items()), structure_ids, compiled_id, hint)
        summary_id = await send(summary)
        return PublishedTrace(summary_id, receipt_ids, structure_ids, refused)

    # ─── reading ───

    async def _fetch_ids(self, ids: Sequence[str]) -> dict[str, RawEvent]:
        import nostr_sdk

        client = await self._started()
        found: dict[str, RawEvent] = {}
        for first in range(0, len(ids), FETCH_CHUNK):
            chunk = [nostr_sdk.EventId.parse(i) for i in ids[first : first + FETCH_CHUNK]]
            for event in await client.fetch([nostr_sdk.Filter().ids(chunk)], self.timeout):
                found[event.id] = event
        return found

    async def _fetch(self, summary_id: str) -> FetchedTrace:
        events = await self._fetch_ids([summary_id])
        if summary_id not in events:
            connected = await (await self._started()).connected_relays()
            if not connected:
                raise RelayUnavailable(f"no relay of {', '.join(self.relays)} answered")
            raise MalformedEvent(f"no trace summary {summary_id[:16]}… on {', '.join(connected)}")
        summary = receipts.parse_summary(events[summary_id])
        linked = await self._fetch_ids([*summary.receipt_ids, *summary.structure_ids])
        missing = [i for i in (*summary.receipt_ids, *summary.structure_ids) if i not in linked]
        if missing:
            raise MalformedEvent(f"{len(missing)} events of trace {summary_id[:16]}… are not on the relays")
        got_receipts = tuple(linked[i] for i in summary.receipt_ids)
        got_structures = tuple(linked[i] for i in summary.structure_ids)
        graph = receipts.rebuild(summary, got_receipts, got_structures)
        return FetchedTrace(graph, summary, got_receipts, got_structures)

    def fetch_trace(self, summary_id: str) -> FetchedTrace:
        """Read the trace whose summary is ``summary_id`` and rebuild its graph (signatures are
        checked as events arrive). :class:`~dspy_pylon.errors.MalformedEvent` when it is not
        there or its events do not make the graph the summary describes."""
        return self._run(self._fetch(_event_id(summary_id)))  # type: ignore[no-any-return]

    def verify_trace(self, summary_id: str) -> TraceVerification:
        """Check a published trace: every event signed by the summary's author, every receipt
        listed and every listed event there, each swarm call's job result signed by the provider
        its receipt names and answering its request, and the costs adding up to the summary."""
        return self._run(self._verify(_event_id(summary_id)))  # type: ignore[no-any-return]

    async def _verify(self, summary_id: str) -> TraceVerification:
        fetched = await self._fetch(summary_id)
        job_ids = [
            tag[1]
            for event in fetched.receipts
            for tag in event.tags_named("e")
            if len(tag) >= 4 and tag[3] in ("job-request", "job-result")
        ]
        jobs = await self._fetch_ids(job_ids) if job_ids else {}
        for result in list(jobs.values()):
            _recover_request(result, jobs)
        problems = receipts.verify(fetched.summary, fetched.receipts, fetched.structures, jobs)
        return TraceVerification(
            summary_id=summary_id,
            author=fetched.summary.event.pubkey,
            receipts=len(fetched.receipts),
            jobs_checked=len(job_ids) // 2,
            cost_msats=fetched.summary.cost_msats,
            problems=tuple(problems),
        )

    def close(self) -> None:
        """Disconnect from the relays."""
        if self._client is not None and self._loop is not None:
            self._loop.run(self._client.close(), timeout=self.timeout)
        self._client = None


def _recover_request(result: RawEvent, jobs: dict[str, RawEvent]) -> None:
    # A customer deletes its request once answered (NIP-09, so other providers stop): the result
    # carries the request it answers (NIP-90's "request" tag), signed by the customer — taken
    # when its own signature checks out.
    text = result.value("request")
    if text is None or not 6000 <= result.kind < 7000:
        return
    import nostr_sdk

    from dspy_pylon.nostr.events import from_sdk

    try:
        request = from_sdk(nostr_sdk.Event.from_json(text))
    except Exception:  # not an event, or its signature fails: the request stays unresolved
        return
    jobs.setdefault(request.id, request)


def _event_id(text: str) -> str:
    import nostr_sdk

    try:
        return str(nostr_sdk.EventId.parse(text.strip()).to_hex())
    except Exception as exc:  # nostr-sdk raises its own error type
        raise MalformedEvent(f"{text!r} is not an event id (hex, note1 or nevent1): {exc}") from None
