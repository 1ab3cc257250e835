"""The customer's side of one NIP-90 job as a pure state machine (sans-IO).

A :class:`CustomerJob` is fed what happened — a parsed feedback or result event, the
outcome of a payment the driver made, the deadline passing, the caller giving up — through
:meth:`CustomerJob.receive`, and answers with the :class:`Action` objects the driver must
perform (:mod:`dspy_pylon.swarm.job_actions`), in order: pay a bill, write a note, credit or blame a provider, publish a
cancellation, close the job's books, deliver the result or raise an error. It never does
I/O, reads no clock (``now`` is passed in) and knows nothing of relays, wallets or SQLite,
so every order of events can be tested exhaustively (h11's ``_state.py`` is the model).

It is generic over the job kind: it checks the result kind against the request's, and
everything else — payment, verification, cancellation — is the same for every kind.

The books are closed exactly once: :class:`Close` is emitted on the single transition into
a final state, and final states have no way out (:data:`TRANSITIONS`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from dspy_pylon.errors import JobFailed, MalformedEvent, PylonError, SwarmTimeout
from dspy_pylon.nostr.nip90 import JobFeedback, JobResult
from dspy_pylon.pay.invoice import Bill
from dspy_pylon.pay.outcomes import (
    ApprovalNeeded,
    PaymentOutcome,
    PaymentSettled,
    PaymentSkipped,
    PaymentStopped,
    PaymentUnconfirmed,
)
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


class JobState(enum.Enum):
    """Where a job is. ``ANSWERED`` and ``FAILED`` are final."""

    #: Published; feedback and results are read, nothing is owed yet.
    WAITING = "waiting"
    #: A bill is being checked and paid (the driver performs :class:`Pay`).
    PAYING = "paying"
    #: A bill waits for the user's approval (``auto_pay`` off and no approve callback).
    AWAITING_APPROVAL = "awaiting_approval"
    #: One provider was paid: only its result is accepted from now on.
    PAID = "paid"
    #: A result was accepted.
    ANSWERED = "answered"
    #: The job ended without a result: an error, the deadline, a refused bill, the caller gave up.
    FAILED = "failed"


S = JobState
#: Every allowed move; anything else is a bug in this module (checked on every move).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.WAITING: frozenset({S.PAYING, S.ANSWERED, S.FAILED}),
    S.PAYING: frozenset({S.WAITING, S.PAID, S.AWAITING_APPROVAL, S.FAILED}),
    S.AWAITING_APPROVAL: frozenset({S.PAYING, S.FAILED}),
    S.PAID: frozenset({S.ANSWERED, S.FAILED}),
    S.ANSWERED: frozenset(),
    S.FAILED: frozenset(),
}
FINAL = frozenset(state for state, moves in TRANSITIONS.items() if not moves)


# ─── what happens (inputs) ───


@dataclass(frozen=True)
class Received:
    """A parsed feedback or result event for this job (signature checked at the edge)."""

    event: JobFeedback | JobResult
    relay: str = ""


@dataclass(frozen=True)
class Approved:
    """The user approved the waiting bill."""


@dataclass(frozen=True)
class DeadlinePassed:
    """The job's time ran out."""


@dataclass(frozen=True)
class Abandoned:
    """The call stopped without the job ending (cancelled, not published, an unexpected error).

    ``unconfirmed_msats``: what the wallet was paying at that moment (the driver knows).
    """

    reason: str
    unconfirmed_msats: int = 0


Input = Received | PaymentOutcome | Approved | DeadlinePassed | Abandoned


#: Checks a result's content for the job it answers; raises MalformedEvent if it is unusable.
ResultCheck = Callable[[JobResult], None]


