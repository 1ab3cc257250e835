"""The provider node: serves NIP-90 text-generation jobs from relays with a local backend, and
(with ``settings.sandbox``) sandboxed code execution, kind 5930 (:mod:`dspy_pylon.sandbox.wire`).

Subscribes to job requests, honours ``p`` targeting, claims each job once (SQLite), sends
``processing`` feedback (for a job still running after a moment), runs the chat on the local
backend and publishes the result with ``request``, ``e``, ``p``, ``i``, ``amount``, ``model``
and ``usage`` tags — or ``error`` feedback saying why not. Both kinds share the job
lifecycle: claim once, judge and price before any invoice, payment before the work,
cancellation, restart recovery. A bounded queue and a worker pool
(a TaskGroup in :meth:`~ProviderNode.serve`) give back-pressure; after
:meth:`~ProviderNode.request_stop`, serve finishes the jobs in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dspy import lm15

from dspy_pylon import capabilities as caps_mod
from dspy_pylon.config import Local
from dspy_pylon.errors import ConfigError, MalformedEvent, PylonError, ResultTooLarge, SandboxRefused
from dspy_pylon.local.backends import LocalRouter, public_model_name
from dspy_pylon.nostr.events import RawEvent
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import DELETION_KIND, TEXT_GENERATION, JobRequest, JobResult
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.ledger import Earned, SpendLedger
from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.route import Route
from dspy_pylon.sandbox.executor import SandboxExecutor
from dspy_pylon.sandbox.wire import SANDBOX_REQUEST_KIND, sandbox_result, shrinking
from dspy_pylon.swarm import admission
from dspy_pylon.swarm.cancellations import CANCELLED, Cancellations
from dspy_pylon.swarm.chat_job import job_result, parse_job
from dspy_pylon.swarm.invoice_pool import InvoicePool
from dspy_pylon.swarm.jobs_db import JobsDB, JobStatus
from dspy_pylon.swarm.provider_announcement import node_announcement, sandbox_announcement
from dspy_pylon.swarm.provider_billing import ProviderBilling
from dspy_pylon.swarm.provider_replies import Replies
from dspy_pylon.swarm.provider_settings import ProviderSettings, load_provider_file
from dspy_pylon.swarm.sandbox_service import SandboxService

__all__ = ["ProviderNode", "ProviderSettings", "ProviderStats", "load_provider_file"]

log = logging.getLogger("dspy_pylon.provider")

# Job ids remembered to drop a relay's duplicate without asking SQLite.
_SEEN_LIMIT = 10_000


@dataclass(frozen=True)
class _Answer:
    """A job's result, built and signed, ready to publish."""

    result: JobResult
    event: Any


# What running a job came to: its answer, the reason to refuse it, or None (cancelled meanwhile).
_Outcome = _Answer | str | None


@dataclass
class ProviderStats:
    """What a node did since it started."""

    received: int = 0
    done: int = 0
    errors: int = 0
    ignored: Counter[str] = field(default_factory=Counter)


