"""A provider's billing: invoice a job, wait for its payment, then hand it to the workers.

Survives restarts: invoices sent before a stop are waited for again at the next start
(the job is read back from the relays). Every ledger and jobs-database call runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from dspy_pylon.errors import MalformedEvent, PylonError, WalletError
from dspy_pylon.nostr.nip90 import JobRequest
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay.invoice import Invoice, decode_invoice
from dspy_pylon.pay.ledger import Earned, SpendLedger
from dspy_pylon.pay.nwc import InvoiceStatus, MadeInvoice, NwcWallet
from dspy_pylon.swarm.cancellations import CANCELLED
from dspy_pylon.swarm.invoice_pool import InvoicePool
from dspy_pylon.swarm.jobs_db import JobsDB, JobStatus
from dspy_pylon.swarm.provider_replies import Replies

log = logging.getLogger("dspy_pylon.provider")


class Node(Protocol):
    """What billing needs from its node: to talk to the customer and to run a paid job."""

    replies: Replies

    async def run_paid(self, job: JobRequest, ahead: asyncio.Task[Any] | None = None) -> None: ...

    def work_ahead(self, job: JobRequest, price: int) -> asyncio.Task[Any] | None: ...

    def finish_before_stopping(self, task: asyncio.Task[Any]) -> None: ...


class ProviderBilling:
    """Invoices in flight for one node, each a task on the node's loop."""

    def __init__(self, wallet: NwcWallet, invoices: InvoicePool, ledger: SpendLedger, jobs: JobsDB, node: Node) -> None:
        self.wallet = wallet
        self.invoices = invoices
        self.ledger = ledger
        self.jobs = jobs
        self.node = node
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_job: dict[str, tuple[asyncio.Task[None], JobRequest]] = {}

    @property
    def unpaid(self) -> int:
        """Invoices sent and not yet paid or expired."""
        return len(self._tasks)

    def bill(self, job: JobRequest, price: int) -> None:
        """Invoice ``job`` for ``price`` msats and run it once paid (in the background)."""
        self._track(job, self._bill(job, price))

    def _track(self, job: JobRequest, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self._by_job[job.id] = (task, job)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._by_job.pop(job.id, None))

    def cancel_job(self, job_id: str) -> None:
        """Its customer cancelled ``job_id``: stop waiting for its payment and close it. A job
        already paid (its wait ended) is not touched: it runs."""
        tracked = self._by_job.get(job_id)
        if tracked is None or tracked[0] not in self._tasks:
            return
        tracked[0].cancel()
        closing = asyncio.get_running_loop().create_task(self._close_cancelled(tracked[1]))
        self.node.finish_before_stopping(closing)

    async def _close_cancelled(self, job: JobRequest) -> None:
        """Close a cancelled job's bill - unless the invoice was paid before the cancellation
        (a customer may pay and then give up waiting): then the job runs, as paid jobs do."""
        entry = await self.ledger.run(self.ledger.entry, job.id, "earned")
        if entry is not None and entry.payment_hash:
            try:
                status = await self.wallet.lookup_invoice(entry.payment_hash)
            except WalletError as exc:  # cannot tell now: left invoiced, the next start looks again
                log.info("job %s cancelled; its invoice lookup failed (%s): left invoiced", job.id[:12], exc)
                return
            if status.settled:
                await self._paid(job, status.preimage)
                return
        await self.ledger.run(self.ledger.earning_finished, job.id, Earned.FAILED, CANCELLED)
        await self.jobs.run(self.jobs.move, job.id, JobStatus.REFUSED, CANCELLED)

    async def stop(self) -> None:
        """Stop waiting (the node stops): the jobs stay ``invoiced`` and the next start resumes
        them. Returns once every wait has ended, so none outlives the node's relay client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _bill(self, job: JobRequest, price: int) -> None:
        """Invoice the job, wait until it is paid (or the invoice expires), then run it - or,
        when the node works ahead, publish what it worked out meanwhile."""
        ahead = self.node.work_ahead(job, price)
        try:
            try:
                invoice = await self.invoices.take(price, job.id)
            except (WalletError, MalformedEvent) as exc:
                await self.node.replies.refuse_job(job, f"could not create an invoice: {exc}")
                return
            await self.ledger.run(self._record_bill, job, price, invoice)
            await self.node.replies.feedback(
                job,
                "payment-required",
                amount_msats=price,
                bolt11=invoice.bolt11,
                content="Pay the invoice to run this job.",
            )
            await self._await_payment(job, invoice.payment_hash, invoice.expires_at, ahead)
            ahead = None  # handed over with the payment (or the wait ended unpaid: dropped below)
        finally:
            if ahead is not None:  # never paid (expired, cancelled, refused, the node stopping)
                ahead.cancel()

    async def _await_payment(
        self, job: JobRequest, payment_hash: str, expires_at: float, ahead: asyncio.Task[Any] | None = None
    ) -> None:
        """Wait for the invoice of ``job`` to be paid, then run the job; drop it if it expires.

        Cancelled when the node stops: the job stays ``invoiced`` and the next start resumes it.
        """
        status = await self.wallet.wait_settled(payment_hash, expires_at)
        if status is None:
            if ahead is not None:
                ahead.cancel()
            await self.ledger.run(self.ledger.earning_finished, job.id, Earned.EXPIRED, "invoice expired unpaid")
            why = "invoice expired unpaid; the job was dropped"
            await self.node.replies.refuse_job(job, why, status=JobStatus.EXPIRED)
            return
        await self._paid(job, status.preimage, ahead)

    async def _paid(self, job: JobRequest, preimage: str | None, ahead: asyncio.Task[Any] | None = None) -> None:
        """Record the payment of ``job`` and run it (or publish the answer worked out ``ahead``)."""
        # Paid: the job must now run even if the node is stopping. Out of the waits a stop
        # cancels (and of the unpaid count), into the work the node drains before it stops.
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
            self.node.finish_before_stopping(task)
        await self.ledger.run(self._record_payment, job.id, preimage)
        await self.node.run_paid(job, ahead)

    # Blocking (SQLite), run in a worker thread; one hop each on the customer's critical path.

    def _record_bill(self, job: JobRequest, price: int, invoice: MadeInvoice) -> None:
        """The invoice is recorded before the customer can see it (and pay it)."""
        self.ledger.record_invoice(
            job.id,
            customer=job.customer,
            model=job.param("model") or "",
            bid_msats=job.bid_msats or 0,
            invoice_msats=price,
            bolt11=invoice.bolt11,
            payment_hash=invoice.payment_hash,
        )
        self.jobs.move(job.id, JobStatus.AWAITING_PAYMENT)

    def _record_payment(self, job_id: str, preimage: str | None) -> None:
        self.ledger.earning_settled(job_id, preimage=preimage)
        self.jobs.move(job_id, JobStatus.RUNNING)

    async def resume(self, client: RelayClient, keys: Any) -> int:
        """After a restart: wait again for invoices sent before it; returns how many were resumed.

        The job itself is read back from the relays (the request event is stored there). An
        invoice that expired while the node was stopped is looked up first: paid then, its
        job runs; unpaid, it is closed. What cannot be known now - the wallet does not answer
        the lookup, or no relay is reachable to read the job back - stays invoiced for the
        next start rather than being given up.
        """
        waiting = await self.ledger.run(self._invoiced)
        open_: list[tuple[str, Invoice, InvoiceStatus | None]] = []
        for job_id, invoice in waiting:
            still, paid = await self._check_expired(job_id, invoice)
            if still:
                open_.append((job_id, invoice, paid))
        # Paid before the stop (or crash) and never answered: the customer paid, so it runs now.
        unanswered = await self.ledger.run(self._paid_unanswered)
        if not open_ and not unanswered:
            return 0
        jobs, reached = await self._read_back(client, keys, [job_id for job_id, _, _ in open_] + unanswered)
        resumed = 0
        for job_id in unanswered:
            job = jobs.get(job_id)
            if job is None:
                if reached:
                    why = "paid, but the job request is no longer on the relays"
                    await self.ledger.run(self.ledger.earning_finished, job_id, Earned.FAILED, why)
                    await self.jobs.run(self.jobs.move, job_id, JobStatus.REFUSED, why)
                continue
            self._track(job, self._paid(job, None))
            resumed += 1
        for job_id, invoice, paid in open_:
            job = jobs.get(job_id)
            if job is None:
                if reached:  # read back from a relay that answered: the request is gone
                    why = "the job request is no longer on the relays"
                    why = f"paid, but {why}" if paid else why
                    await self.ledger.run(self.ledger.earning_finished, job_id, Earned.FAILED, why)
                    await self.jobs.run(self.jobs.move, job_id, JobStatus.REFUSED, why)
                continue
            if paid is not None:
                self._track(job, self._paid(job, paid.preimage))
            else:
                self._track(job, self._await_payment(job, invoice.payment_hash, invoice.expires_at))
            resumed += 1
        if len(open_) > resumed and not reached:
            log.warning("no relay reachable: jobs invoiced before the restart wait for the next start")
        return resumed

    async def _check_expired(self, job_id: str, invoice: Invoice) -> tuple[bool, InvoiceStatus | None]:
        """Whether the job is still open, and, for an invoice that expired, its paid status.

        An expired invoice is looked up: paid, the job is open with that status; unpaid, it
        is closed here; when the wallet cannot tell now, it is left invoiced (not open).
        """
        if not invoice.expired(time.time()):
            return True, None
        try:
            status = await self.wallet.lookup_invoice(invoice.payment_hash)
        except WalletError as exc:
            log.info("invoice of job %s expired; its lookup failed (%s): left for the next start", job_id[:12], exc)
            return False, None
        if status.settled:
            return True, status
        why = "invoice expired unpaid (while stopped)"
        await self.ledger.run(self.ledger.earning_finished, job_id, Earned.EXPIRED, why)
        await self.jobs.run(self.jobs.move, job_id, JobStatus.EXPIRED, why)
        return False, None

    async def _read_back(self, client: RelayClient, keys: Any, ids: list[str]) -> tuple[dict[str, JobRequest], bool]:
        """The job requests ``ids`` from the relays (one query), and whether any relay was reached."""
        import nostr_sdk

        jobs: dict[str, JobRequest] = {}
        try:
            reached = bool(await client.connected_relays())
            for raw in await client.fetch([nostr_sdk.Filter().ids([nostr_sdk.EventId.parse(i) for i in ids])], 3.0):
                try:
                    jobs[raw.id] = JobRequest.from_event(raw, keys)
                except MalformedEvent as exc:
                    log.info("job %s cannot be read back: %s", raw.id[:12], exc)
        except (PylonError, ValueError) as exc:
            log.info("jobs sent invoices before the restart cannot be read back: %s", exc)
            return {}, False
        return jobs, reached

    def _paid_unanswered(self) -> list[str]:
        """Jobs paid before a restart whose answer never went out (blocking: a thread)."""
        return [entry.job_id for entry in self.ledger.entries("earned", Earned.PAID)]

    def _invoiced(self) -> list[tuple[str, Invoice]]:
        """Invoices sent before a restart, decoded; closes the unreadable ones (blocking: a thread)."""
        waiting: list[tuple[str, Invoice]] = []
        for entry in self.ledger.entries("earned", Earned.INVOICED):
            try:
                invoice = decode_invoice(entry.bolt11 or "")
            except MalformedEvent as exc:
                self.ledger.earning_finished(entry.job_id, Earned.FAILED, f"unreadable invoice: {exc}")
                continue
            waiting.append((entry.job_id, invoice))
        return waiting
