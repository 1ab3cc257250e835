"""The customer side of a NIP-90 job: publish, watch feedback, accept the first valid result.

Lives on the :class:`~dspy_pylon.nostr.loop.NostrLoop`. One long-lived subscription to
results and feedback addressed to our key is opened before the first job is published;
events are routed to per-job queues by their ``e`` tag. Every event is checked: signature
and syntax here at the edge; kind, ``e`` = our job, ``p`` = us and the author (among the
targeted providers when the job named any) by the job's lifecycle
(:mod:`dspy_pylon.swarm.lifecycle`). Anything else is dropped and counted in
:attr:`SwarmCustomer.ignored`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Coroutine
from typing import Any

from dspy_pylon.errors import MalformedEvent, PaymentRefused
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.nostr.nip90 import (
    DELETION_KIND,
    FEEDBACK_KIND,
    RESULT_KINDS,
    JobFeedback,
    JobRequest,
    JobResult,
    deletion_tags,
)
from dspy_pylon.nostr.relay_client import Published, RelayClient
from dspy_pylon.pay.billing import JobBill, Payer
from dspy_pylon.swarm.job_actions import (
    Action,
    Blame,
    Cancel,
    Close,
    Credit,
    Deliver,
    Ignore,
    Note,
    Pay,
    Raise,
    Suspend,
)
from dspy_pylon.swarm.job_outcome import JobOutcome
from dspy_pylon.swarm.lifecycle import (
    Abandoned,
    Approved,
    CustomerJob,
    DeadlinePassed,
    Input,
    JobState,
    Received,
    ResultCheck,
)
from dspy_pylon.swarm.recovery import recover_interrupted
from dspy_pylon.swarm.reputation import Reputation

__all__ = ["JobOutcome", "ResultCheck", "SwarmCustomer"]

log = logging.getLogger("dspy_pylon.swarm")

# Accept results from events created up to this long before our subscription (clock skew).
_SKEW_S = 60


class _Job:
    """The driver's side of one job: its lifecycle, its bill, its queue of events."""

    def __init__(self, machine: CustomerJob, request: JobRequest, bill: JobBill | None, deadline: float) -> None:
        self.machine = machine
        self.request = request
        self.bill = bill
        self.deadline = deadline
        self.events: asyncio.Queue[tuple[RawEvent, str]] = asyncio.Queue()
        self.published: Published | None = None

    @property
    def parked(self) -> bool:
        return self.machine.state is JobState.AWAITING_APPROVAL


