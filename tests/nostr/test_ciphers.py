"""Private jobs in both schemes NIP-90 peers use (NIP-44 and NIP-04): requests, results and
feedback round-trip in the request's scheme, nostr-dvm's encrypted feedback is read, and the
details of an encrypted job stay out of the clear tags.

Pure: real nostr-sdk keys, signatures and encryption; no relay.
"""

from __future__ import annotations

import json
from typing import Any

import nostr_sdk
import pytest

from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.ciphers import Cipher, cipher_of, decrypt, encrypt
from dspy_pylon.nostr.events import RawEvent, sign
from dspy_pylon.nostr.nip89 import Announcement
from dspy_pylon.nostr.nip90 import DETAILS_TAG, FEEDBACK_KIND, JobFeedback, JobInput, JobRequest, JobResult
from tests.nostr.signed import hex_of, signed

SECRET = "the-secret-prompt-zebra-4711"
ANSWER = "the-private-answer-okapi-9"
MODEL = "private-model-name-gnu-3"


@pytest.mark.parametrize("cipher", list(Cipher))
def test_the_scheme_is_told_by_the_payload(cipher: Cipher, customer: Any, provider: Any) -> None:
    payload = encrypt(customer, hex_of(provider), SECRET, cipher)
    assert cipher_of(payload) is cipher
    assert decrypt(provider, hex_of(customer), payload) == (SECRET, cipher)


@pytest.mark.parametrize("cipher", list(Cipher))
def test_a_payload_for_someone_else_is_malformed(cipher: Cipher, customer: Any, provider: Any) -> None:
    payload = encrypt(customer, hex_of(provider), SECRET, cipher)
    with pytest.raises(MalformedEvent, match=cipher.value):
        decrypt(nostr_sdk.Keys.generate(), hex_of(customer), payload)
    with pytest.raises(MalformedEvent, match="no key"):
        decrypt(None, hex_of(customer), payload)
    with pytest.raises(MalformedEvent, match="public key"):
        decrypt(provider, "not-a-key", payload)


# Long enough never to turn up by chance in hex ids, keys or ciphertext ("1234" once did, failing a full run).
AMOUNT = 987_654_321


@pytest.mark.parametrize("cipher", list(Cipher))
def test_a_private_job_round_trips_in_its_scheme(cipher: Cipher, customer: Any, provider: Any) -> None:
    """Request, result and feedback of one private job: each in the scheme the request used,
    and none of the secrets in any clear tag or content."""
    request = JobRequest(
        inputs=(JobInput(SECRET),),
        params=(("model", MODEL),),
        providers=(hex_of(provider),),
        encrypted=True,
        cipher=cipher,
    )
    request_event = signed(request.to_event(customer))
    assert cipher_of(request_event.content) is cipher
    job = JobRequest.from_event(request_event, provider)
    assert (job.cipher, job.inputs[0].data, job.param("model")) == (cipher, SECRET, MODEL)
    assert job.reply_cipher is cipher

    result = JobResult(
        request_id=job.id,
        customer=job.customer,
        content=ANSWER,
        request_json=job.event_json,
        amount_msats=AMOUNT,
        encrypted=True,
        cipher=job.reply_cipher,
        model=MODEL,
        prompt_tokens=11,
        completion_tokens=7,
        finish_reason="stop",
    )
    result_event = signed(result.to_event(provider))
    clear = json.dumps([result_event.tags, result_event.content])
    for secret in (SECRET, ANSWER, MODEL, str(AMOUNT)):
        assert secret not in clear
    names = {tag[0] for tag in result_event.tags}
    assert names == {"request", "e", "p", DETAILS_TAG, "encrypted"}  # NIP-90 keeps the request tag
    assert cipher_of(result_event.content) is cipher
    got = JobResult.from_event(result_event, customer)
    assert (got.content, got.cipher, got.model, got.amount_msats) == (ANSWER, cipher, MODEL, AMOUNT)
    assert (got.prompt_tokens, got.completion_tokens, got.finish_reason) == (11, 7, "stop")

    bill = JobFeedback(
        request_id=job.id,
        customer=job.customer,
        status="payment-required",
        extra=f"pay for {MODEL}",
        amount_msats=AMOUNT,
        bolt11="lnbcrt12340n1fake",
        content=ANSWER,
        encrypted=True,
        cipher=cipher,
    )
    bill_event = signed(bill.to_event(provider))
    assert ("status", "payment-required") in bill_event.tags  # bare, for readers that do not decrypt
    assert MODEL not in json.dumps(bill_event.tags) and str(AMOUNT) not in json.dumps(bill_event.tags)
    seen = JobFeedback.from_event(bill_event, customer)
    assert (seen.status, seen.extra, seen.amount_msats, seen.bolt11) == (
        "payment-required",
        f"pay for {MODEL}",
        AMOUNT,
        "lnbcrt12340n1fake",
    )
    assert (seen.content, seen.encrypted, seen.cipher) == (ANSWER, True, cipher)


