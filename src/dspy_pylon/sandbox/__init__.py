"""Sandboxed code execution sold over the swarm: profiles and the ``oa.sandbox_run.v1`` request
and response (:mod:`dspy_pylon.sandbox.schema`), and the isolated executor that runs a job on
this host (:mod:`dspy_pylon.sandbox.executor`: bubblewrap, cgroups, seccomp, a sized tmpfs)."""

from __future__ import annotations

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

__all__ = [
    "Artifact",
    "CommandRun",
    "Evidence",
    "ExecutorConfig",
    "HostReadiness",
    "NetworkPolicy",
    "Provenance",
    "RepoSource",
    "SandboxCommand",
    "SandboxExecutor",
    "SandboxProfile",
    "SandboxResources",
    "SandboxRunRequest",
    "SandboxRunResponse",
    "SandboxStatus",
    "parse_request",
    "parse_response",
    "run_local",
]