class SwarmCustomer:
    """Runs NIP-90 jobs for one key on one set of relays. Use on the NostrLoop thread.

    A thin driver: each job's decisions are made by its :class:`CustomerJob`; this class
    reads events, performs the actions, and runs every SQLite call (ledger, reputation)
    in a worker thread so the loop never waits for a lock.
    """

    def __init__(
        self,
        keys: Any,
        relays: tuple[str, ...],
        reputation: Reputation | None = None,
        *,
        client: RelayClient | None = None,
    ) -> None:
        self.keys = keys
        self.reputation = reputation
        self.pubkey = keys.public_key().to_hex()
        self.relays = relays
        self.ignored: Counter[str] = Counter()
        # A client passed in belongs to its owner (started here if need be, never closed here).
        self._given = client
        self._client: RelayClient | None = None
        self._subscription = ""
        self._jobs: dict[str, _Job] = {}
        # Jobs whose bill waits for the user's approval (PaymentRequired raised).
        self._awaiting: dict[str, _Job] = {}
        self._started = asyncio.Lock()
        self._recovering = asyncio.Lock()
        self._recovered = False
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def awaiting_approval(self) -> tuple[str, ...]:
        """Ids of the jobs whose bill waits for :func:`dspy_pylon.pay`."""
        return tuple(self._awaiting)

    async def connected(self) -> RelayClient:
        """The customer's relay client, started and subscribed (on first use)."""
        async with self._started:
            if self._client is None:
                import nostr_sdk

                client = self._given or RelayClient(self.relays)
                if not client.started:
                    await client.start()
                since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - _SKEW_S))
                base = nostr_sdk.Filter().pubkey(self.keys.public_key()).since(since)
                # Results of every request kind, plus feedback, addressed to us.
                results = base.kinds([nostr_sdk.Kind(k) for k in RESULT_KINDS])
                feedback = base.kinds([nostr_sdk.Kind(FEEDBACK_KIND)])
                self._subscription = await client.subscribe([results, feedback], self._route)
                self._client = client
            return self._client

    def _route(self, event: RawEvent, relay: str) -> None:
        job = self._jobs.get(event.value("e") or "")
        if job is None:
            self.ignored["not one of our open jobs"] += 1
            return
        job.events.put_nowait((event, relay))

    def _parse(self, event: RawEvent) -> JobResult | JobFeedback | None:
        """The parsed event, or None (counted) when it is neither feedback nor a result, or malformed."""
        try:
            if event.kind == FEEDBACK_KIND:
                return JobFeedback.from_event(event, self.keys)
            if event.kind in RESULT_KINDS:
                return JobResult.from_event(event, self.keys)
        except MalformedEvent as exc:
            self.ignored[f"malformed: {exc}"[:80]] += 1
            return None
        self.ignored["wrong result kind"] += 1
        return None

    async def run(
        self, request: JobRequest, timeout: float, payer: Payer | None = None, check: ResultCheck | None = None
    ) -> JobOutcome:
        """Publish ``request`` and wait for the first valid result (or an ``error``, or the timeout).

        With a ``payer`` the bid is reserved before publishing (:class:`BudgetExceeded`
        otherwise) and bills are checked and paid as they arrive. ``check`` refuses a
        result whose content does not answer the job (counted as that provider's error).
        """
        client = await self.connected()
        if payer is not None:
            await self._recover(payer)
        event = request.to_event(self.keys)
        job_id = event.id().to_hex()
        bill = await self._open_bill(payer, request, job_id) if payer is not None else None
        machine = CustomerJob(
            job_id,
            self.pubkey,
            request.kind,
            request.providers,
            timeout,
            started=time.perf_counter(),
            payable=bill is not None,
            pay_on_result=payer.pay_on_result if payer is not None else True,
            check=check,
        )
        job = _Job(machine, request, bill, time.monotonic() + timeout)
        self._jobs[job_id] = job  # registered before publishing: no result can slip past
        try:
            try:
                job.published = await client.publish(event)
            except BaseException as exc:
                await self._abandon(client, job, f"not published: {exc}")
                raise
            return await self._drive(client, job, [])
        finally:
            if not job.parked:
                self._unregister(job)

    async def _open_bill(self, payer: Payer, request: JobRequest, job_id: str) -> JobBill:
        """Reserve the bid and record the job (on the ledger's thread). A call cancelled meanwhile
        still gets its job closed once the record is written: no reservation or open row is left."""
        opening = asyncio.ensure_future(
            payer.ledger.run(
                payer.open,
                job_id,
                providers=request.providers,
                bid_msats=request.bid_msats or 0,
                model=request.param("model") or "",
            )
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._close_unused_bill)
            raise

    def _close_unused_bill(self, opening: asyncio.Future[JobBill]) -> None:
        if opening.cancelled() or opening.exception() is not None:
            return
        self._later(opening.result().close(answered=False, reason="the call was cancelled before publishing"))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` without waiting for it (kept referenced until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _unregister(self, job: _Job) -> None:
        """Stop routing events to ``job``; count those it never read."""
        self._jobs.pop(job.machine.job_id, None)
        while not job.events.empty():
            job.events.get_nowait()
            self.ignored["event after the job ended"] += 1

    async def pay(self, job_id: str, timeout: float) -> JobOutcome:
        """Pay the bill of a job that raised :class:`PaymentRequired`, then wait for its result."""
        job = self._awaiting.pop(job_id, None)
        if job is None or job.bill is None or not job.parked:
            raise PaymentRefused(f"job {job_id[:12]}… is not waiting for a payment approval in this process")
        client = await self.connected()
        try:
            job.bill.resume()
        except BaseException:
            self._awaiting[job_id] = job
            raise
        job.deadline = time.monotonic() + timeout
        job.machine.timeout = timeout
        self._jobs[job_id] = job
        try:
            return await self._drive(client, job, [Approved()])
        finally:
            if not job.parked:
                self._unregister(job)

    async def _drive(self, client: RelayClient, job: _Job, inputs: list[Input]) -> JobOutcome:
        """Feed the job's lifecycle until it delivers (returned) or fails (raised)."""
        pending = deque(inputs)
        try:
            while True:
                if not pending:
                    pending.append(await self._next(job))
                actions = job.machine.receive(pending.popleft(), time.perf_counter())
                if job.machine.final:
                    self._unregister(job)  # later events are not this job's any more
                for action in actions:
                    done = await self._perform(client, job, action)
                    if isinstance(done, JobOutcome):
                        return done
                    if done is not None:
                        pending.append(done)
        except BaseException as exc:
            # Cancelled by the caller, or an error of ours: the job's books still close.
            if not job.machine.final and not job.parked:
                reason = "the call was cancelled" if isinstance(exc, asyncio.CancelledError) else f"stopped: {exc!r}"
                await self._abandon(client, job, reason)
            raise

    async def _next(self, job: _Job) -> Input:
        """The next valid event for ``job``, or :class:`DeadlinePassed`."""
        while True:
            remaining = job.deadline - time.monotonic()
            if remaining <= 0:
                return DeadlinePassed()
            try:
                raw, relay = await asyncio.wait_for(job.events.get(), remaining)
            except TimeoutError:
                return DeadlinePassed()
            parsed = self._parse(raw)
            if parsed is not None:
                return Received(parsed, relay)

    async def _abandon(self, client: RelayClient, job: _Job, reason: str) -> None:
        unconfirmed = job.bill.in_flight_msats if job.bill is not None else 0
        for action in job.machine.receive(Abandoned(reason, unconfirmed), time.perf_counter()):
            await self._perform(client, job, action)

    async def _perform(self, client: RelayClient, job: _Job, action: Action) -> Input | JobOutcome | None:
        """Do one action; a payment's outcome comes back as the next input, a delivery as the outcome."""
        bill = job.bill
        if isinstance(action, Pay):
            assert bill is not None
            return await bill.settle(action.bill, approved=action.approved)
        if isinstance(action, Ignore):
            self.ignored[action.why] += 1
        elif isinstance(action, Note):
            if bill is not None:
                await bill.payer.ledger.run(bill.payer.ledger.note, job.machine.job_id, action.text)
        elif isinstance(action, Credit | Blame):
            await self._rate(action)
        elif isinstance(action, Cancel) and action.background:
            self._later(self._cancel(client, job.machine.job_id, job.request.kind, action.why))
        elif isinstance(action, Cancel):
            await self._cancel(client, job.machine.job_id, job.request.kind, action.why)
        elif isinstance(action, Close):
            if bill is not None:
                details = {
                    k: v for k, v in vars(action).items() if k not in ("answered", "reason", "unconfirmed_msats")
                }
                await bill.close(
                    answered=action.answered,
                    reason=action.reason,
                    unconfirmed_msats=action.unconfirmed_msats,
                    **details,
                )
        elif isinstance(action, Deliver):
            return self._outcome(job, action)
        elif isinstance(action, Suspend):
            assert bill is not None
            bill.suspend()
            await self._forget_expired_approvals(client)
            self._awaiting[job.machine.job_id] = job
            raise action.error
        elif isinstance(action, Raise):
            raise action.error
        return None

    def _outcome(self, job: _Job, delivered: Deliver) -> JobOutcome:
        return JobOutcome(
            result=delivered.result,
            job_id=job.machine.job_id,
            relay=delivered.relay,
            latency_ms=delivered.latency_ms,
            feedback=job.machine.feedback,
            published_to=job.published.accepted if job.published else (),
            failed_relays=job.published.failed if job.published else {},
            cost_msats=delivered.cost_msats,
            request=job.request,
        )

    async def _rate(self, action: Credit | Blame) -> None:
        if self.reputation is None:
            return
        if isinstance(action, Credit):
            await self.reputation.run(self.reputation.record_success, action.provider, action.latency_ms)
        elif action.kind == "timeout":
            await self.reputation.run(self.reputation.record_timeout, action.provider)
        else:
            await self.reputation.run(self.reputation.record_error, action.provider)

    async def _forget_expired_approvals(self, client: RelayClient) -> None:
        """Close jobs whose bill expired unapproved: they can no longer be paid."""
        now = time.time()
        for job_id, job in list(self._awaiting.items()):
            if job.machine.approval_expired(now):
                del self._awaiting[job_id]
                self._unregister(job)
                await self._abandon(client, job, "the bill expired unapproved")

    async def _recover(self, payer: Payer) -> None:
        if self._recovered:  # every job passes here; only the first one may have work to do
            return
        async with self._recovering:
            if not self._recovered:
                self._recovered = True
                assert self._client is not None
                await recover_interrupted(payer, self._client, self.keys)

    async def _cancel(self, client: RelayClient, job_id: str, kind: int, why: str) -> None:
        tags, reason = deletion_tags(job_id, kind, why)
        try:
            await client.publish(sign(DELETION_KIND, reason, tags, self.keys), ok_timeout=1.0)
        except Exception as exc:  # cancelling is best effort; the timeout is what the caller needs
            log.info("could not publish the cancellation of job %s: %s", job_id[:12], exc)

    async def close(self) -> None:
        """Disconnect from the relays (a client passed in stays open: its owner closes it)."""
        if self._client is not None and self._client is self._given:
            await self._client.unsubscribe(self._subscription)
        elif self._client is not None:
            await self._client.close()
        self._client = None
