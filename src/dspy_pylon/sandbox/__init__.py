"""Sandboxed code execution sold over the swarm: profiles and the ``oa.sandbox_run.v1`` request
and response (:mod:`dspy_pylon.sandbox.schema`), and the isolated executor that runs a job on
this host (:mod:`dspy_pylon.sandbox.executor`: bubblewrap, cgroups, seccomp, a sized tmpfs),
the job on Nostr (:mod:`dspy_pylon.sandbox.wire`: kinds 5930/6930, offers, verification) and
the customer's client (:class:`PylonSandboxProvider`, :func:`as_tool`)."""

from __future__ import annotations

from dspy_pylon.sandbox.client import PylonSandboxProvider, SandboxOutcome, as_request
from dspy_pylon.sandbox.executor import ExecutorConfig, HostReadiness, SandboxExecutor, run_local
from dspy_pylon.sandbox.schema import (
    Artifact,
    CommandRun,
    Evidence,
    NetworkPolicy,
    Provenance,
    RepoSource,
    SandboxCommand,
    SandboxProfile,
    SandboxResources,
    SandboxRunRequest,
    SandboxRunResponse,
    SandboxStatus,
    parse_request,
    parse_response,
)
from dspy_pylon.sandbox.tool import as_tool, describe
from dspy_pylon.sandbox.wire import (
    SANDBOX_REQUEST_KIND,
    SANDBOX_RESULT_KIND,
    SandboxOffer,
    Verification,
    verify_response,
)

__all__ = [
    "SANDBOX_REQUEST_KIND",
    "SANDBOX_RESULT_KIND",
    "Artifact",
    "CommandRun",
    "Evidence",
    "ExecutorConfig",
    "HostReadiness",
    "NetworkPolicy",
    "Provenance",
    "PylonSandboxProvider",
    "RepoSource",
    "SandboxCommand",
    "SandboxExecutor",
    "SandboxOffer",
    "SandboxOutcome",
    "SandboxProfile",
    "SandboxResources",
    "SandboxRunRequest",
    "SandboxRunResponse",
    "SandboxStatus",
    "Verification",
    "as_request",
    "as_tool",
    "describe",
    "parse_request",
    "parse_response",
    "run_local",
    "verify_response",
]
