"""The provider's admission step (pure): refuse, bill or run — decided before any invoice."""

from __future__ import annotations

import nostr_sdk
import pytest
from dspy import lm15

from dspy_pylon.capabilities import Capabilities
from dspy_pylon.nostr.events import from_sdk
from dspy_pylon.nostr.nip90 import JobRequest
from dspy_pylon.route import Route
from dspy_pylon.swarm.admission import Bill, Refuse, Run, Serving, admit, cannot_run
from dspy_pylon.swarm.chat_job import chat_job

KEYS = nostr_sdk.Keys.generate()
ROUTE = Route("local", "llamacpp", "http://127.0.0.1:1", "tiny")
SERVING = Serving(
    route=ROUTE,
    models=("tiny", "big-model"),
    capabilities=Capabilities(),
    max_tokens_cap=256,
    price_msats=1_000,
    prices=(("big-model", 5_000),),
    max_unpaid=2,
)


def _job(*, model: str | None = None, bid: int | None = 10_000, config: lm15.Config | None = None) -> JobRequest:
    """A job as a provider receives it: built by the customer's codec, signed, parsed back."""
    request = lm15.Request(model="m", messages=(lm15.Message.user("hello"),), config=config or lm15.Config())
    job = chat_job(request, model=model, bid_msats=bid, relays=())
    return JobRequest.from_event(from_sdk(job.to_event(KEYS)), KEYS)


def test_a_priced_job_with_a_sufficient_bid_is_billed_its_models_price() -> None:
    assert admit(_job(), SERVING, unpaid=0) == Bill(1_000)
    assert admit(_job(model="big-model"), SERVING, unpaid=0) == Bill(5_000)


def test_a_job_without_a_bid_is_billed_the_price() -> None:
    """NIP-90's bid is optional (nostr-dvm's client never sends one): payment-required tells the price."""
    assert admit(_job(bid=None), SERVING, unpaid=0) == Bill(1_000)
    assert admit(_job(model="big-model", bid=None), SERVING, unpaid=0) == Bill(5_000)


def test_a_free_node_runs_the_job() -> None:
    free = Serving(ROUTE, ("tiny",), Capabilities(), 256)
    assert admit(_job(bid=None), free, unpaid=99) == Run()


@pytest.mark.parametrize(
    ("job", "unpaid", "why"),
    [
        (_job(bid=999), 0, "bid below price of 1000 msats"),
        (_job(model="big-model", bid=4_999), 0, "bid below price of 5000 msats"),
        (_job(), 2, "provider busy: too many unpaid invoices"),
        (_job(model="not-here"), 0, "model 'not-here' is not served here"),
    ],
)
def test_jobs_that_cannot_be_served_or_paid_are_refused_before_any_invoice(
    job: JobRequest, unpaid: int, why: str
) -> None:
    decision = admit(job, SERVING, unpaid=unpaid)
    assert isinstance(decision, Refuse) and decision.why.startswith(why)


def test_a_schema_the_backend_cannot_honour_is_refused() -> None:
    job = _job(config=lm15.Config(response_format={"type": "json_object"}))
    plain = Serving(ROUTE, ("tiny",), Capabilities(), 256)
    why = cannot_run(job, plain)
    assert why is not None and "cannot honour" in why
    assert cannot_run(job, Serving(ROUTE, ("tiny",), Capabilities(json_mode=True, response_schema=True), 256)) is None


def test_the_default_model_is_the_routes() -> None:
    assert SERVING.model_for(_job()) == "tiny"
    assert SERVING.model_for(_job(model="default")) == "tiny"
    assert SERVING.model_for(_job(model="big-model")) == "big-model"
