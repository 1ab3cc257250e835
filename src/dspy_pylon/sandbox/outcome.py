"""From what a sandbox job did to what its response says (pure): output kept up to a cap and
hashed as it arrives, a command's record, and the status decided from the evidence alone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from dspy_pylon.sandbox.schema import PREVIEW_BYTES, CommandRun, Evidence, SandboxStatus


@dataclass
class CappedOutput:
    """One stream of a command: the bytes up to ``cap`` are hashed (and the first
    ``PREVIEW_BYTES`` kept as the preview); past the cap nothing more is kept and ``capped`` says so."""

    cap: int
    kept: int = 0
    capped: bool = False
    head: bytearray = field(default_factory=bytearray)
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def feed(self, chunk: bytes) -> bool:
        """Take a chunk; False once the cap is passed (the supervisor then stops the command)."""
        room = self.cap - self.kept
        if len(chunk) > room:
            chunk, self.capped = chunk[: max(room, 0)], True
        self._hash.update(chunk)
        self.kept += len(chunk)
        if len(self.head) < PREVIEW_BYTES:
            self.head += chunk[: PREVIEW_BYTES - len(self.head)]
        return not self.capped

    @property
    def sha256(self) -> str:
        """SHA-256 of the bytes kept."""
        return self._hash.hexdigest()

    @property
    def preview(self) -> str:
        """The first bytes as text (invalid UTF-8 replaced: such a preview cannot be checked
        against the hash, which is over the bytes)."""
        return bytes(self.head).decode("utf-8", "replace")


def command_run(
    cmd: str,
    *,
    exit_code: int | None,
    duration_ns: int,
    stdout: CappedOutput,
    stderr: CappedOutput,
    signal: int | None = None,
) -> CommandRun:
    """The record of one command."""
    return CommandRun(
        cmd=cmd,
        exit_code=exit_code,
        signal=signal,
        duration_ms=duration_ns // 1_000_000,
        stdout_sha256=stdout.sha256,
        stderr_sha256=stderr.sha256,
        stdout_bytes=stdout.kept,
        stderr_bytes=stderr.kept,
        stdout_preview=stdout.preview,
        stderr_preview=stderr.preview,
        output_capped=stdout.capped or stderr.capped,
    )


def decide_status(evidence: Evidence) -> SandboxStatus:
    """The status the evidence shows, the first of: setup failure (``error``), cancellation, the
    supervisor's clock (``timeout``), the OOM counter (``oom``), output past its cap or a command
    that had to pass exiting non-zero (``failed``); else ``success``."""
    if evidence.setup_error is not None:
        return SandboxStatus.ERROR
    if evidence.cancelled:
        return SandboxStatus.CANCELLED
    if evidence.timed_out:
        return SandboxStatus.TIMEOUT
    if evidence.oom_kills:
        return SandboxStatus.OOM
    if evidence.output_capped or evidence.failed_command is not None:
        return SandboxStatus.FAILED
    return SandboxStatus.SUCCESS


def status_error(status: SandboxStatus, evidence: Evidence, runs: tuple[CommandRun, ...]) -> str | None:
    """A one-line reason for any status but ``success``, for the response's ``error``."""
    if status is SandboxStatus.SUCCESS:
        return None
    if status is SandboxStatus.ERROR:
        return f"setup failed: {evidence.setup_error}"
    if status is SandboxStatus.CANCELLED:
        return "cancelled by the customer"
    if status is SandboxStatus.TIMEOUT:
        return f"the time limit ran out after {evidence.wall_ms} ms"
    if status is SandboxStatus.OOM:
        return f"the memory limit was hit ({evidence.oom_kills} process(es) killed)"
    if evidence.output_capped:
        return "a command's output went past the cap and the command was stopped"
    index = evidence.failed_command
    code = runs[index].exit_code if index is not None and index < len(runs) else None
    return f"command {index} exited with {code}"