@dataclass
class CustomerJob:
    """One published job, from the customer's side. Pure: see the module docstring.

    ``payable`` says whether this job has a payer (bills are acted on) and
    ``pay_on_result`` whether a bill attached to a result is paid before it is accepted.
    """

    job_id: str
    customer: str
    kind: int
    providers: tuple[str, ...]
    timeout: float
    started: float
    payable: bool = False
    pay_on_result: bool = True
    check: ResultCheck | None = None
    state: JobState = JobState.WAITING
    feedback: list[JobFeedback] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    paid_provider: str = ""
    paid_msats: int = 0
    #: The bill being paid or waiting for approval.
    bill: Bill | None = None
    bill_expires_at: float = 0.0
    #: A result that arrived with its bill (paid before it is accepted).
    held: Received | None = None

    @property
    def final(self) -> bool:
        """Whether the job has ended (answered or failed)."""
        return self.state in FINAL

    def _move(self, to: JobState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise AssertionError(f"job lifecycle bug: {self.state.name} → {to.name} is not a transition")
        self.state = to

    def receive(self, event: Input, now: float) -> list[Action]:
        """What to do about ``event`` at monotonic time ``now``; updates the state."""
        if self.final:
            return [Ignore("event after the job ended")] if isinstance(event, Received) else []
        if isinstance(event, Received):
            return self._received(event, now)
        if isinstance(event, DeadlinePassed):
            return self._deadline()
        if isinstance(event, Abandoned):
            return self._fail(event.reason, unconfirmed_msats=event.unconfirmed_msats)
        return self._payment(event, now)

    # ─── events from the relays ───

    def _received(self, got: Received, now: float) -> list[Action]:
        event = got.event
        if self.providers and event.provider not in self.providers:
            return [Ignore("author not a targeted provider")]
        if event.request_id != self.job_id or event.customer != self.customer:
            return [Ignore("e or p tag not ours")]
        if isinstance(event, JobFeedback):
            return self._feedback(event)
        if event.kind != self.kind + 1000:
            return [Ignore("wrong result kind")]
        return self._result(got, event, now)

    def _feedback(self, feedback: JobFeedback) -> list[Action]:
        self.feedback.append(feedback)
        if feedback.status == "error":
            self.errors[feedback.provider] = "; ".join(x for x in (feedback.extra, feedback.content) if x)
            if feedback.provider == self.paid_provider:
                # The provider we paid gave up: no other provider's result will be taken.
                return [Blame(feedback.provider, "error"), *self._paid_for_nothing()]
            return [Blame(feedback.provider, "error"), *self._fail_if_every_target_failed()]
        if feedback.status != "payment-required" or not self.payable:
            return []
        if self.state is not S.WAITING:  # paying, paid or waiting for approval: one bill per job
            return [Note(f"ignored a repeated bill from {feedback.provider[:12]}…")]
        if feedback.bolt11 is None and not self.providers:
            # A broadcast: another provider may still bill properly or answer.
            return [Note(f"bill without an invoice from {feedback.provider[:12]}…")]
        return self._pay(Bill(self.job_id, feedback.provider, feedback.amount_msats, feedback.bolt11 or ""))

    def _result(self, got: Received, result: JobResult, now: float) -> list[Action]:
        if self.paid_provider and result.provider != self.paid_provider:
            # A broadcast we paid one provider for: another's result is not what we bought.
            return [Ignore("result from a provider we did not pay")]
        if self.check is not None:
            try:
                self.check(result)
            except MalformedEvent as exc:
                return self._unusable(result.provider, exc)
        if self.state in (S.PAYING, S.AWAITING_APPROVAL):
            if self.bill is not None and result.provider == self.bill.provider and self.held is None:
                self.held = got  # accepted once its bill is paid
                return []
            return [Ignore("result while another provider's bill is being paid")]
        billed = bool(result.bolt11) and (result.amount_msats or 0) > 0
        if self.state is S.WAITING and self.payable and self.pay_on_result and billed:
            # Billed after delivery: the same checks, then pay before accepting.
            self.held = got
            return self._pay(Bill(self.job_id, result.provider, result.amount_msats, result.bolt11 or ""))
        return self._answer(got, result, now)

    def _unusable(self, provider: str, exc: MalformedEvent) -> list[Action]:
        self.errors[provider] = f"its result does not answer the job: {exc}"
        actions: list[Action] = [Ignore("result that does not answer the job"), Blame(provider, "error")]
        if self.paid_provider == provider:
            # Paid for: no other provider's result will be taken, so this is final.
            return [*actions, *self._paid_for_nothing()]
        return [*actions, *self._fail_if_every_target_failed()]

    def _answer(self, got: Received, result: JobResult, now: float) -> list[Action]:
        self._move(S.ANSWERED)
        latency_ms = (now - self.started) * 1000
        # A job more than one provider may run: the others can stop (NIP-90's cancellation).
        others = [Cancel("answered by another provider", background=True)] if len(self.providers) != 1 else []
        return [
            *others,
            Credit(result.provider, latency_ms),
            Close(
                answered=True,
                provider=result.provider,
                model=result.model or "",
                prompt_tokens=result.prompt_tokens or 0,
                completion_tokens=result.completion_tokens or 0,
                latency_ms=round(latency_ms, 3),
            ),
            Deliver(result, got.relay, latency_ms, self.paid_msats),
        ]

    # ─── payments ───

    def _pay(self, bill: Bill, approved: bool = False) -> list[Action]:
        self._move(S.PAYING)
        self.bill = bill
        return [Pay(bill, approved)]

    def _payment(self, event: Input, now: float) -> list[Action]:
        if isinstance(event, Approved):
            if self.state is not S.AWAITING_APPROVAL or self.bill is None:
                return []
            return self._pay(self.bill, approved=True)
        if self.state is not S.PAYING or self.bill is None:
            return []  # an outcome for a payment this job is not making: nothing to do
        bill = self.bill
        if isinstance(event, PaymentSettled):
            self._move(S.PAID)
            # Whom we asked to pay is who was paid (the outcome's own provider is only a report).
            self.paid_provider, self.paid_msats, self.bill = bill.provider, event.msats, None
            held, self.held = self.held, None
            if held is not None and isinstance(held.event, JobResult):
                return self._answer(held, held.event, now)
            return []
        if isinstance(event, PaymentSkipped):
            self._move(S.WAITING)
            self.bill = self.held = None
            return [Note(f"bill from {bill.provider[:12]}… not paid again: the ledger has it paid or paying")]
        if isinstance(event, ApprovalNeeded):
            self._move(S.AWAITING_APPROVAL)
            self.bill_expires_at = event.expires_at
            return [Suspend(event.error)]
        if isinstance(event, PaymentUnconfirmed):
            self.paid_provider = bill.provider
            return [Cancel("payment refused"), *self._fail(str(event.error), event.error, event.msats)]
        if isinstance(event, PaymentStopped):
            return [Cancel("payment refused"), *self._fail(str(event.error), event.error)]
        return []

    def approval_expired(self, now_unix: float) -> bool:
        """Whether a bill waiting for approval can no longer be paid at ``now_unix``."""
        return self.state is S.AWAITING_APPROVAL and self.bill_expires_at <= now_unix

    # ─── endings ───

    def _deadline(self) -> list[Action]:
        # Who let us down: the providers we named, and any that took the job.
        took = {f.provider for f in self.feedback if f.status == "processing"}
        actions: list[Action] = [Blame(p, "timeout") for p in sorted(set(self.providers) | took)]
        actions.append(Cancel("timed out"))
        # A payment still in flight (only when the driver pays concurrently) counts as spent.
        unconfirmed = (self.bill.amount_msats or 0) if self.state is S.PAYING and self.bill is not None else 0
        job, waited = self.job_id[:12], f"{self.timeout:g} s"
        if self.paid_msats or unconfirmed:
            error: PylonError = JobFailed(
                f"paid {self.paid_msats or unconfirmed} msats for job {job}… but no result arrived within {waited}; "
                "the ledger records it as paid without a result"
            )
        elif self.errors:
            error = JobFailed(
                f"no result for job {job}… within {waited}, only errors: {_describe(self.errors)}; the job was "
                "cancelled"
            )
        else:
            seen = ", ".join(sorted({f"{f.status} from {f.provider[:12]}…" for f in self.feedback})) or "no feedback"
            error = SwarmTimeout(f"no valid result for job {job}… within {waited} ({seen}); the job was cancelled")
        return [*actions, *self._fail(f"no result within {waited}", error, unconfirmed)]

    def _paid_for_nothing(self) -> list[Action]:
        error = JobFailed(
            f"job {self.job_id[:12]}… failed: {_describe(self.errors)}; {self.paid_msats} msats were paid for it "
            "(ledger: paid without a result)"
        )
        return self._fail(str(error), error)

    def _fail_if_every_target_failed(self) -> list[Action]:
        """One target: its error is final. Several: final once all failed. A broadcast: keep waiting."""
        if not self.providers or not set(self.providers) <= set(self.errors):
            return []
        note = f"; {self.paid_msats} msats were paid for it (ledger: paid without a result)" if self.paid_msats else ""
        error = JobFailed(f"job {self.job_id[:12]}… failed: {_describe(self.errors)}{note}")
        return self._fail(str(error), error)

    def _fail(self, reason: str, error: PylonError | None = None, unconfirmed_msats: int = 0) -> list[Action]:
        self._move(S.FAILED)
        actions: list[Action] = [Close(answered=False, reason=reason[:300], unconfirmed_msats=unconfirmed_msats)]
        return [*actions, Raise(error)] if error is not None else actions


def _describe(errors: dict[str, str]) -> str:
    return "; ".join(f"provider {who[:12]}… reported an error: {why or 'no details'}" for who, why in errors.items())
