"""Hostile and broken providers: nothing is accepted wrongly, nothing hangs, all is counted.

A scripted "provider" answers each job with crafted events (real signatures, real relay);
the customer must take only a valid result from the targeted provider.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import nostr_sdk
import pytest
from dspy.utils import exceptions as dspy_errors

import dspy_pylon as pylon
from dspy_pylon.errors import MalformedEvent
from dspy_pylon.nostr.events import RawEvent, from_sdk, sign
from dspy_pylon.nostr.loop import NostrLoop
from dspy_pylon.nostr.nip90 import JobFeedback, JobRequest, JobResult
from dspy_pylon.nostr.relay_client import RelayClient
from dspy_pylon.usage import pylon_data

Script = Callable[[JobRequest], list[Any]]


class ScriptedProvider:
    """Answers every job it sees with the events ``script(job)`` returns, in order."""

    def __init__(self, loop: NostrLoop, relay_url: str, keys: Any, script: Script) -> None:
        self.loop = loop
        self.keys = keys
        self.script = script
        self.jobs: list[JobRequest] = []
        self.client = loop.run(self._start(relay_url))

    async def _start(self, relay_url: str) -> RelayClient:
        client = await RelayClient((relay_url,)).start()
        await client.subscribe(
            [nostr_sdk.Filter().kind(nostr_sdk.Kind(5050)).since(nostr_sdk.Timestamp.now())], self._on
        )
        return client

    def _on(self, event: RawEvent, relay: str) -> None:
        job = JobRequest.from_event(event, self.keys)
        self.jobs.append(job)
        self.loop.loop.create_task(self._answer(job))

    async def _answer(self, job: JobRequest) -> None:
        for event in self.script(job):
            await self.client.publish(event)

    def close(self) -> None:
        self.loop.run(self.client.close())


@pytest.fixture
def scripted(relay_loop: NostrLoop, relay_url: str) -> Iterator[Callable[[Any, Script], ScriptedProvider]]:
    made: list[ScriptedProvider] = []

    def make(keys: Any, script: Script) -> ScriptedProvider:
        made.append(ScriptedProvider(relay_loop, relay_url, keys, script))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


def _result(job: JobRequest, keys: Any, content: str, **changes: Any) -> Any:
    fields = {"request_id": job.id, "customer": job.customer, "content": content, "encrypted": job.encrypted}
    return JobResult(**{**fields, **changes}).to_event(keys)


def _lm(relay_url: str, provider: Any, timeout: float = 5.0) -> pylon.PylonLM:
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,), providers=(provider,)), timeout=timeout)
    key = nostr_sdk.Keys.generate().secret_key().to_hex()
    return pylon.PylonLM.swarm(key, config, cache=False, num_retries=0)


def test_only_the_valid_result_from_the_target_is_taken(scripted: Any, relay_url: str) -> None:
    target, rogue = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()

    def script(job: JobRequest) -> list[Any]:
        other_job = "f" * 64
        return [
            _result(job, rogue, "from a stranger", encrypted=False),  # not the targeted provider
            _result(job, target, "wrong job", request_id=other_job),  # e tag is not our job
            sign(6050, "garbage", [["e", job.id], ["p", job.customer], ["usage", "x", "y"]], target),  # malformed
            sign(6051, "wrong kind", [["e", job.id], ["p", job.customer]], target),  # result kind mismatch
            JobFeedback(job.id, job.customer, "error", "fake error").to_event(rogue),  # error from a stranger
            JobFeedback(job.id, job.customer, "processing").to_event(target),
            _result(job, target, "the real answer"),
            _result(job, target, "a duplicate, too late"),
        ]

    scripted(target, script)
    lm = _lm(relay_url, target.public_key().to_hex())
    assert lm("question") == ["the real answer"]
    customer = lm.runtime.swarm().customer
    assert customer.ignored["author not a targeted provider"] == 2
    assert customer.ignored["wrong result kind"] == 1
    assert sum(v for k, v in customer.ignored.items() if k.startswith("malformed")) == 1

    # The stray e tag belongs to no open job; the late duplicate came after the job ended
    # (queued before it ended, or routed after).
    def late() -> int:
        return customer.ignored["not one of our open jobs"] + customer.ignored["event after the job ended"]

    deadline = time.monotonic() + 5
    while late() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert late() == 2
    assert lm("question two") == ["the real answer"]  # still healthy


def test_error_feedback_from_the_target_fails_fast(scripted: Any, relay_url: str) -> None:
    target = nostr_sdk.Keys.generate()
    scripted(target, lambda job: [JobFeedback(job.id, job.customer, "error", "out of memory").to_event(target)])
    lm = _lm(relay_url, target.public_key().to_hex(), timeout=20)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="out of memory"):
        lm("question")
    assert time.monotonic() - started < 3


def test_a_provider_that_ignores_a_schema_job_is_refused_not_believed(scripted: Any, relay_url: str) -> None:
    """A provider that does not read pylon.chat.v2 answers free text where JSON was asked:
    the customer refuses that result (the provider's error), never hands it to the adapter."""
    target = nostr_sdk.Keys.generate()
    scripted(target, lambda job: [_result(job, target, "Sure! Here is some text, not JSON")])
    lm = _lm(relay_url, target.public_key().to_hex(), timeout=20)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="does not answer the job") as info:
        lm("json please", response_format={"type": "json_object"})
    assert isinstance(info.value.__cause__, pylon.JobFailed)
    assert time.monotonic() - started < 3  # one target: its unusable answer is final, no timeout
    customer = lm.runtime.swarm().customer
    assert customer.ignored["result that does not answer the job"] == 1
    assert customer.reputation is not None


