"""The provider node: serves NIP-90 text-generation jobs from relays with a local backend.

Subscribes to job requests, honours ``p`` targeting, claims each job once (SQLite), sends
``processing`` feedback, runs the chat on the local backend and publishes the result with
``request``, ``e``, ``p``, ``i``, ``amount``, ``model`` and ``usage`` tags — or ``error``
feedback saying why not. A bounded queue and a fixed worker pool give back-pressure;
:meth:`ProviderNode.stop` finishes the jobs in flight before returning.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy import lm15

from dspy_pylon import capabilities as caps_mod
from dspy_pylon.config import BackendName, Local
from dspy_pylon.errors import ConfigError, MalformedEvent, PylonError, ResultTooLarge, WalletError
from dspy_pylon.local import openai_chat
from dspy_pylon.local.backends import LocalRouter, match_model
from dspy_pylon.nostr.events import RawEvent
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import TEXT_GENERATION, JobFeedback, JobRequest, JobResult
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.pay import pricing
from dspy_pylon.pay.invoice import invoice_description
from dspy_pylon.pay.ledger import Earned, SpendLedger
from dspy_pylon.pay.nwc import MadeInvoice, NwcWallet
from dspy_pylon.route import Route
from dspy_pylon.swarm.chat_job import FORMATS, parse_job, result_content
from dspy_pylon.swarm.jobs_db import JobsDB

log = logging.getLogger("dspy_pylon.provider")


@dataclass(frozen=True)
class ProviderSettings:
    """How a provider node runs. ``price_msats`` 0 serves for free."""

    relays: tuple[str, ...]
    state_dir: Path
    backend: BackendName = "auto"
    backend_url: str | None = None
    name: str = "pylon provider"
    about: str = "DSPy-ready local inference (dspy-pylon)"
    price_msats: int = 0
    concurrency: int = 2
    queue_limit: int = 64
    timeout: float = 120.0
    max_tokens_cap: int = 4096
    # Many relays refuse events over 64 KiB (nostr-sdk's embedded relay does); a result
    # that cannot be delivered becomes error feedback at once instead of a silent timeout.
    max_result_bytes: int = 65_536
    announce: bool = True
    identifier: str = "pylon-5050"
    # Per-model prices (msats) overriding ``price_msats`` for jobs that ask for that model.
    prices: dict[str, int] = field(default_factory=dict)
    # How long a customer has to pay an invoice before the job is dropped.
    invoice_expiry_s: int = 300
    # Invoices awaiting payment at once; beyond, jobs get "busy" (unpaid jobs cost the wallet work).
    max_unpaid: int = 256
    # Invoices made ahead per price, so a job's bill goes out without a wallet round trip first
    # (0 = make each invoice when its job arrives, named after the job).
    invoice_pool: int = 4

    def __post_init__(self) -> None:
        for name, value in (("price_msats", self.price_msats), *self.prices.items()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"price for {name!r} must be a non-negative integer of msats, got {value!r}")
        if isinstance(self.invoice_expiry_s, bool) or not isinstance(self.invoice_expiry_s, int):
            raise ConfigError(f"invoice_expiry_s must be an integer of seconds, got {self.invoice_expiry_s!r}")
        if self.invoice_expiry_s < 1:
            raise ConfigError("invoice_expiry_s must be at least 1 second: customers need time to pay")

    @property
    def priced(self) -> bool:
        """Whether any job can cost money here."""
        return self.price_msats > 0 or any(self.prices.values())


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
        self, keys: Any, settings: ProviderSettings, router: LocalRouter | None = None, wallet: NwcWallet | None = None
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
        self._billing: set[asyncio.Task[None]] = set()
        self._pool: dict[int, collections.deque[MadeInvoice]] = {}
        self._refilling: set[int] = set()
        self._refills: set[asyncio.Task[None]] = set()
        self.stats = ProviderStats()
        self.models: list[str] = []
        # What the served backend honours (schemas, tools), as announced.
        self.capabilities = caps_mod.Capabilities()
        self._route: Route | None = None
        self._client: RelayClient | None = None
        self._queue: asyncio.Queue[JobRequest] = asyncio.Queue(settings.queue_limit)
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._handled = 0
        self._done = asyncio.Event()
        self._once: int | None = None
        self._accepting = False

    @property
    def handled(self) -> int:
        """Jobs answered so far (results and error feedback)."""
        return self._handled

    async def start(self) -> None:
        """Resolve the local backend, connect to relays, subscribe, announce."""
        import nostr_sdk

        self._route = (await asyncio.to_thread(self.router.resolve))[0]
        self.models = await asyncio.to_thread(self.router.served_models)
        self.capabilities = await asyncio.to_thread(self.router.capabilities, self._route)
        self._client = await RelayClient(self.settings.relays).start()
        if self.wallet is not None:
            await self.wallet.start_listening()
        # Only jobs from now on: stored requests were meant for whoever was online then.
        since = nostr_sdk.Timestamp.now()
        await self._client.subscribe(
            [nostr_sdk.Filter().kind(nostr_sdk.Kind(TEXT_GENERATION)).since(since)], self._on_request
        )
        self._accepting = True
        self._workers = [asyncio.create_task(self._work()) for _ in range(max(1, self.settings.concurrency))]
        if self.wallet is not None and self.settings.invoice_pool:
            for price in {self.settings.price_msats, *self.settings.prices.values()} - {0}:
                self._start_refill(price)
        if self.wallet is not None:
            resumed = await self._resume_billing()
            if resumed:
                log.info("waiting again for %d invoices sent before the restart", resumed)
        if self.settings.announce:
            await self.announce()
        log.info(
            "provider %s serving kind %d with %s (%s) on %s",
            self.pubkey[:12],
            TEXT_GENERATION,
            self._route.backend,
            self._route.model,
            ", ".join(self.settings.relays),
        )

    def announcement(self) -> Announcement:
        """This node's NIP-89 announcement."""
        return Announcement(
            identifier=self.settings.identifier,
            kinds=(TEXT_GENERATION,),
            name=self.settings.name,
            about=self.settings.about,
            models=tuple(self.models),
            price_msats=self.settings.price_msats,
            relays=self.settings.relays,
            prices=tuple(sorted(self.settings.prices.items())),
            formats=FORMATS,
            features=caps_mod.feature_names(self.capabilities),
        )

    async def announce(self) -> None:
        """Publish the NIP-89 announcement (kind 31990)."""
        assert self._client is not None
        await self._client.publish(self.announcement().to_event(self.keys))

    # ─── intake (runs in the relay client's routing task: must not block) ───

    def _on_request(self, event: RawEvent, relay: str) -> None:
        self.stats.received += 1
        targeted = any(tag[1] == self.pubkey for tag in event.tags_named("p") if len(tag) > 1)
        if event.tags_named("p") and not targeted:
            self.stats.ignored["targets another provider"] += 1
            return
        if not self._accepting:
            self.stats.ignored["shutting down"] += 1
            return
        try:
            job = JobRequest.from_event(event, self.keys)
        except MalformedEvent as exc:
            self.stats.ignored["malformed"] += 1
            if targeted and self.jobs.claim(event.id, event.pubkey, event.kind):
                self._spawn(self._refuse(event.id, event.pubkey, f"malformed request: {exc}"))
            return
        if not self.jobs.claim(job.id, job.customer, job.kind):
            self.stats.ignored["duplicate"] += 1
            return
        why = self._cannot_run(job)
        if why is not None:  # before any invoice: a job we would refuse must not be billed first
            self._spawn(self._refuse(job.id, job.customer, why))
            return
        price = self.price_for(job)
        if price and (job.bid_msats or 0) < price:
            self._spawn(self._refuse(job.id, job.customer, f"bid below price of {price} msats"))
            return
        if price:
            if len(self._billing) >= self.settings.max_unpaid:
                self._spawn(self._refuse(job.id, job.customer, "provider busy: too many unpaid invoices, try later"))
                return
            task = asyncio.get_running_loop().create_task(self._bill(job, price))
            self._billing.add(task)
            task.add_done_callback(self._billing.discard)
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._spawn(self._refuse(job.id, job.customer, "provider busy: queue full, try another provider"))

    def _cannot_run(self, job: JobRequest) -> str | None:
        """Why this node cannot run ``job`` (pure: parsing and capability checks), or None."""
        try:
            request, _form = parse_job(job, self.settings.max_tokens_cap)
            self._model_for(job)
        except (MalformedEvent, PylonError) as exc:
            return str(exc)
        # A schema or tools this backend cannot honour would come back ignored (free text
        # where JSON was asked), which a customer must never get.
        refusal = caps_mod.unmet(request, self.capabilities)
        if refusal is not None:
            return f"this provider cannot honour the job: {refusal}"
        try:  # the body the backend would get, built and serialised now: a refusal after payment costs the customer
            json.dumps(openai_chat.chat_payload(request, "check", capabilities=self.capabilities))
        except PylonError as exc:
            return f"this provider cannot honour the job: {exc}"
        except (ValueError, RecursionError):
            return "the job's transcript is nested too deeply to send to the backend"
        return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def price_for(self, job: JobRequest) -> int:
        """What ``job`` costs here (msats): the price of the model it asks for, else the default."""
        return pricing.price_for(job.param("model"), self.settings.price_msats, self.settings.prices.items())

    async def _invoice_for(self, job: JobRequest, price: int) -> MadeInvoice:
        """An invoice for ``job``: one made ahead (its binding to the job is our signed
        ``payment-required`` event) or, when the pool is empty, one named after the job."""
        assert self.wallet is not None
        pool = self._pool.setdefault(price, collections.deque())
        # Made-ahead invoices keep at least half their life for the customer to pay in.
        fresh_until = time.time() + self.settings.invoice_expiry_s / 2
        while pool and pool[0].expires_at < fresh_until:
            pool.popleft()
        invoice = pool.popleft() if pool else None
        if self.settings.invoice_pool and price not in self._refilling:
            self._start_refill(price)
        if invoice is not None:
            return invoice
        return await self.wallet.make_invoice(price, invoice_description(job.id), self.settings.invoice_expiry_s)

    def _start_refill(self, price: int) -> None:
        self._refilling.add(price)
        # Not an in-flight task: stopping cancels it instead of waiting for it.
        task = asyncio.get_running_loop().create_task(self._refill(price))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _refill(self, price: int) -> None:
        assert self.wallet is not None
        pool = self._pool.setdefault(price, collections.deque())
        try:
            while self._accepting and len(pool) < self.settings.invoice_pool:
                pool.append(
                    await self.wallet.make_invoice(price, "pylon job (made ahead)", self.settings.invoice_expiry_s)
                )
        except (WalletError, MalformedEvent) as exc:
            log.info("could not make invoices ahead: %s", exc)
        finally:
            self._refilling.discard(price)

    async def _bill(self, job: JobRequest, price: int) -> None:
        """Invoice the job, wait until it is paid (or the invoice expires), then queue it."""
        assert self.wallet is not None
        try:
            invoice = await self._invoice_for(job, price)
        except (WalletError, MalformedEvent) as exc:
            await self._refuse(job.id, job.customer, f"could not create an invoice: {exc}")
            return
        self.ledger.record_invoice(
            job.id,
            customer=job.customer,
            model=job.param("model") or "",
            bid_msats=job.bid_msats or 0,
            invoice_msats=price,
            bolt11=invoice.bolt11,
            payment_hash=invoice.payment_hash,
        )
        self.jobs.finish(job.id, "awaiting_payment")
        await self._feedback(job, "payment-required", amount_msats=price, bolt11=invoice.bolt11)
        await self._await_payment(job, invoice.payment_hash, invoice.expires_at)

    async def _await_payment(self, job: JobRequest, payment_hash: str, expires_at: float) -> None:
        """Wait for the invoice of ``job`` to be paid, then queue the job; drop it if it expires.

        Cancelled when the node stops: the job stays ``invoiced`` and the next start resumes it.
        """
        assert self.wallet is not None
        status = await self.wallet.wait_settled(payment_hash, expires_at)
        if status is None:
            self.ledger.earning_finished(job.id, Earned.EXPIRED, "invoice expired unpaid")
            await self._refuse(job.id, job.customer, "invoice expired unpaid; the job was dropped", status="expired")
            return
        self.ledger.earning_settled(job.id, preimage=status.preimage)
        self.jobs.finish(job.id, "running")
        # Paid work is never turned away: wait for a queue slot instead of answering "busy".
        await self._queue.put(job)

    async def _resume_billing(self) -> int:
        """After a restart: wait again for invoices sent before it; returns how many were resumed.

        The job itself is read back from the relays (the request event is stored there).
        """
        import nostr_sdk

        from dspy_pylon.pay.invoice import Invoice, decode_invoice

        assert self._client is not None and self.wallet is not None
        waiting: list[tuple[str, Invoice]] = []
        for entry in self.ledger.entries("earned", "invoiced"):
            try:
                invoice = decode_invoice(entry.bolt11 or "")
            except MalformedEvent as exc:
                self.ledger.earning_finished(entry.job_id, Earned.FAILED, f"unreadable invoice: {exc}")
                continue
            if invoice.expired(time.time()):
                self.ledger.earning_finished(entry.job_id, Earned.EXPIRED, "invoice expired unpaid (while stopped)")
                self.jobs.finish(entry.job_id, "expired", "invoice expired unpaid")
                continue
            waiting.append((entry.job_id, invoice))
        if not waiting:
            return 0
        jobs: dict[str, JobRequest] = {}
        try:  # one query for all of them
            ids = [nostr_sdk.EventId.parse(job_id) for job_id, _ in waiting]
            for raw in await self._client.fetch([nostr_sdk.Filter().ids(ids)], 3.0):
                try:
                    jobs[raw.id] = JobRequest.from_event(raw, self.keys)
                except MalformedEvent as exc:
                    log.info("job %s cannot be read back: %s", raw.id[:12], exc)
        except (PylonError, ValueError) as exc:
            log.info("jobs sent invoices before the restart cannot be read back: %s", exc)
        resumed = 0
        for job_id, invoice in waiting:
            job = jobs.get(job_id)
            if job is None:
                self.ledger.earning_finished(job_id, Earned.FAILED, "the job request is no longer on the relays")
                continue
            task = asyncio.get_running_loop().create_task(
                self._await_payment(job, invoice.payment_hash, invoice.expires_at)
            )
            self._billing.add(task)
            task.add_done_callback(self._billing.discard)
            resumed += 1
        return resumed

    # ─── work ───

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            except Exception:  # a supervisor: one job's bug must not stop this worker for good
                log.exception("job %s failed inside the node", job.id[:12])
                await self._refuse(job.id, job.customer, "the provider failed on this job (internal error)")
            finally:
                self._queue.task_done()

    def _model_for(self, job: JobRequest) -> str:
        assert self._route is not None
        wanted = job.param("model")
        if not wanted or wanted == "default":
            return self._route.model
        kind = "llamacpp" if self._route.backend == "embedded" else self._route.backend
        served = match_model(kind, wanted, self.models)  # type: ignore[arg-type]
        if served is None:
            raise MalformedEvent(f"model {wanted!r} is not served here; available: {', '.join(self.models)}")
        return served

    async def _run(self, job: JobRequest) -> None:
        assert self._client is not None and self._route is not None
        # Checked in full at intake (before any invoice); a job read back after a restart was
        # checked then too, and the codec still refuses what a changed backend cannot honour.
        try:
            request, form = parse_job(job, self.settings.max_tokens_cap)
            route = Route(self._route.venue, self._route.backend, self._route.base_url, self._model_for(job))
        except (MalformedEvent, PylonError) as exc:
            await self._refuse(job.id, job.customer, str(exc))
            return
        # Not awaited: inference need not wait for the relay's OK on a status message.
        self._spawn(self._feedback(job, "processing"))
        try:
            _, client = self.router.resolve()
            response = await client.acomplete(request, route, self.capabilities)
        except (PylonError, lm15.LM15Error) as exc:
            self.router.invalidate()
            await self._refuse(job.id, job.customer, f"inference failed: {exc}")
            return
        result = JobResult(
            request_id=job.id,
            customer=job.customer,
            content=result_content(response, form),
            kind=job.kind + 1000,
            request_json=None if job.encrypted else job.event_json or None,
            inputs=() if job.encrypted else job.inputs,
            amount_msats=self.price_for(job),
            encrypted=job.encrypted,
            model=route.model,
            prompt_tokens=response.usage.input_tokens or 0,
            completion_tokens=response.usage.output_tokens or 0,
            finish_reason=response.finish_reason,
        )
        event = result.to_event(self.keys)
        size = len(event.as_json().encode())
        if size > self.settings.max_result_bytes:
            limit = self.settings.max_result_bytes
            await self._refuse(job.id, job.customer, f"result too large: {size} bytes, relays take {limit}")
            return
        try:
            await self._client.publish(event)
        except ResultTooLarge as exc:
            await self._refuse(job.id, job.customer, f"result too large for the relays: {exc}")
            return
        except PylonError as exc:
            log.warning("could not publish the result of job %s: %s", job.id[:12], exc)
            self.jobs.finish(job.id, "error", str(exc))
            self._count(error=True)
            return
        self.jobs.finish(job.id, "done")
        if self.price_for(job):
            self.ledger.earning_finished(
                job.id,
                Earned.DONE,
                prompt_tokens=result.prompt_tokens or 0,
                completion_tokens=result.completion_tokens or 0,
            )
        self._count(error=False)

    async def _feedback(
        self, job: JobRequest, status: str, extra: str = "", amount_msats: int | None = None, bolt11: str | None = None
    ) -> None:
        assert self._client is not None
        feedback = JobFeedback(
            request_id=job.id,
            customer=job.customer,
            status=status,
            extra=extra,
            amount_msats=amount_msats,
            bolt11=bolt11,
        )
        try:
            await self._client.publish(feedback.to_event(self.keys), ok_timeout=2.0)
        except PylonError as exc:
            log.info("feedback %s for job %s not delivered: %s", status, job.id[:12], exc)

    async def _refuse(self, job_id: str, customer: str, why: str, status: str = "refused") -> None:
        assert self._client is not None
        log.info("job %s refused: %s", job_id[:12], why)
        feedback = JobFeedback(request_id=job_id, customer=customer, status="error", extra=why[:1000])
        try:
            await self._client.publish(feedback.to_event(self.keys), ok_timeout=2.0)
        except PylonError as exc:
            log.info("error feedback for job %s not delivered: %s", job_id[:12], exc)
        self.jobs.finish(job_id, status, why)
        if self.ledger.entry(job_id, "earned") is not None and status == "refused":
            self.ledger.earning_finished(job_id, Earned.FAILED, why)
        self._count(error=True)

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
        """Serve until :meth:`stop` (or, with ``once``, until that many jobs were answered)."""
        self._once = once
        if once is not None and self._handled >= once:
            self._done.set()
        await self._done.wait()
        await self.stop()
        return self._handled

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (thread-unsafe; call on the node's loop)."""
        self._done.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking jobs, finish those queued and in flight (up to ``grace`` s), disconnect."""
        self._accepting = False
        # Jobs still waiting for their invoice stay 'invoiced': the next start waits for them again.
        for task in [*self._billing, *self._refills]:
            task.cancel()
        try:
            await asyncio.wait_for(self._queue.join(), grace)
            if self._in_flight:
                await asyncio.wait(list(self._in_flight), timeout=grace)
        except TimeoutError:
            log.warning("stopping with %d jobs unfinished", self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.jobs.close()
        self.ledger.close()
        if self.wallet is not None:
            await self.wallet.close()


def load_provider_file(path: Path) -> dict[str, Any]:
    """Settings from a provider TOML file (``$PYLON_HOME/provider.toml``); missing file = {}.

    Keys: ``relays`` (list), ``backend``, ``name``, ``about``, ``price_msats``, ``concurrency``,
    ``queue_limit``, ``timeout``, ``max_tokens_cap``, ``announce``, ``invoice_expiry_s`` and a
    ``[prices]`` table of per-model prices in msats (``"llama3.2" = 2000``).
    """
    import tomllib

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    allowed = {f for f in ProviderSettings.__dataclass_fields__ if f not in ("state_dir", "identifier")}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "relays" in data:
        data["relays"] = tuple(data["relays"])
    if "prices" in data and not isinstance(data["prices"], dict):
        raise ConfigError(f"{path}: prices must be a table of model = msats")
    return data


async def run_provider(
    keys: Any,
    settings: ProviderSettings,
    once: int | None = None,
    on_started: Callable[[ProviderNode], None] | None = None,
    wallet: NwcWallet | None = None,
) -> ProviderNode:
    """Start a node and serve until SIGINT/SIGTERM (or ``once`` jobs); returns the stopped node."""
    import signal

    node = ProviderNode(keys, settings, wallet=wallet)
    await node.start()
    if on_started is not None:
        on_started(node)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, node.request_stop)
    await node.serve(once)
    return node
