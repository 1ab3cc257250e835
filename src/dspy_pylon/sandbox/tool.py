"""The sandbox as a DSPy tool: ``dspy.ReAct(..., tools=[pylon.sandbox.as_tool()])`` lets an agent
run shell commands (and so code: ``python3 -c``, a heredoc) in a fresh sandbox per call, on this
host's executor or on a sandbox node of the swarm."""

from __future__ import annotations

from typing import Any

from dspy_pylon.sandbox.client import PylonSandboxProvider
from dspy_pylon.sandbox.executor import SandboxExecutor
from dspy_pylon.sandbox.schema import (
    SCHEMA,
    NetworkPolicy,
    SandboxCommand,
    SandboxProfile,
    SandboxRunRequest,
    SandboxRunResponse,
)

__all__ = ["as_tool", "describe"]

#: What the agent reads of each stream: enough to see a traceback's end, not a whole log.
TOOL_OUTPUT_CHARS = 2000


def describe(response: SandboxRunResponse) -> str:
    """A response as the text an agent reads: status, then each command's exit code and output."""
    lines = [f"status: {response.status.value}" + (f" ({response.error})" if response.error else "")]
    for run in response.runs:
        lines.append(f"$ {run.cmd}\nexit code: {run.exit_code if run.exit_code is not None else 'killed'}")
        for label, text, total in (
            ("stdout", run.stdout_preview, run.stdout_bytes),
            ("stderr", run.stderr_preview, run.stderr_bytes),
        ):
            if text:
                cut = text[-TOOL_OUTPUT_CHARS:]
                more = " (end of it)" if len(cut) < total else ""
                lines.append(f"{label}{more}:\n{cut}")
    return "\n".join(lines)


def as_tool(
    profile: SandboxProfile | str = SandboxProfile.SMALL,
    *,
    provider: PylonSandboxProvider | None = None,
    executor: SandboxExecutor | None = None,
    network: NetworkPolicy | str = NetworkPolicy.NONE,
    name: str = "run_in_sandbox",
) -> Any:
    """A ``dspy.Tool`` that runs one shell command in a fresh sandbox of ``profile`` and returns
    its status, exit code and output as text: on the swarm through ``provider``, else on this
    host (``executor``, or the default one). A job the host refuses comes back as text too, so
    the agent can read why."""
    import dspy

    from dspy_pylon.plain_errors import PylonError

    size = SandboxProfile(profile)
    policy = NetworkPolicy(network)
    local = executor or SandboxExecutor()
    limits = size.resources

    def run_in_sandbox(command: str) -> str:
        request = SandboxRunRequest(
            schema=SCHEMA, commands=(SandboxCommand(cmd=command),), profile=size, network=policy
        )
        try:
            if provider is not None:
                return describe(provider.run(request).response)
            return describe(local.run(request, provider_pubkey="local"))
        except PylonError as exc:
            return f"status: error ({type(exc).__name__}: {exc})"

    run_in_sandbox.__name__ = name
    run_in_sandbox.__doc__ = (
        f"Run one shell command (sh -c) in a fresh, isolated Linux sandbox: {limits.cpus} CPU, "
        f"{limits.memory_mb} MB memory, {limits.timeout_secs} s, network {policy.value}; python3 is there. "
        "Files do not persist between calls. Returns the status, exit code, stdout and stderr."
    )
    return dspy.Tool(run_in_sandbox, name=name)