class ProviderNode:
    """A NIP-90 provider. Create, then ``await start()`` and ``await serve()`` on one event loop."""

    def __init__(
        self,
        keys: Any,
        settings: ProviderSettings,
        router: LocalRouter | None = None,
        wallet: NwcWallet | None = None,
        *,
        sandbox_executor: SandboxExecutor | None = None,
    ) -> None:
        if settings.priced and wallet is None:
            raise ConfigError(
                "a priced provider needs a wallet to invoice through: set PYLON_NWC_URI or write an NWC URI to "
                "$PYLON_HOME/nwc.uri (chmod 600)"
            )
        self.keys = keys
        self.wallet = wallet
        self.pubkey = keys.public_key().to_hex()
        self.settings = settings
        self.router = router or LocalRouter(
            Local(backend=settings.backend, embedded_fallback=False), None, settings.timeout, settings.backend_url
        )
        self.jobs = JobsDB(settings.state_dir / "provider-jobs.sqlite")
        self.ledger = SpendLedger(settings.state_dir / "ledger.sqlite")
        self.replies = Replies(
            keys, self.jobs, self.ledger, lambda: self._count(error=True), self._spawn, settings.allow_local_relays
        )
        self.invoices: InvoicePool | None = None
        self.billing: ProviderBilling | None = None
        if wallet is not None:
            self.invoices = InvoicePool(wallet, settings.invoice_pool, settings.invoice_expiry_s)
            self.billing = ProviderBilling(wallet, self.invoices, self.ledger, self.jobs, self)
        # Jobs seen lately (one arriving from every relay is claimed only once), and cancelled.
        self.cancellations = Cancellations(_SEEN_LIMIT)
        self.serving: admission.Serving | None = None
        self.sandbox: SandboxService | None = None
        if settings.sandbox is not None:
            self.sandbox = SandboxService.of(
                settings.sandbox,
                max_unpaid=settings.max_unpaid,
                concurrency=settings.sandbox_concurrency,
                executor=sandbox_executor,
            )
        self.stats = ProviderStats()
        self.models: list[str] = []
        # What the served backend honours (schemas, tools), as announced.
        self.capabilities = caps_mod.Capabilities()
        self._route: Route | None = None
        self._client: RelayClient | None = None
        self._queue: asyncio.Queue[JobRequest] = asyncio.Queue(settings.queue_limit)
        # Sandbox jobs (up to minutes each) have workers of their own: they never hold up inference.
        self._sandbox_queue: asyncio.Queue[JobRequest] = asyncio.Queue(settings.queue_limit)
        # Billed jobs worked on before their payment, at most as many as the workers (counted
        # when the work is started, so a burst of bills cannot start more).
        self._ahead = 0
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._handled = 0
        self._done = asyncio.Event()
        self._once: int | None = None
        self._accepting = False

    @property
    def handled(self) -> int:
        """Jobs answered so far (results and error feedback)."""
        return self._handled

    async def start(self) -> None:
        """Resolve the local backend, connect to relays, subscribe, announce. A start that fails
        releases what it took; a started node is released by :meth:`serve` or :meth:`close`."""
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        import nostr_sdk

        if self.sandbox is not None:  # a host that cannot isolate jobs does not offer to run them
            await asyncio.to_thread(self.sandbox.executor.probe)
        self._route = (await asyncio.to_thread(self.router.resolve))[0]
        self.models = await asyncio.to_thread(self.router.served_models)
        self.capabilities = await asyncio.to_thread(self.router.capabilities, self._route)
        self._client = self.replies.client = await RelayClient(self.settings.relays).start()
        if self.wallet is not None:
            await self.wallet.start_listening()
        # Only jobs from now on: stored requests were meant for whoever was online then.
        since = nostr_sdk.Timestamp.now()
        kinds = self.job_kinds
        await self._client.subscribe(
            [nostr_sdk.Filter().kinds([nostr_sdk.Kind(k) for k in kinds]).since(since)], self._on_request, self._for_us
        )
        # Cancellations of our kinds' jobs (NIP-09 deletions naming the kind, as NIP-90 says).
        deletions = nostr_sdk.Filter().kind(nostr_sdk.Kind(DELETION_KIND)).since(since)
        k = nostr_sdk.SingleLetterTag.from_byte(ord("k"))
        await self._client.subscribe([deletions.custom_tags(k, [str(k) for k in kinds])], self._on_deletion)
        self.serving = admission.Serving.of(self.settings, self._route, self.models, self.capabilities)
        self._accepting = True
        if self.invoices is not None:
            self.invoices.fill({self.settings.price_msats, *self.settings.prices.values()})
        if self.wallet is not None:
            assert self.billing is not None
            resumed = await self.billing.resume(self._client, self.keys)
            if resumed:
                log.info("waiting again for %d invoices sent before the restart", resumed)
        if self.settings.announce:
            await self.announce()
        what = f"{self._route.backend} ({self._route.model}) on {', '.join(self.settings.relays)}"
        log.info("provider %s serving kinds %s with %s", self.pubkey[:12], kinds, what)

    @property
    def job_kinds(self) -> tuple[int, ...]:
        """The job request kinds this node serves."""
        return (TEXT_GENERATION, SANDBOX_REQUEST_KIND) if self.sandbox is not None else (TEXT_GENERATION,)

    def announcement(self) -> Announcement:
        """This node's NIP-89 announcement of text generation."""
        return node_announcement(self.settings, self.models, self.capabilities)

    def announcements(self) -> list[Announcement]:
        """Every NIP-89 announcement of this node: text generation, and sandboxed execution if sold."""
        made = [self.announcement()]
        if self.settings.sandbox is not None:
            made.append(sandbox_announcement(self.settings, self.settings.sandbox))
        return made

    async def announce(self) -> None:
        """Publish the NIP-89 announcements (kind 31990)."""
        assert self._client is not None
        for announcement in self.announcements():
            await self._client.publish(announcement.to_event(self.keys))

    def _service(self, job: JobRequest) -> admission.JobService:
        if job.kind == SANDBOX_REQUEST_KIND and self.sandbox is not None:
            return self.sandbox
        assert self.serving is not None
        return self.serving

    # ─── intake: cheap checks in the routing callback, the rest in a task off it ───

    def _for_us(self, event: RawEvent) -> bool:
        """Whether a job request is ours to look at (before its signature is checked): broadcast,
        or naming this node."""
        self.stats.received += 1
        named = event.tags_named("p")
        if named and not any(len(tag) > 1 and tag[1] == self.pubkey for tag in named):
            self.stats.ignored["targets another provider"] += 1
            return False
        return True

    def _on_request(self, event: RawEvent, relay: str) -> None:
        targeted = bool(event.tags_named("p"))  # naming us: _for_us dropped the others
        if not self._accepting:
            self.stats.ignored["shutting down"] += 1
            return
        if not self.cancellations.first_sight(event.id, event.pubkey):
            self.stats.ignored["duplicate"] += 1
            return
        self._spawn(self._admit(event, targeted))

    def _on_deletion(self, event: RawEvent, relay: str) -> None:
        for job_id in self.cancellations.cancel_from(event):
            self.stats.ignored[CANCELLED] += 1
            if self.billing is not None:
                self.billing.cancel_job(job_id)

    async def _drop_cancelled(self, job_id: str) -> None:
        await self.jobs.run(self.jobs.move, job_id, JobStatus.REFUSED, CANCELLED)

    async def _claim(self, job_id: str, customer: str, kind: int) -> bool:
        return await self.jobs.run(self.jobs.claim, job_id, customer, kind)

    async def _admit(self, event: RawEvent, targeted: bool) -> None:
        """Claim the job (once, durably), then refuse, bill or queue it as :func:`admission.admit` says."""
        assert self.serving is not None
        try:
            job = JobRequest.from_event(event, self.keys)
        except MalformedEvent as exc:
            self.stats.ignored["malformed"] += 1
            if targeted and await self._claim(event.id, event.pubkey, event.kind):
                # Refused in the clear: for an encrypted request the reason must not quote what it hides.
                why = "its encrypted content is not a job" if event.tag("encrypted") is not None else str(exc)
                await self.replies.refuse(event.id, event.pubkey, f"malformed request: {why}")
            return
        if not await self._claim(job.id, job.customer, job.kind):
            self.stats.ignored["duplicate"] += 1
            return
        if not self._accepting:  # the node began to stop while the claim was written: no bill, no queue
            await self.replies.refuse_job(job, "provider stopping: try another provider")
            return
        if self.cancellations.cancelled(job.id):
            await self._drop_cancelled(job.id)
            return
        unpaid = self.billing.unpaid if self.billing is not None else 0
        decision = admission.admit(job, self._service(job), unpaid=unpaid)
        if isinstance(decision, admission.Refuse):
            if self.sandbox is not None:
                self.sandbox.forget(job.id)
            await self.replies.refuse_job(job, decision.why)
        elif isinstance(decision, admission.Bill):
            assert self.billing is not None  # a priced node has a wallet (checked at construction)
            self.billing.bill(job, decision.price_msats)
        else:
            try:
                self._queue_for(job).put_nowait(job)
            except asyncio.QueueFull:
                await self.replies.refuse_job(job, "provider busy: queue full, try another provider")

    def _spawn(self, coro: Any) -> None:
        self.finish_before_stopping(asyncio.get_running_loop().create_task(coro))

    def finish_before_stopping(self, task: asyncio.Task[Any]) -> None:
        """Let ``task`` finish before the node stops (a stop waits for it, never cancels it)."""
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    # ─── work ───

    def _queue_for(self, job: JobRequest) -> asyncio.Queue[JobRequest]:
        return self._sandbox_queue if job.kind == SANDBOX_REQUEST_KIND else self._queue

    async def _work(self, queue: asyncio.Queue[JobRequest]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._run(job)
            except Exception:  # a supervisor: one job's bug must not stop this worker for good
                log.exception("job %s failed inside the node", job.id[:12])
                try:
                    await self.replies.refuse_job(job, "the provider failed on this job (internal error)")
                except Exception:  # e.g. the jobs database is gone: nothing more to tell anyone
                    log.exception("job %s could not be closed", job.id[:12])
            finally:
                queue.task_done()

    async def _run(self, job: JobRequest) -> None:
        price = self._service(job).price_for(job)
        paid = price > 0  # a paid job runs even if cancelled: it was paid for
        if self.cancellations.cancelled(job.id) and not paid:
            await self._drop_cancelled(job.id)
            return
        await self._close(job, await self._answer(job, price, paid=paid), paid)

    async def _answer(self, job: JobRequest, price: int, *, paid: bool, ahead: bool = False) -> _Outcome:
        """Run ``job`` on the backend: its result signed and ready to publish, the reason to
        refuse it, or None when its customer cancelled it meanwhile. ``ahead``: work started
        before the payment (no ``processing`` feedback: the bill is what the customer sees)."""
        if job.kind == SANDBOX_REQUEST_KIND:
            return await self._answer_sandbox(job, price, paid=paid, ahead=ahead)
        assert self._route is not None and self.serving is not None
        # Checked in full at intake (before any invoice); a job read back after a restart was
        # checked then too, and the codec still refuses what a changed backend cannot honour.
        try:
            request, form = parse_job(job, self.serving.max_tokens_cap, self.serving.default_max_tokens)
            route = Route(self._route.venue, self._route.backend, self._route.base_url, self.serving.model_for(job))
        except (MalformedEvent, PylonError) as exc:
            return str(exc)
        status = None if ahead else self._processing_later(job)
        try:
            # Probing (after a failure) blocks on HTTP: a worker thread then, never the loop.
            resolved = self.router.cached()
            if resolved is None:
                resolved = await asyncio.to_thread(self.router.resolve)
            inference = asyncio.ensure_future(resolved[1].acomplete(request, route, self.capabilities))
            with contextlib.nullcontext() if paid else self.cancellations.running(job.id, inference):
                if self.cancellations.cancelled(job.id) and not paid:  # cancelled while the route resolved
                    inference.cancel()
                response = await inference
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise  # the worker (or the work ahead) itself is stopped
            return None  # its customer cancelled it mid-inference
        except (PylonError, lm15.LM15Error) as exc:
            self.router.invalidate()
            log.info("job %s: inference failed: %s", job.id[:12], exc)
            return admission.inference_failure(exc)
        finally:
            if status is not None:
                status.cancel()  # answered (or failed) before the feedback was due: the result says it all
        result = job_result(job, response, form, public_model_name(route.model), price)
        event = result.to_event(self.keys)
        size = len(event.as_json().encode())
        if size > self.settings.max_result_bytes:
            return f"result too large: {size} bytes, relays take {self.settings.max_result_bytes}"
        return _Answer(result, event)

    async def _answer_sandbox(self, job: JobRequest, price: int, *, paid: bool, ahead: bool) -> _Outcome:
        """Run a sandbox job in the isolated executor (a worker thread); the same outcomes as
        inference: an answer, a reason to refuse, or None when a free job was cancelled."""
        assert self.sandbox is not None
        try:
            self.sandbox.request(job)
        except MalformedEvent as exc:
            return str(exc)
        status = None if ahead else self._processing_later(job)
        run = asyncio.ensure_future(self.sandbox.run(job, self.pubkey))
        try:
            with contextlib.nullcontext() if paid else self.cancellations.running(job.id, run):
                if self.cancellations.cancelled(job.id) and not paid:
                    run.cancel()
                response = await run
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise
            return None
        except SandboxRefused as exc:
            return f"this node cannot run the job as asked: {exc}"
        finally:
            if status is not None:
                status.cancel()
        # Relays cap events: the first version of the response whose signed (encrypted) event fits.
        size = 0
        for candidate in shrinking(response):
            result = sandbox_result(job, candidate, price)
            try:
                event = result.to_event(self.keys)
            except MalformedEvent:  # too long to encrypt (NIP-44's 64 KiB): a smaller one then
                continue
            size = len(event.as_json().encode())
            if size <= self.settings.max_result_bytes:
                return _Answer(result, event)
        return f"result too large: {size} bytes even without previews, relays take {self.settings.max_result_bytes}"

    def _processing_later(self, job: JobRequest) -> asyncio.TimerHandle | None:
        """Send ``processing`` feedback on ``job`` once it has run for the configured delay (at once
        for 0); the handle cancels it. Never awaited: inference need not wait for a relay's OK."""

        def send() -> None:
            self._spawn(self.replies.feedback(job, "processing", content="Working on it."))

        delay = self.settings.processing_feedback_after_s
        if delay <= 0:
            send()
            return None
        return asyncio.get_running_loop().call_later(delay, send)

    async def _close(self, job: JobRequest, outcome: _Outcome, paid: bool) -> None:
        """Publish ``job``'s answer (and book it), or refuse or drop the job as ``outcome`` says."""
        assert self._client is not None
        if self.sandbox is not None:
            self.sandbox.forget(job.id)
        if outcome is None:
            await self._drop_cancelled(job.id)
            return
        if isinstance(outcome, str):
            await self.replies.refuse_job(job, outcome)
            return
        try:
            await self._client.publish(outcome.event)
        except ResultTooLarge as exc:
            await self.replies.refuse_job(job, f"result too large for the relays: {exc}")
            return
        except PylonError as exc:
            log.warning("could not publish the result of job %s: %s", job.id[:12], exc)
            await self.jobs.run(self.jobs.move, job.id, JobStatus.ERROR, str(exc))
            self._count(error=True)
            return
        self.replies.also_where_asked(outcome.event, job)
        await self.jobs.run(self.jobs.move, job.id, JobStatus.DONE)
        if paid:
            await self.ledger.run(
                self.ledger.earning_finished,
                job.id,
                Earned.DONE,
                prompt_tokens=outcome.result.prompt_tokens or 0,
                completion_tokens=outcome.result.completion_tokens or 0,
            )
        self._count(error=False)

    def work_ahead(self, job: JobRequest, price: int) -> asyncio.Task[_Outcome] | None:
        """Start a billed job's inference before its payment, when the settings allow it and
        fewer than ``concurrency`` such jobs run; the caller publishes the answer once paid (or
        cancels it)."""
        if not self.settings.work_before_payment or self._ahead >= max(1, self.settings.concurrency):
            return None
        self._ahead += 1
        task = asyncio.get_running_loop().create_task(self._answer(job, price, paid=True, ahead=True))
        task.add_done_callback(self._ahead_done)
        self.finish_before_stopping(task)
        return task

    def _ahead_done(self, _: asyncio.Task[_Outcome]) -> None:
        self._ahead -= 1

    async def run_paid(self, job: JobRequest, ahead: asyncio.Task[_Outcome] | None = None) -> None:
        """Publish a paid job's answer worked out ahead; else queue the job (paid work is never
        turned away, so this waits for a slot). Work ahead that failed is done again here."""
        if ahead is not None:
            try:
                outcome = await ahead
            except Exception:  # a bug in the work ahead: the job is run again by a worker
                log.exception("job %s: the work started before payment failed", job.id[:12])
                outcome = None
            if isinstance(outcome, str) and job.kind == SANDBOX_REQUEST_KIND:
                # A sandbox job that ran ahead and cannot be answered is not run twice (its
                # commands may have effects): its customer is told why.
                await self._close(job, outcome, paid=True)
                return
            if isinstance(outcome, _Answer):
                try:
                    await self._close(job, outcome, paid=True)
                except Exception:  # as a worker's supervisor would: the paid job is told, not lost
                    log.exception("job %s: publishing the paid answer failed", job.id[:12])
                    await self.replies.refuse_job(job, "the provider failed on this job (internal error)")
                return
        await self._queue_for(job).put(job)

    def _count(self, *, error: bool) -> None:
        if error:
            self.stats.errors += 1
        else:
            self.stats.done += 1
        self._handled += 1
        if self._once is not None and self._handled >= self._once:
            self._done.set()

    # ─── lifecycle ───

    async def serve(self, once: int | None = None) -> int:
        """Run the workers (a TaskGroup: none outlives this call) until :meth:`request_stop` or,
        with ``once``, that many answered jobs; then finish the jobs queued and in flight, and
        disconnect. Call after :meth:`start`."""
        self._once = once
        if once is not None and self._handled >= once:
            self._done.set()
        try:
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._work(self._queue)) for _ in range(max(1, self.settings.concurrency))]
                if self.sandbox is not None:
                    count = max(1, self.settings.sandbox_concurrency)
                    workers += [group.create_task(self._work(self._sandbox_queue)) for _ in range(count)]
                await self._done.wait()
                await self._drain()
                for worker in workers:
                    worker.cancel()
        finally:
            await self.close()
        return self._handled

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (thread-unsafe; call on the node's loop)."""
        self._done.set()

    async def _drain(self, grace: float | None = None) -> None:
        """Stop taking jobs; let those queued and in flight finish (up to ``grace`` s each wait:
        30 s, or a sandbox job's longest time limit and a margin when the node sells them)."""
        if grace is None:
            longest = (
                max((p.resources.timeout_secs for p in self.settings.sandbox.profiles), default=0)
                if (self.settings.sandbox is not None)
                else 0
            )
            grace = max(30.0, longest + 30.0)
        self._accepting = False
        # Jobs still waiting for their invoice stay 'invoiced': the next start waits for them again.
        await self._stop_billing()
        try:
            if self._in_flight:  # jobs being admitted may still join the queue
                await asyncio.wait(list(self._in_flight), timeout=grace)
            await asyncio.wait_for(self._queue.join(), grace)
            await asyncio.wait_for(self._sandbox_queue.join(), grace)
            if self._in_flight:
                await asyncio.wait(list(self._in_flight), timeout=grace)
        except TimeoutError:
            log.warning("stopping with %d jobs unfinished", self._queue.qsize() + self._sandbox_queue.qsize())

    async def _stop_billing(self) -> None:
        if self.billing is not None:
            await self.billing.stop()
        if self.invoices is not None:
            await self.invoices.close()

    async def _cancel_in_flight(self) -> None:
        left = [task for task in self._in_flight if not task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)

    async def close(self) -> None:
        """Release the relay connections, stores and wallet (what :meth:`serve` does when it
        returns): for a node started and then not served. Idempotent."""
        self._accepting = False
        # After a drain nothing is left; after a cancelled serve no task may outlive the client:
        # admissions, then billing waits (a wait paid meanwhile joins the tasks in flight), then those.
        await self._cancel_in_flight()
        await self._stop_billing()
        await self._cancel_in_flight()
        client, self._client = self._client, None
        self.replies.client = None
        try:
            if client is not None:
                await client.close()
        finally:
            if self.sandbox is not None:
                self.sandbox.close()
            try:
                self.jobs.close()
                self.ledger.close()
            finally:
                if self.wallet is not None:
                    await self.wallet.close()