@pytest.mark.parametrize("cipher", list(Cipher))
def test_nostr_dvm_encrypted_feedback_is_read(cipher: Cipher, customer: Any, provider: Any) -> None:
    """nostr-dvm's feedback on an encrypted job: clear tags ``encrypted``, ``p``, ``e`` only; the
    status, amount and a ``content`` tag JSON-encoded and encrypted into the content."""
    job_id = "c" * 64
    hidden = [
        ["e", job_id],
        ["alt", "NIP90 DVM task generate-text requires payment"],
        ["status", "payment-required"],
        ["amount", "21000", "lnbc210n1fake"],
        ["content", "NIP90 DVM task generate-text requires payment of min 21 Sats."],
    ]
    content = encrypt(provider, hex_of(customer), json.dumps(hidden), cipher)
    event = signed(sign(FEEDBACK_KIND, content, [["encrypted"], ["p", hex_of(customer)], ["e", job_id]], provider))
    seen = JobFeedback.from_event(event, customer)
    assert (seen.status, seen.amount_msats, seen.bolt11, seen.request_id) == (
        "payment-required",
        21000,
        "lnbc210n1fake",
        job_id,
    )
    assert seen.content.startswith("NIP90 DVM task") and seen.cipher is cipher


@pytest.mark.parametrize(
    ("plaintext", "why"),
    [("not json", "not JSON"), (json.dumps({"status": "error"}), "list of tags"), ("[[1, 2]]", "list of tags")],
)
def test_encrypted_feedback_that_is_not_tags_is_malformed(
    plaintext: str, why: str, customer: Any, provider: Any
) -> None:
    content = encrypt(provider, hex_of(customer), plaintext, Cipher.NIP44)
    event = signed(sign(FEEDBACK_KIND, content, [["encrypted"], ["p", hex_of(customer)], ["e", "c" * 64]], provider))
    with pytest.raises(MalformedEvent, match=why):
        JobFeedback.from_event(event, customer)
    with pytest.raises(MalformedEvent, match="no key"):
        JobFeedback.from_event(event)


def test_a_result_to_a_nip04_request_is_nip04(customer: Any, provider: Any) -> None:
    """What a NIP-04 customer (NIP-90's text) gets back from our provider: NIP-04 it can read."""
    from dspy import lm15

    from dspy_pylon.swarm.chat_job import job_result

    hidden = [["i", SECRET, "text"]]
    content = customer.nip04_encrypt(provider.public_key(), json.dumps(hidden))
    request_event = signed(sign(5050, content, [["p", hex_of(provider)], ["encrypted"]], customer))
    job = JobRequest.from_event(request_event, provider)
    assert job.cipher is Cipher.NIP04
    response = lm15.Response(
        id="r",
        model=MODEL,
        message=lm15.Message.assistant(ANSWER),
        finish_reason="stop",
        usage=lm15.Usage(input_tokens=3, output_tokens=2),
    )
    result_event = signed(job_result(job, response, None, MODEL, 0).to_event(provider))
    assert customer.nip04_decrypt(provider.public_key(), result_event.content) == ANSWER
    assert result_event.value("request") == request_event.json


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"encryption": ["nip44", "nip04"]}, (Cipher.NIP44, Cipher.NIP04)),
        ({"encryption": ["nip04"]}, (Cipher.NIP04,)),
        ({"encryption": "nip44"}, ()),
        ({"supportsEncryption": True, "encryptionSupported": True}, ()),  # nostr-dvm: says nothing of NIP-44
        ({}, ()),
    ],
)
def test_an_announcement_says_which_schemes_it_reads(meta: dict[str, Any], expected: tuple[Cipher, ...]) -> None:
    event = RawEvent("a" * 64, "b" * 64, 31990, 1, (("d", "x"), ("k", "5050")), json.dumps(meta))
    announced = Announcement.from_event(event)
    assert announced.encryption == expected
    assert announced.cipher is (Cipher.NIP44 if Cipher.NIP44 in expected else Cipher.NIP04)


def test_our_announcement_names_both_schemes_and_the_flags_nostr_dvm_reads(provider: Any) -> None:
    announced = Announcement("x", (5050,), encryption=(Cipher.NIP44, Cipher.NIP04))
    meta = json.loads(signed(announced.to_event(provider)).content)
    assert meta["encryption"] == ["nip44", "nip04"]
    assert meta["supportsEncryption"] is True and meta["encryptionSupported"] is True


def test_hidden_tags_cannot_redirect_feedback_to_another_job(customer: Any, provider: Any) -> None:
    """Which job and whom feedback is for come from the signed clear tags, not the hidden ones."""
    job_id, other = "c" * 64, "d" * 64
    hidden = [["e", other], ["p", "e" * 64], ["status", "error"]]
    content = encrypt(provider, hex_of(customer), json.dumps(hidden), Cipher.NIP44)
    event = signed(sign(FEEDBACK_KIND, content, [["encrypted"], ["p", hex_of(customer)], ["e", job_id]], provider))
    seen = JobFeedback.from_event(event, customer)
    assert (seen.request_id, seen.customer, seen.status) == (job_id, hex_of(customer), "error")
