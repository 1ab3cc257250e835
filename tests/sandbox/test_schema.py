"""The oa.sandbox_run.v1 request and response as data: profiles, validation that names what is
wrong (a SandboxError, never pydantic's), and hashes any party computes the same."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

import dspy_pylon as pylon
from dspy_pylon.sandbox import (
    NetworkPolicy,
    SandboxCommand,
    SandboxProfile,
    SandboxResources,
    SandboxRunRequest,
    SandboxRunResponse,
    SandboxStatus,
    parse_request,
    parse_response,
)

EMPTY = hashlib.sha256(b"").hexdigest()


def test_profiles_are_the_sizes_sold() -> None:
    sizes = [
        (p.resources.cpus, p.resources.memory_mb, p.resources.timeout_secs, p.resources.disk_mb) for p in SandboxProfile
    ]
    assert sizes == [
        (1, 1024, 60, 5120),
        (2, 4096, 120, 8192),
        (4, 8192, 300, 10240),
    ]


def test_a_request_round_trips_and_its_hash_is_canonical() -> None:
    wire = {
        "schema": "oa.sandbox_run.v1",
        "commands": [{"cmd": "python -m pytest -q", "workdir": "repo", "continue_on_fail": True}],
        "env": {"PYTHONHASHSEED": "0"},
        "repo": {"kind": "git", "url": "https://example.org/x.git", "ref": "main"},
        "network": "none",
        "profile": "medium",
        "resources": {"cpus": 2, "memory_mb": 2048, "timeout_secs": 90, "disk_mb": 1024},
    }
    request = parse_request(wire)
    assert request.limits.memory_mb == 2048 and request.network is NetworkPolicy.NONE
    again = parse_request(json.loads(json.dumps(request.to_json_dict())))
    assert again == request and again.sha256 == request.sha256
    reordered = parse_request(dict(reversed(list(wire.items()))))
    assert reordered.sha256 == request.sha256  # key order never changes the hash (RFC 8785)
    assert SandboxRunRequest(commands=(SandboxCommand(cmd="true"),)).limits == SandboxProfile.SMALL.resources


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"commands": []}, "commands"),
        ({"commands": [{"cmd": ""}]}, "commands.0.cmd"),
        ({"commands": [{"cmd": "ls", "workdir": "../etc"}]}, "commands.0.workdir"),
        ({"commands": [{"cmd": "ls", "workdir": "/etc"}]}, "commands.0.workdir"),
        ({"env": {"BAD NAME": "x"}}, "env"),
        ({"env": {"X": "a\x00b"}}, "env"),
        ({"network": "some"}, "network"),
        ({"profile": "huge"}, "profile"),
        ({"resources": {"cpus": 8, "memory_mb": 1024, "timeout_secs": 60, "disk_mb": 100}}, "resources exceed"),
        ({"repo": {"kind": "git", "url": "file:///etc"}}, "repo"),
        ({"repo": {"kind": "tarball"}}, "repo"),
        ({"repo": {"kind": "git", "url": "https://x/y.git", "mount_path": "../../"}}, "repo"),
        ({"schema": "oa.sandbox_run.v2"}, "schema"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_request_is_a_sandbox_error_naming_what(change: dict[str, Any], where: str) -> None:
    wire = {"commands": [{"cmd": "true"}], **change}
    with pytest.raises(pylon.SandboxError, match="not a valid sandbox request") as raised:
        parse_request(wire)
    assert where in str(raised.value) and isinstance(raised.value, pylon.PylonError)


def test_built_in_code_a_bad_value_is_a_sandbox_error_too() -> None:
    with pytest.raises(pylon.SandboxError, match="workdir"):
        SandboxCommand(cmd="ls", workdir="../x")
    with pytest.raises(pylon.SandboxError):
        SandboxResources(cpus=0, memory_mb=1024, timeout_secs=1, disk_mb=16)


def _response(**change: Any) -> dict[str, Any]:
    run = {
        "cmd": "true",
        "exit_code": 0,
        "duration_ms": 3,
        "stdout_sha256": EMPTY,
        "stderr_sha256": EMPTY,
        "stdout_bytes": 0,
        "stderr_bytes": 0,
    }
    data = {"status": "success", "runs": [run], "evidence": {"wall_ms": 5}}
    data.update(change)
    return data


def test_a_response_hashes_without_its_provenance_and_refuses_bad_digests() -> None:
    response = parse_response(_response())
    assert response.status is SandboxStatus.SUCCESS and response.runs[0].exit_code == 0
    provenance = {
        "input_sha256": "a" * 64,
        "output_sha256": response.output_sha256,
        "provider_pubkey": "b" * 64,
        "executed_at": 1,
        "duration_ms": 5,
    }
    with_provenance = parse_response(_response(provenance=provenance))
    assert with_provenance.output_sha256 == response.output_sha256  # the output hash leaves provenance out
    assert isinstance(with_provenance, SandboxRunResponse)
    bad_run = dict(_response()["runs"][0], stdout_sha256="not-a-digest")
    with pytest.raises(pylon.SandboxError, match=r"runs\.0\.stdout_sha256"):
        parse_response(_response(runs=[bad_run]))
    with pytest.raises(pylon.SandboxError, match="status"):
        parse_response(_response(status="fine"))
    with pytest.raises(pylon.SandboxError):
        parse_response(_response(evidence={"wall_ms": float("nan")}))
