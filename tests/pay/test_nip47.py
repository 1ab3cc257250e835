"""The NIP-47 codec: pure functions, no network."""

from __future__ import annotations

import contextlib
import json

import nostr_sdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.pay import nip47, nip47_params


def test_kinds_and_codes_match_the_spec() -> None:
    assert (nip47.INFO_KIND, nip47.REQUEST_KIND, nip47.RESPONSE_KIND) == (13194, 23194, 23195)
    assert (nip47.NOTIFICATION_KIND_NIP04, nip47.NOTIFICATION_KIND_NIP44) == (23196, 23197)
    assert {
        "RATE_LIMITED",
        "NOT_IMPLEMENTED",
        "INSUFFICIENT_BALANCE",
        "QUOTA_EXCEEDED",
        "RESTRICTED",
        "UNAUTHORIZED",
        "INTERNAL",
        "OTHER",
        "PAYMENT_FAILED",
        "NOT_FOUND",
    } <= nip47.ERROR_CODES
    # Every variant nostr-sdk may print maps back to a wire code.
    assert set(nip47.SDK_ERROR_VARIANTS.values()) <= nip47.ERROR_CODES


def test_parse_request() -> None:
    request = nip47.parse_request('{"method":"pay_invoice","params":{"invoice":"lnbcrt1","amount":5}}')
    assert request == nip47.NwcRequest("pay_invoice", {"invoice": "lnbcrt1", "amount": 5})
    # get_balance / get_info carry nothing; some clients leave params out or send null.
    assert nip47.parse_request('{"method":"get_balance"}').params == {}
    assert nip47.parse_request('{"method":"get_info","params":null}').params == {}


@pytest.mark.parametrize(
    ("plaintext", "complaint"),
    [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"get_balance"', "must be a JSON object"),
        ('{"params": {}}', "'method'"),
        ('{"method": 7, "params": {}}', "'method'"),
        ('{"method": "", "params": {}}', "'method'"),
        ('{"method": "get_balance", "params": [1]}', "'params' must be an object"),
        ('{"method": "get_balance", "params": "x"}', "'params' must be an object"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_requests_say_what_is_wrong(plaintext: str, complaint: str) -> None:
    with pytest.raises(MalformedEvent, match=complaint):
        nip47.parse_request(plaintext)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_request_is_total_on_any_text(text: str) -> None:
    with contextlib.suppress(MalformedEvent):
        nip47.parse_request(text)
    assert isinstance(nip47.result_type_for(text), str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["method", "params", "id", "x"]), json_values))
def test_parse_request_is_total_on_any_json_object(payload: dict[str, object]) -> None:
    text = json.dumps(payload)
    try:
        request = nip47.parse_request(text)
    except MalformedEvent:
        return
    assert request.method == payload["method"]
    assert isinstance(request.params, dict)
    # Readers of typed params are total too.
    for read in (
        lambda: nip47_params.param_amount(request.params, required=False),
        lambda: nip47_params.param_str(request.params, "id"),
        lambda: nip47_params.param_hex32(request.params, "x"),
        lambda: nip47_params.param_int(request.params, "x", minimum=1, maximum=10),
    ):
        with contextlib.suppress(MalformedEvent):
            read()


def test_response_json_shapes() -> None:
    ok = json.loads(nip47.response_json("get_balance", {"balance": 4242}))
    assert ok == {"result_type": "get_balance", "error": None, "result": {"balance": 4242}}
    failed = json.loads(nip47.response_json("pay_invoice", error=("PAYMENT_FAILED", "invoice expired")))
    assert failed == {
        "result_type": "pay_invoice",
        "error": {"code": "PAYMENT_FAILED", "message": "invoice expired"},
        "result": None,
    }
    with pytest.raises(ValueError):
        nip47.response_json("get_balance")
    with pytest.raises(ValueError):
        nip47.response_json("get_balance", {"balance": 1}, ("OTHER", "both"))


def test_response_round_trip_and_malformed_responses() -> None:
    parsed = nip47.parse_response(nip47.response_json("pay_invoice", error=("NOT_FOUND", "no such invoice")))
    assert parsed == nip47.NwcResponse("pay_invoice", None, nip47.NwcError("NOT_FOUND", "no such invoice"))
    assert nip47.parse_response(nip47.response_json("get_balance", {"balance": 1})).result == {"balance": 1}
    for bad in (
        "[]",
        '{"result": {}}',
        '{"result_type": "x", "result": null, "error": null}',
        '{"result_type": "x", "result": 5}',
        '{"result_type": "x", "error": {"message": "no code"}}',
    ):
        with pytest.raises(MalformedEvent):
            nip47.parse_response(bad)


def test_notification_json_round_trip() -> None:
    body = {"type": "incoming", "amount": 1234}
    text = nip47.notification_json(nip47.PAYMENT_RECEIVED, body)
    assert json.loads(text) == {"notification_type": "payment_received", "notification": body}
    assert nip47.parse_notification(text) == nip47.NwcNotification("payment_received", body)
    with pytest.raises(MalformedEvent):
        nip47.parse_notification('{"notification_type": "payment_received"}')


def test_transaction_object_leaves_out_absent_fields() -> None:
    transaction = nip47.Transaction(
        type=nip47.INCOMING,
        state=nip47.PENDING,
        invoice="lnbcrt12340p1...",
        description="job",
        description_hash=None,
        preimage=None,
        payment_hash="ab" * 32,
        amount=1234,
        fees_paid=0,
        created_at=1_700_000_000,
        expires_at=1_700_003_600,
        settled_at=None,
    )
    assert json.loads(nip47.transaction_json(transaction)) == {
        "type": "incoming",
        "state": "pending",
        "invoice": "lnbcrt12340p1...",
        "description": "job",
        "payment_hash": "ab" * 32,
        "amount": 1234,
        "fees_paid": 0,
        "created_at": 1_700_000_000,
        "expires_at": 1_700_003_600,
    }


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({}, "required"),
        ({"amount": True}, "integer number of millisatoshis"),
        ({"amount": 1.5}, "integer number of millisatoshis"),
        ({"amount": "1000"}, "integer number of millisatoshis"),
        ({"amount": 0}, "between 1 and"),
        ({"amount": -5}, "between 1 and"),
        ({"amount": nip47.MAX_AMOUNT_MSATS + 1}, "between 1 and"),
    ],
)
def test_param_amount_refuses_anything_but_positive_msats(params: dict[str, object], complaint: str) -> None:
    with pytest.raises(MalformedEvent, match=complaint):
        nip47_params.param_amount(params)


