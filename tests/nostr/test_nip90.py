"""NIP-90 codec: round trips with real nostr-sdk keys and signatures, encryption, strictness.

Pure: no relay, no network. Events are signed with ``nostr_sdk.Keys.generate()`` and read
back through :func:`from_sdk`, which checks the id and signature.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import nostr_sdk
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.events import RawEvent, from_sdk, sign
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import (
    FEEDBACK_KIND,
    NONCE_TAG,
    STATUSES,
    TEXT_GENERATION,
    JobFeedback,
    JobInput,
    JobRequest,
    JobResult,
    deletion_tags,
)
from tests.nostr.signed import hex_of, signed

HEX_A = "a" * 64
HEX_B = "b" * 64
SECRET_PROMPT = "the-secret-prompt-zebra-4711"
SECRET_PARAM = "secret-param-value-okapi-9"


def raw(kind: int, tags: list[list[str]], content: str = "", pubkey: str = HEX_A) -> RawEvent:
    return RawEvent(
        id=HEX_B, pubkey=pubkey, kind=kind, created_at=1, tags=tuple(tuple(t) for t in tags), content=content
    )


# --------------------------------------------------------------------------- round trips


def test_job_request_round_trip(customer: Any, provider: Any) -> None:
    original = JobRequest(
        inputs=(
            JobInput("What is 2+2?"),
            JobInput("https://example.com/doc.txt", "url", "wss://relay.example", "source"),
            JobInput(HEX_A, "event", "wss://other.example", ""),
            JobInput("previous answer", "text", "", "chat"),
        ),
        kind=TEXT_GENERATION,
        params=(("model", "llama3"), ("max_tokens", "64"), ("temperature", "0.2")),
        output="text/plain",
        bid_msats=21_000,
        relays=("wss://relay.one", "wss://relay.two"),
        providers=(hex_of(provider), HEX_A),
        nonce="0123456789abcdef",
    )
    event = original.to_event(customer)
    parsed_raw = signed(event)
    parsed = JobRequest.from_event(parsed_raw)

    assert parsed.id == event.id().to_hex() == parsed_raw.id
    assert parsed.customer == hex_of(customer)
    assert parsed.created_at == event.created_at().as_secs()
    assert parsed.event_json == event.as_json()
    assert json.loads(parsed.event_json)["id"] == parsed.id
    assert parsed == dataclasses.replace(
        original, id=parsed.id, customer=parsed.customer, created_at=parsed.created_at, event_json=parsed.event_json
    )


def test_job_request_minimal_round_trip(customer: Any) -> None:
    original = JobRequest(inputs=(JobInput("hi"),), kind=5999)
    parsed = JobRequest.from_event(signed(original.to_event(customer)))
    assert parsed.inputs == (JobInput("hi", "text", "", ""),)
    assert (parsed.kind, parsed.params, parsed.output, parsed.bid_msats) == (5999, (), None, None)
    assert (parsed.relays, parsed.providers, parsed.encrypted, parsed.nonce) == ((), (), False, "")


def test_job_request_wire_tags(customer: Any, provider: Any) -> None:
    """The tags follow NIP-90: one relays tag with many urls, param triples, i tags with type."""
    job = JobRequest(
        inputs=(JobInput("hello"),),
        params=(("model", "m"),),
        output="text/plain",
        bid_msats=5,
        relays=("wss://a", "wss://b"),
        providers=(hex_of(provider),),
        nonce="n1",
    )
    tags = [list(t) for t in signed(job.to_event(customer)).tags]
    assert ["i", "hello", "text"] in tags
    assert ["param", "model", "m"] in tags
    assert ["output", "text/plain"] in tags
    assert ["bid", "5"] in tags
    assert ["relays", "wss://a", "wss://b"] in tags
    assert ["p", hex_of(provider)] in tags
    assert [NONCE_TAG, "n1"] in tags


def test_job_request_rejects_wrong_kind_when_signing(customer: Any) -> None:
    for kind in (4999, 6000, 1):
        with pytest.raises(ValueError):
            JobRequest(inputs=(JobInput("x"),), kind=kind).to_event(customer)


def test_job_result_round_trip(customer: Any, provider: Any) -> None:
    request_json = json.dumps({"id": HEX_A, "kind": 5050, "tags": [["i", "hi", "text"]]})
    original = JobResult(
        request_id=HEX_A,
        customer=hex_of(customer),
        content="4",
        kind=6050,
        request_json=request_json,
        inputs=(JobInput("hi"), JobInput("https://x", "url", "wss://r", "m")),
        amount_msats=1_000,
        bolt11="lnbc10n1fakeinvoice",
        relay_hint="wss://relay.hint",
        model="llama3",
        prompt_tokens=12,
        completion_tokens=3,
        finish_reason="stop",
    )
    event = original.to_event(provider)
    parsed = JobResult.from_event(signed(event))
    assert parsed.id == event.id().to_hex()
    assert parsed.provider == hex_of(provider)
    assert parsed.created_at == event.created_at().as_secs()
    assert parsed == dataclasses.replace(original, id=parsed.id, provider=parsed.provider, created_at=parsed.created_at)


def test_job_result_minimal_and_amount_without_invoice(customer: Any, provider: Any) -> None:
    original = JobResult(request_id=HEX_A, customer=hex_of(customer), content="", amount_msats=0)
    parsed = JobResult.from_event(signed(original.to_event(provider)))
    assert parsed.amount_msats == 0
    assert parsed.bolt11 is None
    assert (parsed.model, parsed.prompt_tokens, parsed.completion_tokens, parsed.finish_reason) == (None,) * 4
    assert (parsed.request_json, parsed.inputs, parsed.relay_hint) == (None, (), "")


def test_job_result_rejects_wrong_kind_when_signing(provider: Any) -> None:
    with pytest.raises(ValueError):
        JobResult(request_id=HEX_A, customer=HEX_B, content="x", kind=5050).to_event(provider)


@pytest.mark.parametrize("status", STATUSES)
def test_job_feedback_round_trip_every_status(status: str, customer: Any, provider: Any) -> None:
    original = JobFeedback(
        request_id=HEX_A,
        customer=hex_of(customer),
        status=status,
        extra=f"extra info for {status}",
        amount_msats=2_500,
        bolt11="lnbc25n1fakeinvoice",
        content=f"content for {status}",
    )
    event = original.to_event(provider)
    raw_event = signed(event)
    assert raw_event.kind == FEEDBACK_KIND
    parsed = JobFeedback.from_event(raw_event)
    assert parsed == dataclasses.replace(
        original, id=event.id().to_hex(), provider=hex_of(provider), created_at=raw_event.created_at
    )


@pytest.mark.parametrize("status", STATUSES)
def test_job_feedback_round_trip_bare(status: str, customer: Any, provider: Any) -> None:
    original = JobFeedback(request_id=HEX_A, customer=hex_of(customer), status=status)
    parsed = JobFeedback.from_event(signed(original.to_event(provider)))
    assert (parsed.status, parsed.extra, parsed.amount_msats, parsed.bolt11, parsed.content) == (
        status,
        "",
        None,
        None,
        "",
    )


def test_job_feedback_rejects_unknown_status_when_signing(provider: Any) -> None:
    with pytest.raises(ValueError):
        JobFeedback(request_id=HEX_A, customer=HEX_B, status="done").to_event(provider)


def test_from_sdk_rejects_a_tampered_event(customer: Any) -> None:
    event = JobRequest(inputs=(JobInput("hi"),)).to_event(customer)
    data = json.loads(event.as_json())
    data["content"] = "tampered"
    with pytest.raises(MalformedEvent):
        from_sdk(nostr_sdk.Event.from_json(json.dumps(data)))


# --------------------------------------------------------------------------- encryption


def _secret_job(provider_hex: str) -> JobRequest:
    return JobRequest(
        inputs=(JobInput(SECRET_PROMPT), JobInput("second secret input", "text", "wss://r", "chat")),
        params=(("model", SECRET_PARAM), ("max_tokens", "77")),
        output="text/plain",
        bid_msats=3_000,
        relays=("wss://relay.one",),
        providers=(provider_hex,),
        encrypted=True,
        nonce="feedface",
    )


def test_encrypted_request_hides_inputs_and_params(customer: Any, provider: Any) -> None:
    event = _secret_job(hex_of(provider)).to_event(customer)
    raw_event = signed(event)
    names = {t[0] for t in raw_event.tags}
    assert "i" not in names
    assert "param" not in names
    # The clear tags are what a provider needs before decrypting (the nonce is random and reveals nothing).
    assert names <= {"p", "encrypted", "bid", "output", "relays", NONCE_TAG}, names
    assert {"p", "encrypted", "bid", "output", "relays"} <= names
    assert raw_event.value("p") == hex_of(provider)
    assert SECRET_PROMPT not in raw_event.json
    assert SECRET_PARAM not in raw_event.json
    assert "second secret input" not in raw_event.json
    assert SECRET_PROMPT not in event.as_json()


def test_encrypted_request_decrypts_for_the_provider(customer: Any, provider: Any) -> None:
    original = _secret_job(hex_of(provider))
    raw_event = signed(original.to_event(customer))
    parsed = JobRequest.from_event(raw_event, provider)
    assert parsed.encrypted
    assert parsed.inputs == original.inputs
    assert parsed.params == original.params
    assert parsed == dataclasses.replace(
        original,
        id=raw_event.id,
        customer=hex_of(customer),
        created_at=raw_event.created_at,
        event_json=raw_event.json,
    )


def test_encrypted_request_fails_for_others(customer: Any, provider: Any, stranger: Any) -> None:
    raw_event = signed(_secret_job(hex_of(provider)).to_event(customer))
    with pytest.raises(MalformedEvent):
        JobRequest.from_event(raw_event, stranger)
    with pytest.raises(MalformedEvent):
        JobRequest.from_event(raw_event)  # no key at all


def test_nip04_encrypted_request_is_accepted(customer: Any, provider: Any) -> None:
    hidden = [["i", SECRET_PROMPT, "text"], ["param", "max-tokens", "9"]]
    content = customer.nip04_encrypt(provider.public_key(), json.dumps(hidden))
    event = sign(5050, content, [["p", hex_of(provider)], ["encrypted"], ["bid", "10"]], customer)
    parsed = JobRequest.from_event(signed(event), provider)
    assert parsed.encrypted
    assert parsed.inputs == (JobInput(SECRET_PROMPT),)
    assert parsed.param("max_tokens") == "9"
    assert parsed.bid_msats == 10


@pytest.mark.parametrize(
    "plaintext",
    ["not json", '{"i": "x"}', '[["i", 1]]', '["i", "x"]', "[[1, 2]]", "null"],
)
def test_encrypted_request_with_bad_plaintext(plaintext: str, customer: Any, provider: Any) -> None:
    content = customer.nip44_encrypt(provider.public_key(), plaintext)
    event = sign(5050, content, [["p", hex_of(provider)], ["encrypted"]], customer)
    with pytest.raises(MalformedEvent):
        JobRequest.from_event(signed(event), provider)


@pytest.mark.parametrize("count", [0, 2])
def test_encrypted_request_needs_exactly_one_provider(count: int, customer: Any) -> None:
    providers = tuple(hex_of(nostr_sdk.Keys.generate()) for _ in range(count))
    job = JobRequest(inputs=(JobInput("x"),), providers=providers, encrypted=True)
    with pytest.raises(ValueError):
        job.to_event(customer)


def test_encrypted_result_decrypts_for_the_customer_only(customer: Any, provider: Any, stranger: Any) -> None:
    original = JobResult(
        request_id=HEX_A,
        customer=hex_of(customer),
        content=SECRET_PROMPT,
        request_json='{"secret": true}',
        inputs=(JobInput("hidden input"),),
        encrypted=True,
        amount_msats=7,
    )
    event = original.to_event(provider)
    raw_event = signed(event)
    assert SECRET_PROMPT not in raw_event.json
    assert "hidden input" not in raw_event.json
    assert raw_event.tag("encrypted") is not None
    parsed = JobResult.from_event(raw_event, customer)
    assert parsed.content == SECRET_PROMPT
    assert parsed.encrypted
    assert parsed.amount_msats == 7
    for keys in (stranger, provider, None):
        with pytest.raises(MalformedEvent):
            JobResult.from_event(raw_event, keys)


# --------------------------------------------------------------------------- param spellings


@pytest.mark.parametrize("spelling", ["max-tokens", "max_tokens"])
def test_param_spellings(spelling: str, customer: Any) -> None:
    event = sign(5050, "", [["i", "x", "text"], ["param", spelling, "42"]], customer)
    job = JobRequest.from_event(signed(event))
    assert job.param("max_tokens") == "42"
    assert job.param("max-tokens") == "42"
    assert job.params == (("max_tokens", "42"),)


def test_param_spellings_on_a_constructed_request() -> None:
    """SRC BUG (minor): JobRequest.param() promises both spellings, but only parsing normalizes stored names."""
    job = JobRequest(inputs=(JobInput("x"),), params=(("max-tokens", "42"),))
    assert job.param("max_tokens") == "42", (
        "SRC BUG (nip90.JobRequest.param): JobRequest(params=(('max-tokens', '42'),)).param('max_tokens') "
        f"returned {job.param('max_tokens')!r}: names are normalized in from_event only, not in param()'s lookup"
    )


def test_param_missing_is_none() -> None:
    assert JobRequest(inputs=()).param("max_tokens") is None


# --------------------------------------------------------------------------- targeted malformed cases


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ([["p", HEX_A]], "no e tag"),
        ([["e", "not-hex"], ["p", HEX_A]], "non-hex e"),
        ([["e", HEX_A.upper()], ["p", HEX_A]], "upper-case hex e"),
        ([["e", HEX_A[:-1]], ["p", HEX_A]], "short e"),
        ([["e"], ["p", HEX_A]], "empty e"),
        ([["e", HEX_A]], "no p tag"),
        ([["e", HEX_A], ["p", "zz"]], "non-hex p"),
        ([["e", HEX_A], ["p", HEX_A], ["amount", "abc"]], "amount abc"),
        ([["e", HEX_A], ["p", HEX_A], ["amount", "-1"]], "amount -1"),
        ([["e", HEX_A], ["p", HEX_A], ["amount", "9" * 30]], "amount huge"),
        ([["e", HEX_A], ["p", HEX_A], ["usage", "1"]], "usage one count"),
        ([["e", HEX_A], ["p", HEX_A], ["usage", "a", "b"]], "usage not numbers"),
        ([["e", HEX_A], ["p", HEX_A], ["i", "x", "video"]], "unknown input type"),
        ([["e", HEX_A], ["p", HEX_A], ["encrypted"]], "encrypted without key"),
    ],
)
def test_malformed_results(tags: list[list[str]], why: str) -> None:
    with pytest.raises(MalformedEvent):
        JobResult.from_event(raw(6050, tags))


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ([["status", "done"], ["e", HEX_A], ["p", HEX_A]], "unknown status"),
        ([["status"], ["e", HEX_A], ["p", HEX_A]], "status without value"),
        ([["e", HEX_A], ["p", HEX_A]], "no status"),
        ([["status", "Success"], ["e", HEX_A], ["p", HEX_A]], "status case"),
        ([["status", "success"], ["p", HEX_A]], "no e"),
        ([["status", "success"], ["e", HEX_A]], "no p"),
        ([["status", "success"], ["e", "x"], ["p", HEX_A]], "non-hex e"),
        ([["status", "payment-required"], ["amount", "abc"], ["e", HEX_A], ["p", HEX_A]], "amount abc"),
        ([["status", "payment-required"], ["amount", "-1"], ["e", HEX_A], ["p", HEX_A]], "amount -1"),
        ([["status", "payment-required"], ["amount", "9" * 30], ["e", HEX_A], ["p", HEX_A]], "amount huge"),
    ],
)
def test_malformed_feedback(tags: list[list[str]], why: str) -> None:
    with pytest.raises(MalformedEvent):
        JobFeedback.from_event(raw(FEEDBACK_KIND, tags))


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ([["i", "x"], ["bid", "abc"]], "bid abc"),
        ([["i", "x"], ["bid", "-1"]], "bid -1"),
        ([["i", "x"], ["bid", "1.5"]], "bid decimal"),
        ([["i", "x"], ["bid", "9" * 30]], "bid huge"),
        ([["i", "x", "video"]], "unknown input type"),
        ([["i"]], "input without data"),
        ([["i", "x"], ["p", "not-hex"]], "p not hex"),
        ([["i", "x"], ["p", HEX_A.upper()]], "p upper-case hex"),
        ([["i", "x"], ["param", "max_tokens"]], "param without value"),
        ([["i", "x"], ["param", "", "1"]], "param without name"),
        ([["i", "x"], ["encrypted"]], "encrypted without key"),
    ],
)
def test_malformed_requests(tags: list[list[str]], why: str) -> None:
    with pytest.raises(MalformedEvent):
        JobRequest.from_event(raw(5050, tags))


def test_request_accepts_prompt_input_type_and_defaults_empty_type() -> None:
    job = JobRequest.from_event(raw(5050, [["i", "a", "prompt"], ["i", "b", ""], ["i", "c"]]))
    assert job.inputs == (JobInput("a", "prompt"), JobInput("b"), JobInput("c"))


def test_bid_of_exactly_18_digits_is_accepted() -> None:
    assert JobRequest.from_event(raw(5050, [["bid", "9" * 18]])).bid_msats == int("9" * 18)


@pytest.mark.parametrize("kind", [0, 1, 4999, 6000, 6050, 7000, 31990])
def test_request_wrong_kind(kind: int) -> None:
    with pytest.raises(MalformedEvent):
        JobRequest.from_event(raw(kind, [["i", "x"]]))


@pytest.mark.parametrize("kind", [0, 1, 5050, 5999, 7000, 31990])
def test_result_wrong_kind(kind: int) -> None:
    with pytest.raises(MalformedEvent):
        JobResult.from_event(raw(kind, [["e", HEX_A], ["p", HEX_A]]))


@pytest.mark.parametrize("kind", [0, 1, 5050, 6050, 6999, 7001])
def test_feedback_wrong_kind(kind: int) -> None:
    with pytest.raises(MalformedEvent):
        JobFeedback.from_event(raw(kind, [["status", "success"], ["e", HEX_A], ["p", HEX_A]]))


# Numbers whose characters pass str.isdigit() but are not decimal digits: int() raises a bare ValueError.
SUPERSCRIPT_TWO = "\u00b2"


def _bid(value: str) -> Any:
    return JobRequest.from_event(raw(5050, [["i", "x"], ["bid", value]]))


def _result_amount(value: str) -> Any:
    return JobResult.from_event(raw(6050, [["e", HEX_A], ["p", HEX_A], ["amount", value]]))


def _result_usage(value: str) -> Any:
    return JobResult.from_event(raw(6050, [["e", HEX_A], ["p", HEX_A], ["usage", value, "1"]]))


def _feedback_amount(value: str) -> Any:
    return JobFeedback.from_event(
        raw(FEEDBACK_KIND, [["status", "error"], ["e", HEX_A], ["p", HEX_A], ["amount", value]])
    )


@pytest.mark.parametrize("value", [SUPERSCRIPT_TWO, "\u2460"])
@pytest.mark.parametrize("parse", [_bid, _result_amount, _result_usage, _feedback_amount])
def test_unicode_digit_numbers_are_malformed(parse: Callable[[str], Any], value: str) -> None:
    """SRC BUG: nip90._msats and the usage check use str.isdigit(), which accepts '²'; int('²') raises ValueError."""
    try:
        parse(value)
    except MalformedEvent:
        return
    except Exception as exc:
        pytest.fail(
            f"SRC BUG (nip90): {parse.__name__} with {value!r} raised {type(exc).__name__}: {exc} "
            "instead of MalformedEvent (str.isdigit() accepts non-decimal digits; use isdecimal()/an ASCII regex)"
        )
    pytest.fail(f"{parse.__name__} with {value!r} was accepted")


@pytest.mark.parametrize(
    ("plaintext", "why"),
    [("1" * 5000, "an integer longer than Python's 4300-digit limit"), ("[" * 10000, "deeply nested JSON")],
)
def test_encrypted_request_with_hostile_json_is_malformed(
    plaintext: str, why: str, customer: Any, provider: Any
) -> None:
    """SRC BUG: JobRequest.from_event catches only JSONDecodeError around json.loads of the decrypted tags."""
    content = customer.nip44_encrypt(provider.public_key(), plaintext)
    raw_event = signed(sign(5050, content, [["p", hex_of(provider)], ["encrypted"]], customer))
    try:
        JobRequest.from_event(raw_event, provider)
    except MalformedEvent:
        return
    except Exception as exc:
        pytest.fail(
            f"SRC BUG (nip90.JobRequest.from_event): decrypted content of {why} raised "
            f"{type(exc).__name__} instead of MalformedEvent (json.loads raises ValueError/RecursionError, "
            "not only JSONDecodeError)"
        )
    pytest.fail(f"decrypted content of {why} was accepted")


# --------------------------------------------------------------------------- deletion


def test_deletion_tags() -> None:
    tags, content = deletion_tags(HEX_A, 5050)
    assert tags == [["e", HEX_A], ["k", "5050"]]
    assert content == ""
    tags, content = deletion_tags(HEX_B, 5999, "timed out")
    assert tags == [["e", HEX_B], ["k", "5999"]]
    assert content == "timed out"


def test_deletion_tags_sign_as_a_kind_5_event(customer: Any) -> None:
    tags, content = deletion_tags(HEX_A, 5050, "cancelled")
    parsed = signed(sign(5, content, tags, customer))
    assert parsed.kind == 5
    assert parsed.tags == (("e", HEX_A), ("k", "5050"))
    assert parsed.content == "cancelled"


# --------------------------------------------------------------------------- strictness (property tests)

KNOWN_TAG_NAMES = [
    "i",
    "param",
    "bid",
    "output",
    "relays",
    "p",
    "e",
    "encrypted",
    "amount",
    "usage",
    "status",
    "model",
    "request",
    "finish_reason",
    "d",
    "k",
    NONCE_TAG,
]
INTERESTING_VALUES = [
    "",
    HEX_A,
    HEX_B,
    "0",
    "-1",
    "1.5",
    "9" * 30,
    "abc",
    *STATUSES,
    "text",
    "url",
    "event",
    "job",
    "prompt",
    "video",
    "max_tokens",
    "max-tokens",
    "5050",
    "{}",
    "[]",
    "null",
]

tag_names = st.one_of(st.sampled_from(KNOWN_TAG_NAMES), st.text(max_size=8))
tag_values = st.one_of(
    st.text(max_size=30), st.sampled_from(INTERESTING_VALUES), st.from_regex(r"\d{1,25}", fullmatch=True)
)
tags_strategy = st.lists(
    st.one_of(
        st.tuples(tag_names).map(tuple),
        st.builds(lambda name, rest: (name, *rest), tag_names, st.lists(tag_values, max_size=4)),
        st.lists(st.text(max_size=10), max_size=5).map(tuple),
    ),
    max_size=10,
).map(tuple)
kinds = st.one_of(
    st.integers(min_value=0, max_value=40000),
    st.sampled_from([5000, 5050, 5999, 6000, 6050, 6999, FEEDBACK_KIND, 31990]),
)
pubkeys = st.one_of(st.sampled_from([HEX_A, HEX_B, ""]), st.text(max_size=70))

raw_events = st.builds(
    RawEvent,
    id=st.one_of(st.just(HEX_B), st.text(max_size=70)),
    pubkey=pubkeys,
    kind=kinds,
    created_at=st.integers(min_value=0, max_value=2**40),
    tags=tags_strategy,
    content=st.one_of(st.text(max_size=200), st.sampled_from(["", "{}", "[]", '{"name": 1}', "null", "1"])),
    json=st.text(max_size=20),
)

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
_KEYS = nostr_sdk.Keys.generate()


def only_malformed(parse: Callable[[RawEvent], Any], event: RawEvent) -> None:
    """``parse`` either returns or raises MalformedEvent; anything else fails the test."""
    try:
        parse(event)
    except MalformedEvent:
        pass
    except Exception as exc:
        pytest.fail(
            f"SRC BUG: {getattr(parse, '__qualname__', parse)} raised {type(exc).__name__}: {exc!s:.200} "
            f"instead of MalformedEvent on {event!r:.600}"
        )


@PROPERTY_SETTINGS
@given(raw_events)
@example(raw(5050, [["bid", SUPERSCRIPT_TWO]]))
def test_job_request_parse_is_total(event: RawEvent) -> None:
    only_malformed(JobRequest.from_event, event)
    only_malformed(lambda e: JobRequest.from_event(e, _KEYS), event)


@PROPERTY_SETTINGS
@given(raw_events)
@example(raw(6050, [["e", HEX_A], ["p", HEX_A], ["usage", SUPERSCRIPT_TWO, "1"]]))
def test_job_result_parse_is_total(event: RawEvent) -> None:
    only_malformed(JobResult.from_event, event)
    only_malformed(lambda e: JobResult.from_event(e, _KEYS), event)


@PROPERTY_SETTINGS
@given(
    st.builds(
        RawEvent,
        id=st.just(HEX_B),
        pubkey=st.one_of(pubkeys, st.just(hex_of(_KEYS))),
        kind=st.sampled_from([6000, 6050, 6999]),
        created_at=st.just(1),
        tags=tags_strategy.map(lambda t: (("e", HEX_A), ("p", HEX_A), ("encrypted",), *t)),
        content=st.one_of(
            st.text(max_size=200), st.from_regex(r"[A-Za-z0-9+/]{0,120}={0,2}(\?iv=[A-Za-z0-9+/=]{0,30})?")
        ),
    )
)
def test_encrypted_result_parse_is_total(event: RawEvent) -> None:
    only_malformed(lambda e: JobResult.from_event(e, _KEYS), event)


@PROPERTY_SETTINGS
@given(raw_events)
@example(raw(FEEDBACK_KIND, [["status", "error"], ["e", HEX_A], ["p", HEX_A], ["amount", SUPERSCRIPT_TWO]]))
def test_job_feedback_parse_is_total(event: RawEvent) -> None:
    only_malformed(JobFeedback.from_event, event)


@PROPERTY_SETTINGS
@given(raw_events)
@example(raw(31990, [["d", "x"], ["k", SUPERSCRIPT_TWO]]))
@example(raw(31990, [["d", "x"]], "1" * 5000))
@example(raw(31990, [["d", "x"]], "[" * 100_000))
def test_announcement_parse_is_total(event: RawEvent) -> None:
    only_malformed(Announcement.from_event, event)


@PROPERTY_SETTINGS
@given(
    inputs=st.lists(
        st.builds(
            JobInput,
            st.text(max_size=40),
            st.sampled_from(["text", "url", "event", "job", "prompt"]),
            st.text(max_size=10),
            st.sampled_from(["", "chat", "prompt"]),
        ),
        max_size=4,
    ),
    params=st.lists(
        st.tuples(st.sampled_from(["model", "max_tokens", "temperature", "seed"]), st.text(max_size=20)), max_size=4
    ),
    bid=st.one_of(st.none(), st.integers(min_value=0, max_value=10**18 - 1)),
    relays=st.lists(st.text(min_size=1, max_size=20), max_size=3),
)
def test_signed_requests_round_trip(
    inputs: list[JobInput], params: list[tuple[str, str]], bid: Any, relays: Any
) -> None:
    original = JobRequest(inputs=tuple(inputs), params=tuple(params), bid_msats=bid, relays=tuple(relays), nonce="n")
    raw_event = signed(original.to_event(_KEYS))
    parsed = JobRequest.from_event(raw_event)
    expected_inputs = tuple(dataclasses.replace(i, type=i.type or "text") for i in inputs)
    assert parsed.inputs == expected_inputs
    assert parsed.params == tuple(params)
    assert parsed.bid_msats == bid
    assert parsed.relays == tuple(relays)
