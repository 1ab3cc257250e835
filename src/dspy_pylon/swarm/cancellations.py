"""Jobs their customers cancelled: NIP-90's cancellation is a NIP-09 deletion (kind 5) of the request.

A node remembers who sent each job it saw lately; a deletion counts only from that customer
(NIP-09: only an event's author may delete it). A cancelled job is dropped wherever it is:
before it is billed or queued, in the queue, or - a free job - while its model runs (the
inference is cancelled). A job already paid for runs: its customer paid for the answer.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dspy_pylon.nostr.events import RawEvent
from dspy_pylon.nostr.nip90 import DELETION_KIND

__all__ = ["CANCELLED", "Cancellations"]

#: The reason recorded for a job its customer cancelled.
CANCELLED = "cancelled by the customer"


class Cancellations:
    """The jobs a node saw lately (and their customers), those cancelled, and running inferences."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._customers: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running: dict[str, asyncio.Future[Any]] = {}

    def first_sight(self, job_id: str, customer: str) -> bool:
        """Remember ``job_id`` from ``customer``; False when it was seen already (another relay)."""
        if job_id in self._customers:
            return False
        self._customers[job_id] = customer
        if len(self._customers) > self.limit:
            self._customers.popitem(last=False)
        return True

    def cancel_from(self, deletion: RawEvent) -> list[str]:
        """The seen jobs ``deletion`` cancels (its author sent them); marks them, stops their inference."""
        if deletion.kind != DELETION_KIND:
            return []
        cancelled = []
        for tag in deletion.tags_named("e"):
            job_id = tag[1] if len(tag) > 1 else ""
            if self._customers.get(job_id) != deletion.pubkey or job_id in self._cancelled:
                continue
            self._cancelled[job_id] = None
            if len(self._cancelled) > self.limit:
                self._cancelled.popitem(last=False)
            running = self._running.get(job_id)
            if running is not None:
                running.cancel()
            cancelled.append(job_id)
        return cancelled

    def cancelled(self, job_id: str) -> bool:
        """Whether ``job_id``'s customer cancelled it."""
        return job_id in self._cancelled

    @contextmanager
    def running(self, job_id: str, inference: asyncio.Future[Any]) -> Iterator[None]:
        """While inside, a cancellation of ``job_id`` cancels ``inference``."""
        self._running[job_id] = inference
        try:
            yield
        finally:
            self._running.pop(job_id, None)
