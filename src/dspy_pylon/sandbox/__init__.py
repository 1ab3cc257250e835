"""Sandboxed code execution sold over the swarm: profiles and the ``oa.sandbox_run.v1`` request
and response (:mod:`dspy_pylon.sandbox.schema`)."""

from __future__ import annotations

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
    "NetworkPolicy",
    "Provenance",
    "RepoSource",
    "SandboxCommand",
    "SandboxProfile",
    "SandboxResources",
    "SandboxRunRequest",
    "SandboxRunResponse",
    "SandboxStatus",
    "parse_request",
    "parse_response",
]
