"""Paying for swarm jobs, customer side: budget reservation, bill checks, exactly-once payment.

A :class:`Payer` belongs to one LM (shared by its copies) and opens a :class:`JobBill`
for every job before the job is published. The job's bid is reserved in the
:class:`~dspy_pylon.usage.Budget` (or :class:`BudgetExceeded` is raised, and nothing is
published). When the provider bills the job, :meth:`JobBill.handle` checks the bill
(:func:`~dspy_pylon.pay.invoice.check_bill`), writes the intent to the
:class:`~dspy_pylon.pay.ledger.SpendLedger` and only then asks the wallet to pay.
Runs on the Nostr loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dspy_pylon.errors import ConfigError, PaymentFailed, PaymentRefused, PaymentRequired, WalletError
from dspy_pylon.pay.invoice import Bill, Invoice, check_bill
from dspy_pylon.pay.ledger import SpendLedger
from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.usage import Budget, Reservation

log = logging.getLogger("dspy_pylon.pay")


@dataclass(frozen=True)
class PaymentRequest:
    """A bill waiting for the user's approval (``auto_pay`` off): what :func:`approve` callbacks see."""

    job_id: str
    provider: str
    amount_msats: int
    bolt11: str
    bid_msats: int
    model: str


#: Called (in a worker thread) when ``auto_pay`` is off; True pays, False refuses.
Approver = Callable[[PaymentRequest], bool]


class Payer:
    """Everything one LM needs to pay for jobs: wallet, ledger, budget and the payment policy."""

    def __init__(
        self,
        *,
        ledger: SpendLedger,
        budget: Budget,
        wallet: Callable[[], NwcWallet | None],
        auto_pay: bool,
        approve: Approver | None = None,
        pay_on_result: bool = True,
        global_limit_msats: int = 0,
    ) -> None:
        self.ledger = ledger
        self.global_limit_msats = global_limit_msats
        self.budget = budget
        self.auto_pay = auto_pay
        self.approve = approve
        self.pay_on_result = pay_on_result
        self._wallet_source = wallet
        self._wallet: NwcWallet | None = None
        self._recovered = False
        # Invoices this process saw paid; the ledger's unique payment hash is the durable guard.
        self.paid_hashes: set[str] = set()

    def wallet(self) -> NwcWallet:
        """The configured wallet; :class:`ConfigError` when there is none."""
        if self._wallet is None:
            self._wallet = self._wallet_source()
            if self._wallet is None:
                raise ConfigError(
                    "a provider asked to be paid but no wallet is configured: pass nwc_uri=, set PYLON_NWC_URI "
                    "or write the URI to $PYLON_HOME/nwc.uri (chmod 600)"
                )
        return self._wallet

    def open(self, job_id: str, *, providers: tuple[str, ...], bid_msats: int, model: str) -> JobBill:
        """Reserve the bid and record the job, before it is published (may raise BudgetExceeded).

        The LM's budget is checked first, then the global one in the ledger (if set).
        """
        reservation = self.budget.reserve(bid_msats)
        try:
            provider = providers[0] if len(providers) == 1 else ""
            self.ledger.open_job(
                job_id, provider=provider, model=model, bid_msats=bid_msats, global_limit_msats=self.global_limit_msats
            )
        except BaseException:
            self.budget.release(reservation)
            raise
        return JobBill(self, job_id, providers, bid_msats, model, reservation)

    async def recover(self) -> int:
        """Resolve jobs a crash left ``paying`` by asking the wallet; returns how many were resolved.

        Never pays: a job whose payment did not go through is marked ``payment_failed``.
        """
        stuck = self.ledger.entries("spent", "paying")
        if not stuck:
            return 0
        try:
            wallet = self.wallet()
        except ConfigError:
            log.warning("%d payments of unknown outcome wait for a wallet to look them up", len(stuck))
            return 0
        resolved = 0
        for entry in stuck:
            if entry.payment_hash is None:
                continue
            try:
                status = await wallet.lookup_invoice(entry.payment_hash)
            except WalletError as exc:
                if exc.code != "NOT_FOUND":
                    log.warning("could not look up the payment of job %s: %s", entry.job_id[:12], exc)
                    continue
                self.ledger.resolve(entry.job_id, settled=False)
            else:
                self.ledger.resolve(
                    entry.job_id, settled=status.settled, preimage=status.preimage, fees_msats=status.fees_msats
                )
                if status.settled:
                    self.paid_hashes.add(entry.payment_hash)
            resolved += 1
        return resolved


