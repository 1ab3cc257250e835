"""The customer side of a NIP-90 job: publish, watch feedback, accept the first valid result.

Lives on the :class:`~dspy_pylon.nostr.loop.NostrLoop`. One long-lived subscription to
results and feedback addressed to our key is opened before the first job is published;
events are routed to per-job queues by their ``e`` tag. Every event is checked: signature
(at the edge), kind, ``e`` = our job, ``p`` = us, author among the targeted providers when
the job named any. Anything else is dropped and counted in :attr:`SwarmCustomer.ignored`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspy_pylon.errors import JobFailed, MalformedEvent, PaymentFailed, PaymentRefused, PaymentRequired, SwarmTimeout
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.nostr.nip90 import DELETION_KIND, FEEDBACK_KIND, JobFeedback, JobRequest, JobResult, deletion_tags
from dspy_pylon.nostr.relay_client import Published, RelayClient
from dspy_pylon.pay.billing import JobBill, Payer
from dspy_pylon.pay.invoice import Bill
from dspy_pylon.swarm.reputation import Reputation

log = logging.getLogger("dspy_pylon.swarm")

# Noted on a paid job whose result was looked for after a restart and not found.
_NOT_ON_RELAYS = "no result on the relays at the next start"
# Accept results from events created up to this long before our subscription (clock skew).
_SKEW_S = 60


@dataclass
class JobOutcome:
    """A finished job: the accepted result and what happened on the way."""

    result: JobResult
    job_id: str
    relay: str
    latency_ms: float
    feedback: list[JobFeedback] = field(default_factory=list)
    published_to: tuple[str, ...] = ()
    failed_relays: dict[str, str] = field(default_factory=dict)
    cost_msats: int = 0
    request: JobRequest | None = None


#: Checks a result's content for the job it answers; raises MalformedEvent if it is unusable.
ResultCheck = Callable[[JobResult], None]


class _Job:
    def __init__(
        self, request: JobRequest, job_id: str, bill: JobBill | None = None, check: ResultCheck | None = None
    ) -> None:
        self.request = request
        self.check = check
        self.job_id = job_id
        self.bill = bill
        self.events: asyncio.Queue[tuple[RawEvent, str]] = asyncio.Queue()
        self.feedback: list[JobFeedback] = []
        self.published: Published | None = None
        self.started = time.perf_counter()
        # A result that came with a bill still to approve (auto_pay off).
        self.result: JobResult | None = None
        self.result_relay = ""


class SwarmCustomer:
    """Runs NIP-90 jobs for one key on one set of relays. Use on the NostrLoop thread."""

    def __init__(self, keys: Any, relays: tuple[str, ...], reputation: Reputation | None = None) -> None:
        self.keys = keys
        self.reputation = reputation
        self.pubkey = keys.public_key().to_hex()
        self.relays = relays
        self.ignored: Counter[str] = Counter()
        self._client: RelayClient | None = None
        self._jobs: dict[str, _Job] = {}
        # Jobs whose bill waits for the user's approval (PaymentRequired raised).
        self._awaiting: dict[str, _Job] = {}
        self._started = asyncio.Lock()
        self._recovering = asyncio.Lock()
        self._recovered = False

    async def _ready(self) -> RelayClient:
        async with self._started:
            if self._client is None:
                import nostr_sdk

                client = await RelayClient(self.relays).start()
                since = nostr_sdk.Timestamp.from_secs(max(0, int(time.time()) - _SKEW_S))
                base = nostr_sdk.Filter().pubkey(self.keys.public_key()).since(since)
                # Results of every request kind, plus feedback, addressed to us.
                results = base.kinds([nostr_sdk.Kind(k) for k in range(6000, 7000)])
                feedback = base.kinds([nostr_sdk.Kind(FEEDBACK_KIND)])
                await client.subscribe([results, feedback], self._route)
                self._client = client
            return self._client

    def _route(self, event: RawEvent, relay: str) -> None:
        job_id = event.value("e")
        job = self._jobs.get(job_id or "")
        if job is None:
            self.ignored["not one of our open jobs"] += 1
            return
        job.events.put_nowait((event, relay))

    def _check(self, job: _Job, event: RawEvent) -> JobResult | JobFeedback | None:
        """The parsed event if it is valid for ``job``; else None (counted)."""
        request = job.request
        if request.providers and event.pubkey not in request.providers:
            self.ignored["author not a targeted provider"] += 1
            return None
        try:
            if event.kind == FEEDBACK_KIND:
                parsed: JobResult | JobFeedback = JobFeedback.from_event(event)
            elif event.kind == request.kind + 1000:
                parsed = JobResult.from_event(event, self.keys)
            else:
                self.ignored["wrong result kind"] += 1
                return None
        except MalformedEvent as exc:
            self.ignored[f"malformed: {exc}"[:80]] += 1
            return None
        if parsed.request_id != job.job_id or parsed.customer != self.pubkey:
            self.ignored["e or p tag not ours"] += 1
            return None
        return parsed

    async def run(
        self, request: JobRequest, timeout: float, payer: Payer | None = None, check: ResultCheck | None = None
    ) -> JobOutcome:
        """Publish ``request`` and wait for the first valid result (or an ``error``, or the timeout).

        With a ``payer`` the bid is reserved before publishing (:class:`BudgetExceeded`
        otherwise) and bills are checked and paid as they arrive. ``check`` refuses a
        result whose content does not answer the job (counted as that provider's error).
        """
        client = await self._ready()
        if payer is not None:
            await self._recover(payer)
        event = request.to_event(self.keys)
        job_id = event.id().to_hex()
        bill = None
        if payer is not None:
            bill = payer.open(
                job_id,
                providers=request.providers,
                bid_msats=request.bid_msats or 0,
                model=request.param("model") or "",
            )
        job = _Job(request, job_id, bill, check)
        self._jobs[job_id] = job  # registered before publishing: no result can slip past
        deadline = time.monotonic() + timeout
        awaiting = False
        try:
            try:
                job.published = await client.publish(event)
            except BaseException as exc:
                if bill is not None:
                    bill.finish(answered=False, reason=f"not published: {exc}"[:300])
                raise
            return await self._wait(client, job, deadline, timeout)
        except PaymentRequired:
            awaiting = True
            self._forget_expired_approvals()
            self._awaiting[job_id] = job
            raise
        finally:
            if not awaiting:
                self._jobs.pop(job_id, None)
                if bill is not None:  # whatever ended the call (a no-op if it was recorded already)
                    bill.finish(answered=False, reason="the call ended without a result")

    def _forget_expired_approvals(self) -> None:
        """Stop tracking jobs whose bill expired unapproved: they can no longer be paid."""
        now = time.time()
        for job_id, job in list(self._awaiting.items()):
            if job.bill is not None and job.bill.pending_expires_at <= now:
                del self._awaiting[job_id]
                self._jobs.pop(job_id, None)
                job.bill.payer.ledger.finish(job_id, answered=False, reason="the bill expired unapproved")

    async def _recover(self, payer: Payer) -> None:
        if self._recovered:  # every job passes here; only the first one may have work to do
            return
        async with self._recovering:
            if not self._recovered:
                self._recovered = True
                orphans = payer.ledger.close_orphans()
                if payer.ledger.entries("spent", "paying"):
                    resolved = await payer.recover()
                    log.info("resolved %d payments interrupted by a restart", resolved)
                if orphans:
                    log.info("closed %d unpaid jobs of a process that stopped mid-call", orphans)
                await self._find_late_results(payer)

    async def _find_late_results(self, payer: Payer, limit: int = 50) -> None:
        """Paid jobs whose call was interrupted may have been answered after all: look on the relays
        (results are stored there) so the ledger says so. The newest ``limit`` such jobs only."""
        import nostr_sdk

        unanswered = [
            entry
            for entry in payer.ledger.entries("spent", "paid_no_result")
            if ("restart" in entry.reason or "interrupted" in entry.reason) and _NOT_ON_RELAYS not in entry.reason
        ][-limit:]
        if not unanswered or self._client is None:
            return
        by_id = {entry.job_id: entry for entry in unanswered}
        try:
            found = await self._client.fetch(
                [
                    nostr_sdk.Filter()
                    .kinds([nostr_sdk.Kind(k) for k in range(6000, 7000)])
                    .pubkey(self.keys.public_key())
                    .events([nostr_sdk.EventId.parse(job_id) for job_id in by_id])
                ],
                timeout=3.0,
            )
        except Exception as exc:  # best effort: the ledger already says "paid without a result"
            log.info("could not look for late results: %s", exc)
            return
        for raw in found:
            try:
                result = JobResult.from_event(raw, self.keys)
            except MalformedEvent:
                continue
            entry = by_id.get(result.request_id)
            if entry is not None and result.customer == self.pubkey and result.provider == entry.provider:
                payer.ledger.result_found_later(entry.job_id)
                del by_id[entry.job_id]
        for job_id in by_id:  # looked for once: later starts need not ask the relays again
            payer.ledger.note(job_id, _NOT_ON_RELAYS)

    async def pay(self, job_id: str, timeout: float) -> JobOutcome:
        """Pay the bill of a job that raised :class:`PaymentRequired`, then wait for its result."""
        job = self._awaiting.pop(job_id, None)
        if job is None or job.bill is None or job.bill.pending is None:
            raise PaymentRefused(f"job {job_id[:12]}… is not waiting for a payment approval in this process")
        client = await self._ready()
        bill = job.bill
        pending = bill.pending
        assert pending is not None
        try:
            bill.reservation = bill.payer.budget.reserve(bill.bid_msats)
        except BaseException:
            self._awaiting[job_id] = job
            raise
        self._jobs[job_id] = job
        try:
            await self._pay(client, job, pending)
            if job.result is not None:
                return self._accept(job, job.result, job.result_relay)
            return await self._wait(client, job, time.monotonic() + timeout, timeout)
        finally:
            self._jobs.pop(job_id, None)
            bill.finish(answered=False, reason="the call ended without a result")

    async def _pay(self, client: RelayClient, job: _Job, bill: Bill) -> None:
        """Check and pay ``bill``; on refusal or failure cancel the job and close its ledger row."""
        assert job.bill is not None
        try:
            if bill is job.bill.pending:
                job.bill.pending = None
                await job.bill.pay(bill, job.bill.check(bill))
            else:
                await job.bill.handle(bill)
        except PaymentRequired:
            job.bill.payer.budget.release(job.bill.reservation)
            raise
        except (PaymentRefused, PaymentFailed) as exc:
            await self._cancel(client, job.job_id, job.request.kind, "payment refused")
            job.bill.finish(answered=False, reason=str(exc))
            raise

    def _accept(self, job: _Job, result: JobResult, relay: str) -> JobOutcome:
        latency_ms = (time.perf_counter() - job.started) * 1000
        if self.reputation is not None:
            self.reputation.record_success(result.provider, latency_ms)
        if job.bill is not None:
            job.bill.finish(
                answered=True,
                provider=result.provider,
                model=result.model or "",
                prompt_tokens=result.prompt_tokens or 0,
                completion_tokens=result.completion_tokens or 0,
                latency_ms=round(latency_ms, 3),
            )
        return JobOutcome(
            result=result,
            job_id=job.job_id,
            relay=relay,
            latency_ms=latency_ms,
            feedback=job.feedback,
            published_to=job.published.accepted if job.published else (),
            failed_relays=job.published.failed if job.published else {},
            cost_msats=job.bill.paid_msats if job.bill is not None else 0,
            request=job.request,
        )

    async def _wait(self, client: RelayClient, job: _Job, deadline: float, timeout: float) -> JobOutcome:
        request, job_id, feedback = job.request, job.job_id, job.feedback
        errors: dict[str, str] = {}
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                raw, relay = await asyncio.wait_for(job.events.get(), remaining)
                parsed = self._check(job, raw)
                if isinstance(parsed, JobFeedback):
                    feedback.append(parsed)
                    if parsed.status == "payment-required" and job.bill is not None:
                        if parsed.bolt11 is None and not request.providers:
                            # A broadcast: another provider may still bill properly or answer.
                            job.bill.payer.ledger.note(job_id, f"bill without an invoice from {parsed.provider[:12]}…")
                            continue
                        billed = Bill(job_id, parsed.provider, parsed.amount_msats, parsed.bolt11 or "")
                        await self._pay(client, job, billed)
                    elif parsed.status == "error":
                        if self.reputation is not None:
                            self.reputation.record_error(parsed.provider)
                        errors[parsed.provider] = "; ".join(x for x in (parsed.extra, parsed.content) if x)
                        _fail_if_every_target_failed(job, errors)
                    log.debug("job %s: %s from %s", job_id[:12], parsed.status, parsed.provider[:12])
                elif isinstance(parsed, JobResult):
                    bill = job.bill
                    if bill is not None and bill.paid_provider and parsed.provider != bill.paid_provider:
                        # A broadcast we paid one provider for: another's result is not what we bought.
                        self.ignored["result from a provider we did not pay"] += 1
                        continue
                    if job.check is not None:
                        try:
                            job.check(parsed)
                        except MalformedEvent as exc:
                            self.ignored["result that does not answer the job"] += 1
                            if self.reputation is not None:
                                self.reputation.record_error(parsed.provider)
                            errors[parsed.provider] = f"its result does not answer the job: {exc}"
                            if bill is not None and bill.paid_provider == parsed.provider:
                                # Paid for: no other provider's result will be taken, so this is final.
                                raise JobFailed(
                                    f"job {job_id[:12]}… failed: {_describe(errors)}; {bill.paid_msats} msats were "
                                    "paid for it (ledger: paid without a result)"
                                ) from None
                            _fail_if_every_target_failed(job, errors)
                            continue
                    if (
                        bill is not None
                        and not bill.paid
                        and not bill.paying
                        and parsed.bolt11
                        and (parsed.amount_msats or 0) > 0
                        and bill.payer.pay_on_result
                    ):
                        # Billed after delivery: the same checks, then pay before accepting.
                        job.result, job.result_relay = parsed, relay
                        billed = Bill(job_id, parsed.provider, parsed.amount_msats, parsed.bolt11 or "")
                        await self._pay(client, job, billed)
                    return self._accept(job, parsed, relay)
        except TimeoutError:
            if self.reputation is not None:
                # Who let us down: the providers we named, and any that took the job.
                for provider in set(request.providers) | {f.provider for f in feedback if f.status == "processing"}:
                    self.reputation.record_timeout(provider)
            await self._cancel(client, job_id, request.kind, "timed out")
            if job.bill is not None:
                job.bill.finish(answered=False, reason=f"no result within {timeout:g} s")
                if job.bill.paid or job.bill.paying:
                    raise JobFailed(
                        f"paid {job.bill.paid_msats} msats for job {job_id[:12]}… but no result arrived within "
                        f"{timeout:g} s; the ledger records it as paid without a result"
                    ) from None
            if errors:
                raise JobFailed(
                    f"no result for job {job_id[:12]}… within {timeout:g} s, only errors: {_describe(errors)}; "
                    "the job was cancelled"
                ) from None
            seen = ", ".join(sorted({f"{f.status} from {f.provider[:12]}…" for f in feedback})) or "no feedback"
            raise SwarmTimeout(
                f"no valid result for job {job_id[:12]}… within {timeout:g} s ({seen}); the job was cancelled"
            ) from None
        except JobFailed as exc:
            if job.bill is not None:
                job.bill.finish(answered=False, reason=str(exc))
            raise
        except asyncio.CancelledError:
            # The caller gave up (its own timeout): close the job so its reservation is not held.
            if job.bill is not None:
                job.bill.finish(answered=False, reason="the call was cancelled")
            raise

    async def _cancel(self, client: RelayClient, job_id: str, kind: int, why: str) -> None:
        tags, reason = deletion_tags(job_id, kind, why)
        try:
            await client.publish(sign(DELETION_KIND, reason, tags, self.keys), ok_timeout=1.0)
        except Exception as exc:  # cancelling is best effort; the timeout is what the caller needs
            log.info("could not publish the cancellation of job %s: %s", job_id[:12], exc)

    async def close(self) -> None:
        """Disconnect from the relays."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def _fail_if_every_target_failed(job: _Job, errors: dict[str, str]) -> None:
    """One target: its error is final. Several targets: final once all failed.
    A broadcast: another provider may still answer; keep waiting."""
    providers = job.request.providers
    if providers and set(providers) <= set(errors):
        paid = job.bill.paid_msats if job.bill is not None else 0
        note = f"; {paid} msats were paid for it (ledger: paid without a result)" if paid else ""
        raise JobFailed(f"job {job.job_id[:12]}… failed: {_describe(errors)}{note}")


def _describe(errors: dict[str, str]) -> str:
    return "; ".join(f"provider {who[:12]}… reported an error: {why or 'no details'}" for who, why in errors.items())