def test_silent_provider_times_out_within_a_second_of_the_timeout(scripted: Any, relay_url: str) -> None:
    target = nostr_sdk.Keys.generate()
    scripted(target, lambda job: [JobFeedback(job.id, job.customer, "processing").to_event(target)])
    lm = _lm(relay_url, target.public_key().to_hex(), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMTimeoutError, match="processing from"):
        lm("question")
    assert time.monotonic() - started < 2.0
    stats = lm.runtime.swarm().reputation.stats(target.public_key().to_hex())
    assert stats.timeouts == 1 and stats.score < 0.5


def test_broadcast_takes_the_first_valid_result_from_anyone(scripted: Any, relay_url: str) -> None:
    first = nostr_sdk.Keys.generate()
    scripted(first, lambda job: [_result(job, first, "first!")])
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=5)
    lm = pylon.PylonLM.swarm(nostr_sdk.Keys.generate().secret_key().to_hex(), config, cache=False)
    assert lm("anyone") == ["first!"]
    assert pylon_data(lm.history[-1]["response"].provider_data)["provider"] == first.public_key().to_hex()


def test_tampered_event_fails_signature_check() -> None:
    keys = nostr_sdk.Keys.generate()
    event = JobResult("a" * 64, "b" * 64, "honest").to_event(keys)
    data = json.loads(event.as_json())
    data["content"] = "tampered"
    tampered = nostr_sdk.Event.from_json(json.dumps(data))
    with pytest.raises(MalformedEvent, match="does not verify"):
        from_sdk(tampered)


def test_broadcast_waits_past_one_providers_error_for_anothers_result(scripted: Any, relay_url: str) -> None:
    failing, working = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    scripted(failing, lambda job: [JobFeedback(job.id, job.customer, "error", "busy").to_event(failing)])
    scripted(working, lambda job: [_result(job, working, "still answered")])
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=5)
    lm = pylon.PylonLM.swarm(nostr_sdk.Keys.generate().secret_key().to_hex(), config, cache=False)
    assert lm("anyone") == ["still answered"]


def test_broadcast_with_only_errors_says_so_at_the_timeout(scripted: Any, relay_url: str) -> None:
    failing = nostr_sdk.Keys.generate()
    scripted(failing, lambda job: [JobFeedback(job.id, job.customer, "error", "no GPU").to_event(failing)])
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,)), timeout=1)
    lm = pylon.PylonLM.swarm(nostr_sdk.Keys.generate().secret_key().to_hex(), config, cache=False, num_retries=0)
    with pytest.raises(dspy_errors.LMProviderError, match="no GPU"):
        lm("anyone")


def test_a_set_of_targets_fails_once_all_of_them_refused(scripted: Any, relay_url: str) -> None:
    a, b = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
    for keys in (a, b):
        scripted(keys, lambda job, k=keys: [JobFeedback(job.id, job.customer, "error", "nope").to_event(k)])
    targets = (a.public_key().to_hex(), b.public_key().to_hex())
    config = pylon.PylonConfig(venue=pylon.Swarm(relays=(relay_url,), providers=targets), timeout=20)
    lm = pylon.PylonLM.swarm(nostr_sdk.Keys.generate().secret_key().to_hex(), config, cache=False, num_retries=0)
    started = time.monotonic()
    with pytest.raises(dspy_errors.LMProviderError, match="nope"):
        lm("both of you")
    assert time.monotonic() - started < 5