class JobBill:
    """What one job owes: its reservation, its bill, and whether it was paid."""

    def __init__(
        self,
        payer: Payer,
        job_id: str,
        providers: tuple[str, ...],
        bid_msats: int,
        model: str,
        reservation: Reservation,
    ) -> None:
        self.payer = payer
        self.job_id = job_id
        self.providers = providers
        self.bid_msats = bid_msats
        self.model = model
        self.reservation = reservation
        self.paid_msats = 0
        self.paid = False
        self.paying = False
        self.pending: Bill | None = None
        self.pending_expires_at = 0
        # Who was paid: from then on only that provider's result is accepted.
        self.paid_provider = ""
        self.paying_msats = 0
        self.finished = False

    def check(self, bill: Bill) -> Invoice:
        """The bill's invoice if it may be paid; else the job is refused (ledger) and PaymentRefused raised."""
        verdict = check_bill(
            bill,
            job_id=self.job_id,
            providers=self.providers,
            bid_msats=self.bid_msats,
            budget_left_msats=self.payer.budget.left_for(self.reservation),
            now=time.time(),
            paid_hashes=frozenset(self.payer.paid_hashes),
        )
        if not verdict.ok or verdict.invoice is None:
            amount = verdict.invoice.amount_msats if verdict.invoice else bill.amount_msats
            self.payer.ledger.refuse(self.job_id, verdict.reason, provider=bill.provider, invoice_msats=amount)
            raise PaymentRefused(
                f"not paying provider {bill.provider[:12]}… for job {self.job_id[:12]}…: {verdict.reason}"
            )
        return verdict.invoice

    async def handle(self, bill: Bill) -> None:
        """Act on a bill: pay it (auto_pay or approved), or raise PaymentRequired / PaymentRefused.

        A second bill for a job already paid (or being paid) is recorded and ignored.
        """
        if self.paid or self.paying:
            self.payer.ledger.note(self.job_id, f"ignored a repeated bill from {bill.provider[:12]}…")
            log.info("job %s: repeated bill ignored", self.job_id[:12])
            return
        invoice = self.check(bill)
        if not self.payer.auto_pay:
            if self.payer.approve is None:
                self.pending = bill
                self.pending_expires_at = invoice.expires_at
                self.payer.ledger.await_approval(
                    self.job_id,
                    provider=bill.provider,
                    invoice_msats=invoice.amount_msats or 0,
                    bolt11=invoice.bolt11,
                )
                raise PaymentRequired(
                    f"provider {bill.provider[:12]}… asks {invoice.amount_msats} msats for job {self.job_id[:12]}…; "
                    "auto_pay is off: approve with dspy_pylon.pay(job_id)",
                    job_id=self.job_id,
                    provider=bill.provider,
                    amount_msats=invoice.amount_msats or 0,
                    bolt11=invoice.bolt11,
                )
            request = PaymentRequest(
                self.job_id, bill.provider, invoice.amount_msats or 0, invoice.bolt11, self.bid_msats, self.model
            )
            if not await asyncio.to_thread(self.payer.approve, request):
                self.payer.ledger.refuse(self.job_id, "declined by the approve callback", provider=bill.provider)
                raise PaymentRefused(f"payment for job {self.job_id[:12]}… declined by the approve callback")
        await self.pay(bill, invoice)

    async def pay(self, bill: Bill, invoice: Invoice) -> None:
        """Write the intent, then pay through the wallet (exactly once per job and per invoice)."""
        amount = invoice.amount_msats or 0
        wallet = self.payer.wallet()
        mine, why = self.payer.ledger.begin_payment(
            self.job_id,
            provider=bill.provider,
            invoice_msats=amount,
            bolt11=invoice.bolt11,
            payment_hash=invoice.payment_hash,
        )
        if not mine:
            if "another job" in why:
                self.payer.ledger.refuse(self.job_id, why, provider=bill.provider, invoice_msats=amount)
                raise PaymentRefused(f"not paying for job {self.job_id[:12]}…: {why}")
            self.payer.ledger.note(self.job_id, f"bill not paid again: {why}")
            return
        self.paying = True
        self.paying_msats = amount
        try:
            result = await wallet.pay_invoice(invoice.bolt11)
        except WalletError as exc:
            if exc.code == "TIMEOUT":
                self.paid_provider = bill.provider
                # Unknown outcome: the job stays 'paying' (resolved by a lookup later) and
                # finish() counts the amount as spent, so the budget can never be exceeded by it.
                raise PaymentFailed(
                    f"the wallet did not confirm the payment for job {self.job_id[:12]}… ({exc}); the ledger keeps it "
                    "as 'paying' until it is looked up"
                ) from None
            self.payer.ledger.payment_failed(self.job_id, str(exc))
            self.paying = False
            raise PaymentFailed(f"the wallet did not pay for job {self.job_id[:12]}…: {exc}") from None
        paid = amount + result.fees_msats
        if not _proves(result.preimage, invoice.payment_hash):
            # Paid, by the wallet's word, but without proof: keep the evidence, say so.
            log.warning("job %s: the wallet's preimage does not match the invoice's payment hash", self.job_id[:12])
            self.payer.ledger.note(self.job_id, "the wallet's preimage does not prove the payment")
        self.payer.ledger.payment_succeeded(
            self.job_id, preimage=result.preimage, paid_msats=paid, fees_msats=result.fees_msats
        )
        self.payer.paid_hashes.add(invoice.payment_hash)
        self.payer.budget.settle(self.reservation, paid)
        self.paid_msats = paid
        self.paid = True
        self.paying = False
        self.paid_provider = bill.provider

    def finish(self, *, answered: bool, reason: str = "", **details: object) -> None:
        """The job is over: record it, and give back whatever of the reservation was not paid.

        A payment still in flight (the call was cancelled while the wallet paid) counts as
        spent: the budget must assume the worst until the ledger learns otherwise.
        """
        if self.finished:
            return
        self.finished = True
        if self.paying and not self.paid:
            self.payer.budget.settle(self.reservation, self.paying_msats)
        self.payer.budget.release(self.reservation)
        self.payer.ledger.finish(self.job_id, answered=answered, reason=reason, **details)  # type: ignore[arg-type]


def _proves(preimage: str, payment_hash: str) -> bool:
    import hashlib

    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash.lower()
    except ValueError:
        return False
