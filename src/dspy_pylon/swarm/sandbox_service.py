"""The node's sandbox service: judges, prices and runs kind-5930 jobs with the isolated executor.

It answers :func:`dspy_pylon.swarm.admission.admit`'s questions (why a job cannot run, what it
costs) before any money moves, so a job the offer or the host cannot take is refused before an
invoice is sent. Running is the executor's blocking work in a worker thread, never on the
node's loop; a cancel (a free job's customer deleting it, the node stopping) reaches the
executor through a :class:`threading.Event` and stops the job within a tick.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dspy_pylon.nostr.nip90 import JobRequest
from dspy_pylon.plain_errors import MalformedEvent, SandboxRefused
from dspy_pylon.sandbox.executor import ExecutorConfig, SandboxExecutor
from dspy_pylon.sandbox.schema import SandboxRunRequest, SandboxRunResponse
from dspy_pylon.sandbox.wire import SandboxOffer, read_sandbox_job

__all__ = ["SandboxService"]


#: Parsed requests kept (admission, pricing and the run each read one): a few per worker.
_PARSED_LIMIT = 64


@dataclass
class SandboxService:
    """What a node needs to sell sandboxed execution."""

    offer: SandboxOffer
    executor: SandboxExecutor
    max_unpaid: int = 256
    concurrency: int = 1
    _parsed: OrderedDict[str, SandboxRunRequest] = field(default_factory=OrderedDict, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        offer: SandboxOffer,
        *,
        max_unpaid: int,
        concurrency: int = 1,
        executor: SandboxExecutor | None = None,
    ) -> SandboxService:
        """The service for ``offer``, with an executor that allows what the offer allows."""
        executor = executor or SandboxExecutor(
            ExecutorConfig(networks=frozenset(offer.networks), allow_git=offer.allow_git)
        )
        return cls(offer, executor, max_unpaid, max(1, concurrency))

    def request(self, job: JobRequest) -> SandboxRunRequest:
        """The sandbox request ``job`` carries; :class:`MalformedEvent` when it carries none."""
        found = self._parsed.get(job.id)
        if found is None:
            found = read_sandbox_job(job)
            self._parsed[job.id] = found
            while len(self._parsed) > _PARSED_LIMIT:
                self._parsed.popitem(last=False)
        return found

    def forget(self, job_id: str) -> None:
        """Drop what was kept of a job (its request holds the customer's environment)."""
        self._parsed.pop(job_id, None)

    def cannot_run(self, job: JobRequest) -> str | None:
        """Why ``job`` cannot run here (not a sandbox request, outside the offer, beyond what
        this host can enforce), or None."""
        try:
            request = self.request(job)
        except MalformedEvent as exc:
            return str(exc)
        why = self.offer.refusal(request)
        if why is not None:
            return why
        try:
            self.executor.admit(request)
        except SandboxRefused as exc:
            return f"this node cannot run the job as asked: {exc}"
        return None

    def price_for(self, job: JobRequest) -> int:
        """What ``job`` costs here (msats): the offer's base plus its CPU-seconds."""
        try:
            return self.offer.price(self.request(job))
        except MalformedEvent:  # refused anyway
            return self.offer.base_msats

    async def run(self, job: JobRequest, provider_pubkey: str) -> SandboxRunResponse:
        """Run ``job`` to its end on one of the service's own threads (never the loop's default
        pool, which DNS lookups and the backends' probes need). Cancelling this coroutine stops
        the job (status ``cancelled``) and waits for the executor to clean up after it."""
        request = self.request(job)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="pylon-sandbox")
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        call = functools.partial(self.executor.run, request, cancel=cancel, provider_pubkey=provider_pubkey)
        work = loop.run_in_executor(self._pool, call)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancel.set()
            # The executor notices within a tick; its cgroups and tmpfs are gone when it returns.
            await asyncio.wait([work])
            raise

    def close(self) -> None:
        """Let the service's threads go (after the jobs on them ended)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
