"""Paying for swarm jobs, customer side: budget reservation, bill checks, exactly-once payment.

A :class:`Payer` belongs to one LM (shared by its copies) and opens a :class:`JobBill`
for every job before the job is published. The job's bid is reserved in the
:class:`~dspy_pylon.usage.Budget` (or :class:`BudgetExceeded` is raised, and nothing is
published). When the provider bills the job, :meth:`JobBill.settle` checks the bill
(:func:`~dspy_pylon.pay.invoice.check_bill`), writes the intent to the
:class:`~dspy_pylon.pay.ledger.SpendLedger` and only then asks the wallet to pay.
Runs on the Nostr loop; every ledger call goes to a worker thread, so a ledger locked
by another process never stalls the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from dspy_pylon.errors import ConfigError, PaymentFailed, PaymentRefused, PaymentRequired, WalletError
from dspy_pylon.pay.invoice import Bill, Invoice, check_bill
from dspy_pylon.pay.ledger import Claim, SpendLedger, Spent
from dspy_pylon.pay.nwc import NwcWallet
from dspy_pylon.pay.outcomes import (
    ApprovalNeeded,
    PaymentOutcome,
    PaymentSettled,
    PaymentSkipped,
    PaymentStopped,
    PaymentUnconfirmed,
)
from dspy_pylon.pay.refusals import RefusalCode
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
        stuck = await self.ledger.run(self.ledger.entries, "spent", Spent.PAYING)
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
                await self.ledger.run(self.ledger.resolve, entry.job_id, settled=False)
            else:
                await self.ledger.run(
                    self.ledger.resolve,
                    entry.job_id,
                    settled=status.settled,
                    preimage=status.preimage,
                    fees_msats=status.fees_msats,
                )
                if status.settled:
                    self.paid_hashes.add(entry.payment_hash)
            resolved += 1
        return resolved


class JobBill:
    """What one job owes: its reservation, and the I/O of checking and paying its bill.

    Whether the job is paid, and by whom, is the job lifecycle's business
    (:class:`~dspy_pylon.swarm.lifecycle.CustomerJob`); this class answers each request to
    pay with a :data:`~dspy_pylon.pay.outcomes.PaymentOutcome` and never raises for a bill.
    """

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
        #: What the wallet is paying right now (a call cancelled meanwhile counts it as spent).
        self.in_flight_msats = 0

    async def settle(self, bill: Bill, *, approved: bool = False) -> PaymentOutcome:
        """Check ``bill`` and pay it (``auto_pay``, ``approve`` or ``approved``), or say why not."""
        ledger = self.payer.ledger
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
            return await self._refuse(
                bill, verdict.code or RefusalCode.BAD_INVOICE, verdict.reason, verdict.amount_msats
            )
        invoice = verdict.invoice
        amount = invoice.amount_msats or 0
        if not (approved or self.payer.auto_pay):
            if self.payer.approve is None:
                await ledger.run(
                    ledger.await_approval,
                    self.job_id,
                    provider=bill.provider,
                    invoice_msats=amount,
                    bolt11=invoice.bolt11,
                )
                required = PaymentRequired(
                    f"provider {bill.provider[:12]}… asks {amount} msats for job {self.job_id[:12]}…; auto_pay is off: "
                    "approve with dspy_pylon.pay(job_id)",
                    job_id=self.job_id,
                    provider=bill.provider,
                    amount_msats=amount,
                    bolt11=invoice.bolt11,
                )
                return ApprovalNeeded(required, invoice.expires_at)
            request = PaymentRequest(self.job_id, bill.provider, amount, invoice.bolt11, self.bid_msats, self.model)
            if not await asyncio.to_thread(self.payer.approve, request):
                return await self._refuse(bill, RefusalCode.DECLINED, "declined by the approve callback", amount)
        return await self._pay(bill, invoice)

    async def _refuse(self, bill: Bill, code: RefusalCode, reason: str, amount: int) -> PaymentStopped:
        await self.payer.ledger.run(
            self.payer.ledger.refuse, self.job_id, code, reason, provider=bill.provider, invoice_msats=amount or None
        )
        return PaymentStopped(
            PaymentRefused(f"not paying provider {bill.provider[:12]}… for job {self.job_id[:12]}…: {reason}")
        )

    async def _pay(self, bill: Bill, invoice: Invoice) -> PaymentOutcome:
        """Write the intent, then pay through the wallet (exactly once per job and per invoice)."""
        amount = invoice.amount_msats or 0
        ledger = self.payer.ledger
        try:
            wallet = self.payer.wallet()
        except ConfigError as exc:
            return PaymentStopped(exc)
        claim = await ledger.run(
            ledger.begin_payment,
            self.job_id,
            provider=bill.provider,
            invoice_msats=amount,
            bolt11=invoice.bolt11,
            payment_hash=invoice.payment_hash,
        )
        if claim is Claim.INVOICE_USED:
            return await self._refuse(
                bill, RefusalCode.ALREADY_PAID, "this invoice was already paid for another job", amount
            )
        if claim is not Claim.MINE:
            return PaymentSkipped()
        self.in_flight_msats = amount
        try:
            result = await wallet.pay_invoice(invoice.bolt11)
        except WalletError as exc:
            self.in_flight_msats = 0
            if exc.code == "TIMEOUT":
                # Unknown outcome: the job stays 'paying' (resolved by a lookup later) and the
                # amount counts as spent, so the budget can never be exceeded by it.
                return PaymentUnconfirmed(
                    bill.provider,
                    amount,
                    PaymentFailed(
                        f"the wallet did not confirm the payment for job {self.job_id[:12]}… ({exc}); the ledger keeps"
                        " it as 'paying' until it is looked up"
                    ),
                )
            await ledger.run(ledger.payment_failed, self.job_id, str(exc))
            return PaymentStopped(PaymentFailed(f"the wallet did not pay for job {self.job_id[:12]}…: {exc}"))
        self.in_flight_msats = 0
        paid = amount + result.fees_msats
        self.payer.budget.settle(self.reservation, paid)
        self.payer.paid_hashes.add(invoice.payment_hash)
        if not _proves(result.preimage, invoice.payment_hash):
            # Paid, by the wallet's word, but without proof: keep the evidence, say so.
            log.warning("job %s: the wallet's preimage does not match the invoice's payment hash", self.job_id[:12])
            await ledger.run(ledger.note, self.job_id, "the wallet's preimage does not prove the payment")
        await ledger.run(
            ledger.payment_succeeded,
            self.job_id,
            preimage=result.preimage,
            paid_msats=paid,
            fees_msats=result.fees_msats,
        )
        return PaymentSettled(bill.provider, paid)

    def suspend(self) -> None:
        """The bill waits for the user: give the reservation back meanwhile."""
        self.payer.budget.release(self.reservation)

    def resume(self) -> None:
        """The user approved: reserve the bid again (:class:`BudgetExceeded` if it no longer fits)."""
        self.reservation = self.payer.budget.reserve(self.bid_msats)

    async def close(self, *, answered: bool, reason: str = "", unconfirmed_msats: int = 0, **details: object) -> None:
        """The job is over (called once, by the lifecycle): record it and give back the unpaid reservation.

        ``unconfirmed_msats`` — a payment of unknown outcome — counts as spent: the budget
        must assume the worst until the ledger learns otherwise.
        """
        if unconfirmed_msats:
            self.payer.budget.settle(self.reservation, unconfirmed_msats)
        self.payer.budget.release(self.reservation)
        await self.payer.ledger.run(self.payer.ledger.finish, self.job_id, answered=answered, reason=reason, **details)  # type: ignore[arg-type]


def _proves(preimage: str, payment_hash: str) -> bool:
    import hashlib

    try:
        return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash.lower()
    except ValueError:
        return False
