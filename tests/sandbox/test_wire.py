"""Sandbox jobs as Nostr data (pure): the offer and its price, the request and result events, a
response cut to fit a relay, the customer's verification of every claim a result makes; the
provider settings' ``[sandbox]`` table; the ReAct tool."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import dspy
import nostr_sdk
import pytest

import dspy_pylon as pylon
from dspy_pylon.nostr.events import from_sdk
from dspy_pylon.nostr.nip90 import JobInput, JobRequest
from dspy_pylon.sandbox import (
    SANDBOX_REQUEST_KIND,
    NetworkPolicy,
    SandboxOffer,
    SandboxProfile,
    SandboxRunRequest,
    SandboxRunResponse,
    SandboxStatus,
    as_tool,
    verify_response,
)
from dspy_pylon.sandbox.wire import read_result, read_sandbox_job, sandbox_job, sandbox_result, shrinking
from dspy_pylon.swarm.provider_settings import load_provider_file

KEYS = nostr_sdk.Keys.generate()
REQUEST = SandboxRunRequest(commands=[{"cmd": "echo hi"}, {"cmd": "exit 3"}], artifacts=("out.txt",))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _response(provider: str = "ab" * 32, **changes: object) -> SandboxRunResponse:
    run = {
        "cmd": "echo hi",
        "exit_code": 0,
        "duration_ms": 3,
        "stdout_sha256": sha(b"hi\n"),
        "stderr_sha256": sha(b""),
        "stdout_bytes": 3,
        "stderr_bytes": 0,
        "stdout_preview": "hi\n",
    }
    bare = SandboxRunResponse.model_validate(
        {
            "schema": "oa.sandbox_run.v1",
            "status": "failed",
            "runs": [
                run,
                {
                    **run,
                    "cmd": "exit 3",
                    "exit_code": 3,
                    "stdout_sha256": sha(b""),
                    "stdout_bytes": 0,
                    "stdout_preview": "",
                },
            ],
            "artifacts": [
                {
                    "path": "out.txt",
                    "sha256": sha(b"x"),
                    "size_bytes": 1,
                    "content_b64": base64.b64encode(b"x").decode(),
                }
            ],
            "evidence": {"wall_ms": 9, "failed_command": 1},
            **changes,
        }
    )
    provenance = {
        "input_sha256": REQUEST.sha256,
        "output_sha256": bare.output_sha256,
        "provider_pubkey": provider,
        "executed_at": 1,
        "duration_ms": 9,
    }
    return bare.model_copy(update={"provenance": pylon.sandbox.Provenance(**provenance)})


def test_the_price_is_base_plus_cpu_seconds_of_what_the_job_may_use() -> None:
    offer = SandboxOffer(base_msats=1000, msats_per_cpu_second=5)
    assert offer.price(SandboxRunRequest(commands=[{"cmd": "x"}])) == 1000 + 5 * 1 * 60
    medium = SandboxRunRequest(commands=[{"cmd": "x"}], profile="medium")
    assert offer.price(medium) == 1000 + 5 * 2 * 120
    small = SandboxRunRequest(
        commands=[{"cmd": "x"}], resources={"cpus": 1, "memory_mb": 256, "timeout_secs": 5, "disk_mb": 64}
    )
    assert offer.price(small) == 1025
    with pytest.raises(pylon.SandboxError):
        SandboxOffer(base_msats=-1)


def test_the_offer_refuses_what_it_does_not_sell() -> None:
    offer = SandboxOffer(profiles=(SandboxProfile.SMALL,))
    assert offer.refusal(REQUEST) is None
    assert "medium" in (offer.refusal(SandboxRunRequest(commands=[{"cmd": "x"}], profile="medium")) or "")
    assert "full" in (offer.refusal(SandboxRunRequest(commands=[{"cmd": "x"}], network="full")) or "")
    git = SandboxRunRequest(commands=[{"cmd": "x"}], repo={"kind": "git", "url": "https://h/r.git"})
    assert "tarball" in (offer.refusal(git) or "")
    assert SandboxOffer(allow_git=True).refusal(git) is None


def test_an_offer_round_trips_through_its_announcement_meta_and_garbage_is_none() -> None:
    offer = SandboxOffer(base_msats=7, msats_per_cpu_second=2, networks=(NetworkPolicy.NONE,), allow_git=True)
    assert SandboxOffer.from_meta(json.loads(json.dumps(offer.to_meta()))) == offer
    v1 = "oa.sandbox_run.v1"
    junk: list[object] = [None, [], {"schema": "other"}, {"schema": v1, "profiles": ["huge"]}]
    junk += [{"schema": v1, "base_msats": -5}, {"schema": v1, "profiles": []}]
    for meta in junk:
        assert SandboxOffer.from_meta(meta) is None


def test_a_job_carries_the_request_as_canonical_json_and_reads_back() -> None:
    job = sandbox_job(REQUEST, bid_msats=900, relays=("ws://r",), nonce="n1")
    event = job.to_event(KEYS)
    parsed = JobRequest.from_event(from_sdk(event))
    assert parsed.kind == SANDBOX_REQUEST_KIND and parsed.output == "application/json"
    assert parsed.param("schema") == "oa.sandbox_run.v1" and parsed.bid_msats == 900
    assert read_sandbox_job(parsed) == REQUEST
    assert json.loads(parsed.inputs[0].data) == REQUEST.to_json_dict()


@pytest.mark.parametrize(
    ("job", "match"),
    [
        (JobRequest(inputs=(JobInput("{}"),), kind=5050), "not a sandbox job"),
        (JobRequest(inputs=(), kind=SANDBOX_REQUEST_KIND), "exactly one text input"),
        (JobRequest(inputs=(JobInput("not json"),), kind=SANDBOX_REQUEST_KIND), "not JSON"),
        (JobRequest(inputs=(JobInput('{"commands": []}'),), kind=SANDBOX_REQUEST_KIND), "commands"),
        (JobRequest(inputs=(JobInput("[" * 100_000),), kind=SANDBOX_REQUEST_KIND), "not JSON"),
        (JobRequest(inputs=(JobInput("{}"),), kind=SANDBOX_REQUEST_KIND, params=(("schema", "v9"),)), "schema"),
    ],
)
def test_a_malformed_sandbox_job_is_a_malformed_event(job: JobRequest, match: str) -> None:
    with pytest.raises(pylon.MalformedEvent, match=match):
        read_sandbox_job(job)


def test_a_result_carries_the_response_and_verifies() -> None:
    job = sandbox_job(REQUEST, bid_msats=None)
    job = JobRequest.from_event(from_sdk(job.to_event(KEYS)))
    provider = nostr_sdk.Keys.generate()
    response = _response(provider.public_key().to_hex())
    result = sandbox_result(job, response, 123)
    assert result.kind == SANDBOX_REQUEST_KIND + 1000 and result.amount_msats == 123
    assert read_result(result.content) == response
    verified = verify_response(REQUEST, response, provider=provider.public_key().to_hex())
    assert verified.ok, verified.problems
    assert {"provenance", "runs[0].stdout", "artifacts[out.txt]"} <= set(verified.checked)


def test_every_forged_claim_is_caught() -> None:
    good = _response()
    key = "ab" * 32

    def problems(response: SandboxRunResponse, request: SandboxRunRequest = REQUEST, provider: str = key) -> str:
        return "; ".join(verify_response(request, response, provider=provider).problems)

    assert problems(good) == ""
    assert "another provider" in problems(good, provider="cd" * 32)
    other = SandboxRunRequest(commands=[{"cmd": "echo hi"}, {"cmd": "exit 3"}])
    assert "another request" in problems(good, other)
    run0 = good.runs[0]
    forged_out = good.model_copy(update={"runs": (run0.model_copy(update={"stdout_preview": "ok\n"}), good.runs[1])})
    assert "does not hash" in problems(forged_out)  # (and its output hash no longer matches either)
    longer = good.model_copy(update={"runs": (run0.model_copy(update={"stdout_preview": "hi there\n"}), good.runs[1])})
    assert "longer than its byte count" in problems(longer)
    art = good.artifacts[0].model_copy(update={"content_b64": base64.b64encode(b"y").decode()})
    assert "out.txt does not hash" in problems(good.model_copy(update={"artifacts": (art,)}))
    assert "not what its evidence shows" in problems(good.model_copy(update={"status": SandboxStatus.SUCCESS}))
    swapped = good.model_copy(update={"runs": (good.runs[1], good.runs[0])})
    assert "not our command 0" in problems(swapped)
    assert "no provenance" in problems(good.model_copy(update={"provenance": None}))
    skipped = good.model_copy(update={"runs": good.runs[:1]})
    assert "command 1 failed, yet 1 commands ran" in problems(skipped)
    evidence = good.evidence.model_copy(update={"failed_command": None})
    passed = good.model_copy(update={"status": SandboxStatus.SUCCESS, "evidence": evidence})
    assert "command 1 exited 3, yet the job went on as if it passed" in problems(passed)
    one = good.model_copy(update={"status": SandboxStatus.SUCCESS, "runs": good.runs[:1], "evidence": evidence})
    assert "1 of 2 commands ran, yet nothing stopped the job" in problems(one)
    stray = good.artifacts[0].model_copy(update={"path": "secret.key"})
    assert "matches none of our patterns" in problems(good.model_copy(update={"artifacts": (stray,)}))


@pytest.mark.parametrize("output", [b"\xff\xfe binary", b"ok \xf0\x9f\x98", b"a" + "\u00e9".encode() * 2048])
def test_honest_output_that_is_not_clean_utf8_is_unverifiable_not_forged(output: bytes) -> None:
    from dspy_pylon.sandbox.outcome import CappedOutput, command_run

    out, err = CappedOutput(1 << 20), CappedOutput(1 << 20)
    out.feed(output)
    run = command_run("echo hi", exit_code=0, duration_ns=1, stdout=out, stderr=err)
    request = SandboxRunRequest(commands=[{"cmd": "echo hi"}])
    bare = SandboxRunResponse.model_validate(
        {"schema": "oa.sandbox_run.v1", "status": "success", "runs": [run.model_dump()], "evidence": {"wall_ms": 1}}
    )
    provenance = pylon.sandbox.Provenance(
        input_sha256=request.sha256,
        output_sha256=bare.output_sha256,
        provider_pubkey="ab" * 32,
        executed_at=1,
        duration_ms=1,
    )
    verified = verify_response(request, bare.model_copy(update={"provenance": provenance}), provider="ab" * 32)
    assert verified.ok, verified.problems
    assert "runs[0].stdout" in verified.unverifiable


def test_a_large_response_shrinks_step_by_step_and_its_output_hash_follows() -> None:
    big = "x" * 4000
    run = _response().runs[0].model_copy(update={"stdout_preview": big, "stdout_bytes": 10_000})
    response = _response().model_copy(update={"runs": (run,) * 30})
    steps = list(shrinking(response))
    assert steps[0] == response and len(steps) == 5
    sizes = [len(json.dumps(step.to_json_dict())) for step in steps]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 20_000
    assert steps[1].artifacts[0].content_b64 is None and steps[-1].runs[0].stdout_preview == ""
    for step in steps[1:]:
        assert step.runs[0].stdout_sha256 == run.stdout_sha256 and step.runs[0].stdout_bytes == 10_000
        assert step.provenance is not None and step.provenance.output_sha256 == step.output_sha256


def test_provider_toml_sells_a_sandbox(tmp_path: Path) -> None:
    toml = tmp_path / "provider.toml"
    toml.write_text('relays = ["ws://r"]\n[sandbox]\nbase_msats = 5\nmsats_per_cpu_second = 1\nnetworks = ["none"]\n')
    offer = load_provider_file(toml)["sandbox"]
    assert offer == SandboxOffer(base_msats=5, msats_per_cpu_second=1, networks=(NetworkPolicy.NONE,))
    for bad in (
        "[sandbox]\nbase_msats = -1\n",
        '[sandbox]\nprofiles = ["huge"]\n',
        "[sandbox]\nwhat = 1\n",
        "sandbox = 3\n",
    ):
        toml.write_text(bad)
        with pytest.raises(pylon.ConfigError, match="sandbox"):
            load_provider_file(toml)


def test_react_runs_code_through_the_sandbox_tool() -> None:
    tool = as_tool(SandboxProfile.SMALL)
    assert "1024 MB" in tool.desc and tool.name == "run_in_sandbox"
    lm = dspy.utils.DummyLM(
        [
            {
                "next_thought": "compute it",
                "next_tool_name": "run_in_sandbox",
                "next_tool_args": {"command": "python3 -c 'print(6*7)'"},
            },
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "the sandbox said 42", "answer": "42"},
        ]
    )
    agent = dspy.ReAct("question -> answer", tools=[tool], max_iters=3)
    with dspy.context(lm=lm):
        out = agent(question="what is 6*7?")
    observation = out.trajectory["observation_0"]
    assert "status: success" in observation and "42" in observation and out.answer == "42"
    refused = as_tool(network="full")(command="true")
    assert refused.startswith("status: error (SandboxRefused")


def test_the_sandbox_provider_checks_its_arguments_without_io() -> None:
    keys = nostr_sdk.Keys.generate()
    npub = keys.public_key().to_bech32()
    client = pylon.PylonSandboxProvider(["ws://127.0.0.1:9"], keys, "medium", providers=[npub])
    assert client.providers == (keys.public_key().to_hex(),) and client.profile is SandboxProfile.MEDIUM
    for bad, match in (
        ({"providers": ["npub1nope"]}, "public key"),
        ({"bid_msats": -1}, "bid_msats"),
        ({"budget_sats": True}, "budget_sats"),
    ):
        with pytest.raises(pylon.ConfigError, match=match):
            pylon.PylonSandboxProvider(["ws://127.0.0.1:9"], keys, **bad)  # type: ignore[arg-type]
    with pytest.raises(pylon.ConfigError, match="profile"):
        pylon.PylonSandboxProvider(["ws://127.0.0.1:9"], keys, "huge")
    with pytest.raises(pylon.ConfigError, match="relay"):
        pylon.PylonSandboxProvider([], keys)