def test_param_readers() -> None:
    assert nip47_params.param_amount({"amount": 1234}) == 1234
    assert nip47_params.param_amount({}, required=False) is None
    assert nip47_params.param_int({}, "expiry", minimum=1, maximum=10, default=3) == 3
    assert nip47_params.param_int({"expiry": 10}, "expiry", minimum=1, maximum=10) == 10
    with pytest.raises(MalformedEvent, match="between 1 and 10"):
        nip47_params.param_int({"expiry": 0}, "expiry", minimum=1, maximum=10)
    with pytest.raises(MalformedEvent, match="must be an integer"):
        nip47_params.param_int({"expiry": False}, "expiry", minimum=0, maximum=10)
    assert nip47_params.param_str({"invoice": "lnbcrt1"}, "invoice", required=True) == "lnbcrt1"
    with pytest.raises(MalformedEvent, match="'invoice' is required"):
        nip47_params.param_str({}, "invoice", required=True)
    with pytest.raises(MalformedEvent, match="must be a string"):
        nip47_params.param_str({"invoice": 5}, "invoice")
    with pytest.raises(MalformedEvent, match="bytes"):
        nip47_params.param_str({"description": "é" * 400}, "description", max_bytes=639)
    with pytest.raises(MalformedEvent, match="valid Unicode"):
        nip47_params.param_str({"description": "\ud800"}, "description")
    assert nip47_params.param_hex32({"payment_hash": "AB" * 32}, "payment_hash") == "ab" * 32
    with pytest.raises(MalformedEvent, match="64 hex digits"):
        nip47_params.param_hex32({"payment_hash": "zz" * 32}, "payment_hash")


def test_request_encryption_and_expiration_tags() -> None:
    assert nip47.request_encryption([("p", "x")]) == nip47.NIP04
    assert nip47.request_encryption([("encryption", "nip44_v2")]) == nip47.NIP44_V2
    assert nip47.request_encryption([("encryption", "nip04 nip44_v2")]) == nip47.NIP44_V2
    assert nip47.request_encryption([("encryption", "nip04")]) == nip47.NIP04
    assert nip47.request_encryption([("encryption", "rot13")]) == "rot13"
    assert not nip47.is_expired([("p", "x")], now=100)
    assert not nip47.is_expired([("expiration", "101")], now=100)
    assert nip47.is_expired([("expiration", "100")], now=100)
    # An expiration that cannot be read is treated as passed: the request is not run.
    assert nip47.is_expired([("expiration", "soon")], now=100)
    assert nip47.is_expired([("expiration",)], now=100)


def test_info_event_parts() -> None:
    content = nip47.info_content(["pay_invoice", "get_balance"], ["payment_received"])
    assert content == "pay_invoice get_balance notifications"
    assert nip47.info_content(["get_balance"], []) == "get_balance"
    assert nip47.info_tags(["payment_received", "payment_sent"], ["nip04", "nip44_v2"]) == [
        ["encryption", "nip04 nip44_v2"],
        ["notifications", "payment_received payment_sent"],
    ]


def test_sdk_error_code_reads_the_clients_error_text() -> None:
    assert nip47.sdk_error_code("invoice expired [PaymentFailed]") == "PAYMENT_FAILED"
    assert nip47.sdk_error_code("insufficient balance: 5 msats [InsufficientBalance]") == "INSUFFICIENT_BALANCE"
    assert nip47.sdk_error_code("response not received") is None
    assert nip47.sdk_error_code("odd [Whatever]") is None
    # str() of the client's error is the quoted text.
    assert nip47.sdk_error_code("'invoice expired [PaymentFailed]'") == "PAYMENT_FAILED"


def test_sdk_error_text_unquotes_the_clients_error() -> None:
    error = nostr_sdk.NostrSdkError.Generic('it\'s "paid" [PaymentFailed]')
    assert str(error) != 'it\'s "paid" [PaymentFailed]'
    assert nip47.sdk_error_text(error) == 'it\'s "paid" [PaymentFailed]'
    assert nip47.sdk_error_text(ValueError("plain")) == "plain"
