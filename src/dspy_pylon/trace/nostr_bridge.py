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

from dspy_pylon.errors import ConfigError, MalformedEvent, PylonError, RelayUnavailable
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.trace import receipts
from dspy_pylon.trace.graph import TraceGraph

FETCH_CHUNK = 250  # ids per filter


@dataclass(frozen=True)
class PublishedTrace:
    """What :meth:`NostrBridge.publish_trace` sent: the summary's id (what ``pylon trace fetch``
    takes), each receipt's id by node, the structure and index parts, and relays that refused an event."""

    summary_id: str
    receipt_ids: dict[str, str]
    structure_ids: tuple[str, ...]
    index_ids: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def event_ids(self) -> tuple[str, ...]:
        """Every event published, the summary last."""
        return (*self.receipt_ids.values(), *self.structure_ids, *self.index_ids, self.summary_id)


@dataclass(frozen=True)
class FetchedTrace:
    """A trace read back from relays: the rebuilt graph and the events it came from."""

    graph: TraceGraph
    summary: receipts.Summary
    receipts: tuple[RawEvent, ...]
    structures: tuple[RawEvent, ...]
    indexes: tuple[RawEvent, ...]


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
    or a secret key as hex or ``nsec``; reading needs none). ``timeout`` is per relay answer."""

    #: Receipts in flight at once while publishing.
    CONCURRENCY = 16

    def __init__(self, relays: Sequence[str], keys: Any = None, *, timeout: float = 10.0, loop: Any = None) -> None:
        if isinstance(relays, str) or not relays:
            raise ConfigError("NostrBridge needs a list of relay URLs")
        self.relays = tuple(relays)
        self.keys = _keys(keys)
        self.timeout = timeout
        self._loop = loop
        self._client: Any = None
        self._starting: asyncio.Lock | None = None

    def _run(self, coro: Any, events: int = 1) -> Any:
        from dspy_pylon.nostr.loop import NostrLoop

        if self._loop is None:
            self._loop = NostrLoop.shared()
        # Each event may wait a relay's answer; in flight CONCURRENCY at a time, the deadline grows with them.
        deadline = self.timeout * (3 + events / self.CONCURRENCY * 2)
        try:
            return self._loop.run(coro, timeout=deadline)
        except TimeoutError:
            raise RelayUnavailable(f"the relays {', '.join(self.relays)} did not answer in {deadline:.0f} s") from None

    async def _started(self) -> Any:
        from dspy_pylon.nostr.relay_client import RelayClient

        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # two calls at once make one client
            if self._client is None:
                client = RelayClient(self.relays, ok_timeout=self.timeout)
                await client.start()
                self._client = client
        return self._client

    # ─── publishing ───

    def publish_trace(self, graph: TraceGraph, manifest: Any = None) -> PublishedTrace:
        """Publish ``graph`` (a finished run) as receipts, structure and index parts and a summary;
        returns their ids. Everything is checked to fit before anything is sent. Raises
        :class:`~dspy_pylon.errors.RelayUnavailable` when no relay takes an event,
        :class:`~dspy_pylon.errors.MalformedEvent` for a graph that cannot be receipted."""
        if self.keys is None:
            raise ConfigError("publishing receipts needs keys to sign them")
        compiled_id = getattr(manifest, "compiled_id", None)
        planned, parts = receipts.plan(graph, compiled_id)
        events = len(planned) + len(parts) + len(graph) // receipts.INDEX_CHUNK + 2
        return self._run(self._publish(graph, planned, parts, compiled_id), events)  # type: ignore[no-any-return]

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
        gate = asyncio.Semaphore(self.CONCURRENCY)

        async def send(event: receipts.PlannedEvent) -> str:
            tags = [list(tag) for tag in event.tags]
            tags.extend(["e", receipt_ids[node_id], hint, marker] for node_id, marker in event.links)
            async with gate:
                published = await client.publish(sign(receipts.KIND, event.content, tags, self.keys))
            refused.update(published.failed)
            return str(published.event_id)

        async def send_receipt(event: receipts.PlannedEvent) -> None:
            assert event.node_id is not None
            receipt_ids[event.node_id] = await send(event)

        # Receipts whose parent has none go at once; the few that link a parent's receipt follow
        # in start order, once that receipt has its id.
        await asyncio.gather(*(send_receipt(e) for e in planned if not e.links))
        for event in planned:
            if event.links:
                await send_receipt(event)
        structure_ids = tuple(await asyncio.gather(*(send(part) for part in parts)))
        ordered = [receipt_ids[node_id] for node_id in graph.nodes if node_id in receipt_ids]
        indexes = receipts.index_parts(list(graph.nodes), ordered, compiled_id)
        index_ids = tuple(await asyncio.gather(*(send(part) for part in indexes)))
        summary_id = await send(receipts.summary(graph, index_ids, structure_ids, compiled_id))
        return PublishedTrace(summary_id, receipt_ids, structure_ids, index_ids, refused)

    # ─── reading ───

    async def _fetch_ids(self, ids: Sequence[str], client: Any = None) -> dict[str, RawEvent]:
        import nostr_sdk

        client = client or await self._started()
        found: dict[str, RawEvent] = {}
        for first in range(0, len(ids), FETCH_CHUNK):
            chunk = [nostr_sdk.EventId.parse(i) for i in ids[first : first + FETCH_CHUNK]]
            for event in await client.fetch([nostr_sdk.Filter().ids(chunk)], self.timeout):
                found[event.id] = event
        return found

    async def _linked(self, ids: Sequence[str], what: str, summary_id: str) -> list[RawEvent]:
        found = await self._fetch_ids(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise MalformedEvent(f"{len(missing)} {what} of trace {summary_id[:16]}… are not on the relays")
        return [found[i] for i in ids]

    async def _fetch(self, summary_id: str) -> FetchedTrace:
        events = await self._fetch_ids([summary_id])
        if summary_id not in events:
            connected = await (await self._started()).connected_relays()
            if not connected:
                raise RelayUnavailable(f"no relay of {', '.join(self.relays)} answered")
            raise MalformedEvent(f"no trace summary {summary_id[:16]}… on {', '.join(connected)}")
        summary = receipts.parse_summary(events[summary_id])
        indexes = await self._linked(_ids(summary.index_ids), "index parts", summary_id)
        structures = await self._linked(_ids(summary.structure_ids), "structure parts", summary_id)
        order: list[str] = []
        receipt_ids: list[str] = []
        for index in indexes:
            chunk, ids = receipts.parse_index(index)
            order.extend(chunk)
            receipt_ids.extend(ids)
        got_receipts = await self._linked(_ids(receipt_ids), "receipts", summary_id)
        graph = receipts.rebuild(order, got_receipts, structures)
        return FetchedTrace(graph, summary, tuple(got_receipts), tuple(structures), tuple(indexes))

    def fetch_trace(self, summary_id: str) -> FetchedTrace:
        """Read the trace whose summary is ``summary_id`` and rebuild its graph (signatures are
        checked as events arrive). :class:`~dspy_pylon.errors.MalformedEvent` when it is not
        there or its events do not make the graph they describe."""
        return self._run(self._fetch(_event_id(summary_id)), 8)  # type: ignore[no-any-return]

    def verify_trace(self, summary_id: str) -> TraceVerification:
        """Check a published trace: every event signed by the summary's author, each receipt's
        tags its node's, each swarm call's job result signed by the provider its receipt names
        and answering its request, no job claimed twice, and the totals adding up."""
        return self._run(self._verify(_event_id(summary_id)), 16)  # type: ignore[no-any-return]

    async def _verify(self, summary_id: str) -> TraceVerification:
        fetched = await self._fetch(summary_id)
        job_tags = [
            tag
            for event in fetched.receipts
            for tag in event.tags_named("e")
            if len(tag) >= 4 and tag[3] in ("job-request", "job-result")
        ]
        job_ids = _ids({tag[1] for tag in job_tags})
        jobs = await self._fetch_ids(job_ids) if job_ids else {}
        elsewhere = sorted({tag[2] for tag in job_tags if tag[1] not in jobs and tag[2] and tag[2] not in self.relays})
        if elsewhere:  # the jobs ran on other relays than the trace's: read them where the receipts say
            jobs.update(await self._fetch_elsewhere(elsewhere, [i for i in job_ids if i not in jobs]))
        receipts.recover_requests(jobs)
        problems, checked = receipts.verify(
            fetched.summary, fetched.graph, fetched.receipts, (*fetched.structures, *fetched.indexes), jobs
        )
        return TraceVerification(
            summary_id=summary_id,
            author=fetched.summary.event.pubkey,
            receipts=len(fetched.receipts),
            jobs_checked=checked,
            cost_msats=fetched.summary.cost_msats,
            problems=tuple(problems),
        )

    async def _fetch_elsewhere(self, relays: Sequence[str], ids: Sequence[str]) -> dict[str, RawEvent]:
        from dspy_pylon.nostr.relay_client import RelayClient

        other = RelayClient(relays, ok_timeout=self.timeout)
        try:
            await other.start()
            return await self._fetch_ids(ids, other)
        except PylonError:
            return {}  # unreachable: those jobs stay unresolved, and verification says so
        finally:
            await other.close()

    def close(self) -> None:
        """Disconnect from the relays."""
        if self._client is not None and self._loop is not None:
            self._loop.run(self._client.close(), timeout=self.timeout)
        self._client = None


def _ids(ids: Any) -> list[str]:
    # Ids read from events are checked before nostr-sdk parses them (its error is not ours).
    checked = []
    for text in ids:
        if not isinstance(text, str) or len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise MalformedEvent(f"{str(text)[:70]!r} in a trace is not an event id")
        checked.append(text)
    return checked


def _event_id(text: str) -> str:
    import nostr_sdk

    try:
        return str(nostr_sdk.EventId.parse(text.strip()).to_hex())
    except Exception as exc:  # nostr-sdk raises its own error type
        raise MalformedEvent(f"{text!r} is not an event id (hex, note1 or nevent1): {exc}") from None
