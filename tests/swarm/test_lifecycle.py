"""The customer job lifecycle (sans-IO): every transition by a scripted scenario, and
property tests over random event orders — duplicates, late results, bills after results,
cancels, timeouts — checking that a job is paid at most once and closed exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import JobFailed, MalformedEvent, PaymentFailed, PaymentRefused, PaymentRequired, SwarmTimeout
from dspy_pylon.nostr.nip90 import JobFeedback, JobResult
from dspy_pylon.pay.invoice import Bill
from dspy_pylon.pay.outcomes import ApprovalNeeded, PaymentSettled, PaymentSkipped, PaymentStopped, PaymentUnconfirmed
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
from dspy_pylon.swarm.lifecycle import (
    FINAL,
    TRANSITIONS,
    Abandoned,
    Approved,
    CustomerJob,
    DeadlinePassed,
    Input,
    JobState,
    Received,
)

JOB = "ab" * 32
ME = "cd" * 32
P1, P2, P3 = "11" * 32, "22" * 32, "33" * 32
S = JobState


def job(providers: tuple[str, ...] = (P1,), payable: bool = True, **kw: object) -> CustomerJob:
    return CustomerJob(JOB, ME, 5050, providers, timeout=5.0, started=100.0, payable=payable, **kw)  # type: ignore[arg-type]


def feedback(provider: str, status: str, *, bolt11: str | None = None, amount: int | None = None) -> Received:
    return Received(JobFeedback(JOB, ME, status, amount_msats=amount, bolt11=bolt11, provider=provider), "wss://r")


def result(provider: str, content: str = "hi", *, bolt11: str | None = None, amount: int | None = None) -> Received:
    return Received(
        JobResult(JOB, ME, content, amount_msats=amount, bolt11=bolt11, provider=provider, model="m"), "wss://r"
    )


def bill(provider: str = P1, amount: int = 900) -> Bill:
    return Bill(JOB, provider, amount, "lnbc-" + provider[:4])


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions]


def settled(provider: str = P1, msats: int = 900) -> PaymentSettled:
    return PaymentSettled(provider, msats)


def required() -> ApprovalNeeded:
    return ApprovalNeeded(PaymentRequired("approve", job_id=JOB, provider=P1, amount_msats=900, bolt11="ln"), 2e9)


# ─── scripted scenarios ───


def test_a_free_answer_is_credited_closed_and_delivered() -> None:
    j = job(payable=False)
    actions = j.receive(result(P1), now=100.25)
    assert kinds(actions) == [Credit, Close, Deliver]
    credit, close, deliver = actions
    assert isinstance(credit, Credit) and credit.latency_ms == pytest.approx(250)
    assert isinstance(close, Close) and close.answered and close.provider == P1 and close.model == "m"
    assert isinstance(deliver, Deliver) and deliver.cost_msats == 0 and deliver.relay == "wss://r"
    assert j.state is S.ANSWERED and j.final


@pytest.mark.parametrize(
    ("event", "why"),
    [
        (feedback(P2, "processing"), "author not a targeted provider"),
        (Received(JobResult("ef" * 32, ME, "x", provider=P1)), "e or p tag not ours"),
        (Received(JobResult(JOB, "ef" * 32, "x", provider=P1)), "e or p tag not ours"),
        (Received(JobResult(JOB, ME, "x", kind=6100, provider=P1)), "wrong result kind"),
    ],
)
def test_events_that_are_not_for_this_job_are_ignored(event: Received, why: str) -> None:
    j = job()
    assert j.receive(event, 101) == [Ignore(why)]
    assert j.state is S.WAITING and j.feedback == []


def test_a_bill_is_paid_then_only_the_paid_providers_result_is_taken() -> None:
    j = job(providers=())
    assert j.receive(feedback(P1, "payment-required", bolt11="lnbc-1111", amount=900), 101) == [
        Pay(Bill(JOB, P1, 900, "lnbc-1111"))
    ]
    assert j.state is S.PAYING
    assert j.receive(settled(), 101) == []
    assert j.state is S.PAID
    assert j.receive(result(P2), 102) == [Ignore("result from a provider we did not pay")]
    assert j.receive(feedback(P2, "payment-required", bolt11="ln2", amount=5), 102) == [
        Note(f"ignored a repeated bill from {P2[:12]}…")
    ]
    actions = j.receive(result(P1), 103)
    # A broadcast is answered: the other providers are told to stop, without holding up the call.
    assert kinds(actions) == [Cancel, Credit, Close, Deliver]
    assert actions[0] == Cancel("answered by another provider", background=True)
    assert isinstance(actions[3], Deliver) and actions[3].cost_msats == 900


def test_a_result_carrying_its_bill_is_paid_before_it_is_accepted() -> None:
    j = job()
    assert kinds(j.receive(result(P1, bolt11="lnbc-1", amount=700), 101)) == [Pay]
    assert j.state is S.PAYING and j.held is not None
    actions = j.receive(settled(msats=707), 102)
    assert kinds(actions) == [Credit, Close, Deliver]
    assert isinstance(actions[2], Deliver) and actions[2].cost_msats == 707 and actions[2].result.content == "hi"


def test_a_billed_result_is_accepted_unpaid_when_pay_on_result_is_off() -> None:
    j = job(pay_on_result=False)
    assert kinds(j.receive(result(P1, bolt11="lnbc-1", amount=700), 101)) == [Credit, Close, Deliver]


def test_a_broadcast_bill_without_an_invoice_is_noted_and_the_job_waits() -> None:
    j = job(providers=())
    assert j.receive(feedback(P1, "payment-required", amount=900), 101) == [
        Note(f"bill without an invoice from {P1[:12]}…")
    ]
    assert j.state is S.WAITING


def test_a_targeted_bill_without_an_invoice_is_paid_and_refused_by_the_payer() -> None:
    j = job()
    assert j.receive(feedback(P1, "payment-required", amount=900), 101) == [Pay(Bill(JOB, P1, 900, ""))]
    error = PaymentRefused("no invoice")
    assert j.receive(PaymentStopped(error), 101) == [
        Cancel("payment refused"),
        Close(answered=False, reason="no invoice"),
        Raise(error),
    ]
    assert j.state is S.FAILED


def test_an_unpriced_job_ignores_bills() -> None:
    j = job(payable=False)
    assert j.receive(feedback(P1, "payment-required", bolt11="ln", amount=1), 101) == []
    assert j.state is S.WAITING


def test_the_error_of_the_only_target_is_final() -> None:
    j = job()
    e = Received(JobFeedback(JOB, ME, "error", extra="model not served", provider=P1))
    actions = j.receive(e, 101)
    assert kinds(actions) == [Blame, Close, Raise]
    assert actions[0] == Blame(P1, "error")
    assert isinstance(actions[2], Raise) and isinstance(actions[2].error, JobFailed)
    assert "model not served" in str(actions[2].error)


def test_errors_are_final_only_once_every_target_failed() -> None:
    j = job(providers=(P1, P2))
    assert kinds(j.receive(feedback(P1, "error"), 101)) == [Blame]
    assert j.state is S.WAITING
    assert kinds(j.receive(feedback(P2, "error"), 101)) == [Blame, Close, Raise]


def test_a_broadcast_keeps_waiting_after_errors_until_the_paid_provider_fails() -> None:
    j = job(providers=())
    assert kinds(j.receive(feedback(P1, "error"), 101)) == [Blame]
    j.receive(feedback(P2, "payment-required", bolt11="ln", amount=900), 101)
    j.receive(settled(P2), 101)
    actions = j.receive(feedback(P2, "error"), 102)
    assert kinds(actions) == [Blame, Close, Raise]
    assert isinstance(actions[2], Raise) and "900 msats were paid" in str(actions[2].error)


def _refuse_content(r: JobResult) -> None:
    if r.content != "ok":
        raise MalformedEvent("not the schema")


def test_a_result_that_does_not_answer_the_job_counts_as_an_error() -> None:
    j = job(providers=(P1, P2), check=_refuse_content)
    actions = j.receive(result(P1, "bad"), 101)
    assert actions == [Ignore("result that does not answer the job"), Blame(P1, "error")]
    assert kinds(j.receive(result(P2, "ok"), 102)) == [Cancel, Credit, Close, Deliver]


def test_an_unusable_result_from_the_paid_provider_is_final() -> None:
    j = job(providers=(), check=_refuse_content)
    j.receive(feedback(P1, "payment-required", bolt11="ln", amount=900), 101)
    j.receive(settled(), 101)
    actions = j.receive(result(P1, "bad"), 102)
    assert kinds(actions) == [Ignore, Blame, Close, Raise]
    assert isinstance(actions[3], Raise) and "900 msats were paid" in str(actions[3].error)


@pytest.mark.parametrize(
    ("before", "error"),
    [
        ([], SwarmTimeout),
        ([feedback(P1, "processing")], SwarmTimeout),
        ([feedback(P2, "error")], JobFailed),
        ([feedback(P2, "payment-required", bolt11="ln", amount=900), settled(P2)], JobFailed),
    ],
)
def test_the_deadline_blames_cancels_closes_and_raises(before: list[Input], error: type) -> None:
    j = job(providers=())
    for event in before:
        j.receive(event, 101)
    actions = j.receive(DeadlinePassed(), 105)
    assert kinds(actions)[-3:] == [Cancel, Close, Raise]
    took = {a.provider for a in actions if isinstance(a, Blame)}
    assert took == ({P1} if before and before[0].event.status == "processing" else set())  # type: ignore[union-attr]
    raised = actions[-1]
    assert isinstance(raised, Raise) and type(raised.error) is error
    if error is JobFailed and j.paid_msats:
        assert "paid 900 msats" in str(raised.error)


def test_a_targeted_timeout_blames_every_target() -> None:
    j = job(providers=(P1, P2))
    blamed = [a for a in j.receive(DeadlinePassed(), 105) if isinstance(a, Blame)]
    assert blamed == [Blame(P1, "timeout"), Blame(P2, "timeout")]


def test_a_payment_of_unknown_outcome_counts_as_spent() -> None:
    j = job()
    j.receive(feedback(P1, "payment-required", bolt11="ln", amount=900), 101)
    error = PaymentFailed("wallet timeout")
    assert j.receive(PaymentUnconfirmed(P1, 900, error), 102) == [
        Cancel("payment refused"),
        Close(answered=False, reason="wallet timeout", unconfirmed_msats=900),
        Raise(error),
    ]


def test_a_bill_the_ledger_has_paid_already_is_skipped_and_the_job_waits() -> None:
    j = job()
    j.receive(feedback(P1, "payment-required", bolt11="ln", amount=900), 101)
    assert kinds(j.receive(PaymentSkipped(), 101)) == [Note]
    assert j.state is S.WAITING and j.bill is None


def test_approval_parks_the_job_and_approving_pays_it() -> None:
    j = job()
    j.receive(result(P1, bolt11="ln", amount=900), 101)
    need = required()
    assert j.receive(need, 101) == [Suspend(need.error)]
    assert j.state is S.AWAITING_APPROVAL
    assert not j.approval_expired(1e9) and j.approval_expired(3e9)
    assert j.receive(Approved(), 200) == [Pay(Bill(JOB, P1, 900, "ln"), approved=True)]
    actions = j.receive(settled(), 201)
    assert kinds(actions) == [Credit, Close, Deliver]  # the result that came with the bill


def test_an_approval_that_expires_closes_the_job() -> None:
    j = job()
    j.receive(feedback(P1, "payment-required", bolt11="ln", amount=900), 101)
    j.receive(required(), 101)
    assert j.receive(Abandoned("the bill expired unapproved"), 300) == [
        Close(answered=False, reason="the bill expired unapproved")
    ]


def test_a_cancelled_call_closes_the_job_counting_what_the_wallet_was_paying() -> None:
    j = job()
    j.receive(feedback(P1, "payment-required", bolt11="ln", amount=900), 101)
    assert j.receive(Abandoned("the call was cancelled", 900), 102) == [
        Close(answered=False, reason="the call was cancelled", unconfirmed_msats=900)
    ]


def test_nothing_happens_after_the_end() -> None:
    j = job(payable=False)
    j.receive(result(P1), 101)
    assert j.receive(result(P1), 102) == [Ignore("event after the job ended")]
    for event in (DeadlinePassed(), Abandoned("x"), settled(), Approved(), PaymentSkipped()):
        assert j.receive(event, 103) == []


def test_payment_outcomes_for_no_payment_are_ignored() -> None:
    j = job()
    for event in (settled(), PaymentSkipped(), PaymentStopped(PaymentRefused("x")), required(), Approved()):
        assert j.receive(event, 101) == []
    assert j.state is S.WAITING


# ─── every transition is exercised ───


@contextmanager
def recorded_moves() -> Iterator[set[tuple[JobState, JobState]]]:
    moves: set[tuple[JobState, JobState]] = set()
    original = CustomerJob._move

    def move(self: CustomerJob, to: JobState) -> None:
        moves.add((self.state, to))
        original(self, to)

    CustomerJob._move = move  # type: ignore[method-assign]
    try:
        yield moves
    finally:
        CustomerJob._move = original  # type: ignore[method-assign]


def test_the_scenarios_cover_every_transition_in_the_table() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    with recorded_moves() as moves:
        for test in (
            test_a_free_answer_is_credited_closed_and_delivered,
            test_a_bill_is_paid_then_only_the_paid_providers_result_is_taken,
            test_a_result_carrying_its_bill_is_paid_before_it_is_accepted,
            test_a_targeted_bill_without_an_invoice_is_paid_and_refused_by_the_payer,
            test_the_error_of_the_only_target_is_final,
            test_a_broadcast_keeps_waiting_after_errors_until_the_paid_provider_fails,
            test_a_bill_the_ledger_has_paid_already_is_skipped_and_the_job_waits,
            test_approval_parks_the_job_and_approving_pays_it,
            test_an_approval_that_expires_closes_the_job,
        ):
            test()
    assert moves == edges


def test_a_move_outside_the_table_is_a_bug_not_a_state() -> None:
    j = job()
    j.state = S.ANSWERED
    with pytest.raises(AssertionError, match="ANSWERED → PAYING"):
        j._move(S.PAYING)


# ─── properties over random event orders ───

_providers = st.sampled_from([P1, P2, P3])
_relay_events = st.one_of(
    st.builds(lambda p, s: feedback(p, s), _providers, st.sampled_from(["processing", "error", "success", "partial"])),
    st.builds(
        lambda p, a, b: feedback(p, "payment-required", bolt11=b, amount=a),
        _providers,
        st.sampled_from([None, 1, 900]),
        st.sampled_from([None, "", "lnbc-x"]),
    ),
    st.builds(
        lambda p, c, b: result(p, c, bolt11=b, amount=900 if b else None),
        _providers,
        st.sampled_from(["ok", "bad"]),
        st.sampled_from([None, "lnbc-r"]),
    ),
)
_outcomes = st.one_of(
    st.builds(settled, _providers, st.sampled_from([900, 905])),
    st.just(PaymentSkipped()),
    st.just(PaymentStopped(PaymentRefused("refused"))),
    st.builds(lambda p: PaymentUnconfirmed(p, 900, PaymentFailed("timeout")), _providers),
    st.builds(lambda: required()),
)
_endings = st.sampled_from([DeadlinePassed(), Abandoned("cancelled"), Abandoned("cancelled", 900), Approved()])
_any_event = st.one_of(_relay_events, _relay_events, _outcomes, _endings)
_jobs = st.builds(
    job,
    providers=st.sampled_from([(), (P1,), (P1, P2)]),
    payable=st.booleans(),
    pay_on_result=st.booleans(),
    check=st.sampled_from([None, _refuse_content]),
)


def _check_invariants(j: CustomerJob, log: list[tuple[Input, list[Action]]]) -> None:
    actions = [a for _, batch in log for a in batch]
    closes = [a for a in actions if isinstance(a, Close)]
    delivers = [a for a in actions if isinstance(a, Deliver)]
    raises = [a for a in actions if isinstance(a, Raise)]
    # Closed exactly once when over, never before; delivered xor raised (or abandoned silently).
    assert len(closes) == (1 if j.final else 0)
    assert len(delivers) <= 1 and not (delivers and raises)
    assert (j.state is S.ANSWERED) == bool(delivers) == (bool(closes) and closes[0].answered)
    # Nothing that acts on money or the caller after the books are closed.
    if closes:
        after = actions[actions.index(closes[0]) + 1 :]
        assert all(isinstance(a, Deliver | Raise | Ignore) for a in after)
    if delivers:
        assert delivers[0].cost_msats == j.paid_msats
        if j.paid_provider:
            assert delivers[0].result.provider == j.paid_provider
    if not j.payable:
        assert not any(isinstance(a, Pay | Suspend) for a in actions)
    assert j.state in TRANSITIONS


@settings(max_examples=400, deadline=None)
@given(_jobs, st.lists(_any_event, max_size=25))
def test_any_order_of_events_pays_at_most_once_and_closes_once(j: CustomerJob, events: list[Input]) -> None:
    log: list[tuple[Input, list[Action]]] = []
    payments_taken = 0
    for n, event in enumerate(events):
        was_paid = bool(j.paid_msats)
        batch = j.receive(event, 100.0 + n)
        # Paid at most once: no bill is paid, and no payment taken, once one settled.
        assert not (was_paid and any(isinstance(a, Pay) for a in batch))
        payments_taken += bool(j.paid_msats) and not was_paid
        log.append((event, batch))
    assert payments_taken <= 1
    _check_invariants(j, log)
    assert j.paid_msats in (0, *(e.msats for e, _ in log if isinstance(e, PaymentSettled)))


@settings(max_examples=400, deadline=None)
@given(_jobs, st.lists(_relay_events, max_size=20), st.lists(_outcomes, max_size=20), st.booleans())
def test_a_driver_that_answers_each_payment_at_once(
    j: CustomerJob, relay: list[Received], outcomes: list[Input], approve: bool
) -> None:
    """The real driver's order: each Pay is answered (by the payer) before the next relay event."""
    log: list[tuple[Input, list[Action]]] = []
    answers = iter(outcomes)
    queue: list[Input] = [*relay, DeadlinePassed()]
    paid_twice = False
    while queue and not j.final:
        event = queue.pop(0)
        batch = j.receive(event, 100.0 + len(log))
        log.append((event, batch))
        for action in batch:
            if isinstance(action, Pay):
                paid_twice |= bool(j.paid_msats)
                outcome = next(answers, PaymentStopped(PaymentRefused("no more answers")))
                if isinstance(outcome, PaymentSettled):
                    outcome = PaymentSettled(action.bill.provider, outcome.msats)
                queue.insert(0, outcome)
            elif isinstance(action, Suspend) and approve:
                queue.insert(0, Approved())
    assert not paid_twice
    _check_invariants(j, log)
    assert j.final or j.state is S.AWAITING_APPROVAL
    if j.state is S.ANSWERED and j.paid_provider:
        delivered = next(a for _, b in log for a in b if isinstance(a, Deliver))
        assert delivered.result.provider == j.paid_provider


def test_final_states_are_exactly_the_ones_without_moves() -> None:
    assert {S.ANSWERED, S.FAILED} == FINAL
