"""Sandbox jobs as data (pure, no I/O): profiles, the ``oa.sandbox_run.v1`` request and response,
statuses with their evidence, and the hashes that tie a result to the request it answers.

A request names what to run (commands with a work dir and ``continue_on_fail``, an environment,
a repository as a git URL and ref or an inline tarball), how isolated (network ``none`` |
``localhost`` | ``full``) and how much (a profile's CPUs, memory, time and disk, or explicit
resources within it). A response gives, per command, the exit code, duration and SHA-256 of
stdout and stderr with capped previews; artifacts with hashes and sizes; a status decided from
evidence (the supervisor's clock, the cgroup's OOM counter, output caps, exit codes, setup
failures); and provenance (input and output SHA-256, the provider, when, how long).

Everything is validated on the way in (:class:`SandboxError`, a :class:`PylonError`, names what
is wrong); the request's SHA-256 is over its RFC 8785 canonical JSON, so any two parties compute
the same one.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dspy_pylon.contract.hashing import canonical_json, sha256_hex
from dspy_pylon.plain_errors import SandboxError

SCHEMA: Literal["oa.sandbox_run.v1"] = "oa.sandbox_run.v1"
#: Bytes of stdout and stderr a response previews (the hashes cover all of it).
PREVIEW_BYTES = 4096
MAX_COMMANDS = 64
MAX_COMMAND_CHARS = 16_384
MAX_ENV = 128
MAX_ARTIFACT_PATTERNS = 32
#: Artifacts up to this size come back inline (base64), so the customer can check their hash.
ARTIFACT_INLINE_BYTES = 64 * 1024
MAX_INLINE_TARBALL_BYTES = 8 * 1024 * 1024  # as base64 in a Nostr event: relays cap events far below this

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_REF = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}$")


class NetworkPolicy(enum.StrEnum):
    """What a job may reach: ``none`` (no network namespace of its own to speak of: only Unix
    sockets may be opened), ``localhost`` (a loopback of its own, for servers a test suite starts;
    nothing outside the sandbox, the host's own loopback included), or ``full`` (the host's
    network; a node offers it only if its operator allows it)."""

    NONE = "none"
    LOCALHOST = "localhost"
    FULL = "full"


class SandboxStatus(enum.StrEnum):
    """How a job ended, from evidence (``SandboxRunResponse.evidence``)."""

    SUCCESS = "success"  # every command that had to pass exited 0
    FAILED = "failed"  # a command exited non-zero (or was killed by a signal)
    TIMEOUT = "timeout"  # the supervisor's clock ran out
    OOM = "oom"  # the cgroup's OOM counter went up
    CANCELLED = "cancelled"  # the customer cancelled it
    ERROR = "error"  # setup failed, or the host could not enforce what was asked (nothing ran)


def _problem(exc: ValidationError, what: str) -> SandboxError:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    detail = str(first.get("msg"))
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, SandboxError) and inner.loc:  # a nested model's own, unwrapped
        loc, detail = loc + list(inner.loc), inner.detail
    return SandboxError(f"not a valid {what}: {'.'.join(loc) or what}: {detail}", loc=tuple(loc), detail=detail)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        # Built in code or parsed from JSON, a bad value is a SandboxError (a PylonError), not pydantic's.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _problem(exc, type(self).__name__) from None


class SandboxResources(_Strict):
    """CPUs, memory (MB), wall time (s) and disk (MB) a job may use."""

    cpus: Annotated[int, Field(ge=1, le=64)]
    memory_mb: Annotated[int, Field(ge=64, le=262_144)]
    timeout_secs: Annotated[int, Field(ge=1, le=3_600)]
    disk_mb: Annotated[int, Field(ge=16, le=1_048_576)]

    def fits(self, limit: SandboxResources) -> bool:
        """Whether every figure is within ``limit``'s."""
        return (
            self.cpus <= limit.cpus
            and self.memory_mb <= limit.memory_mb
            and self.timeout_secs <= limit.timeout_secs
            and self.disk_mb <= limit.disk_mb
        )


class SandboxProfile(enum.StrEnum):
    """The sizes a provider sells: Small (1 vCPU, 1024 MB, 60 s, 5 GB disk), Medium (2, 4096,
    120 s, 8 GB), Large (4, 8192, 300 s, 10 GB)."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"

    @property
    def resources(self) -> SandboxResources:
        """What the profile allows."""
        return _PROFILES[self]


_PROFILES = {
    SandboxProfile.SMALL: SandboxResources(cpus=1, memory_mb=1024, timeout_secs=60, disk_mb=5 * 1024),
    SandboxProfile.MEDIUM: SandboxResources(cpus=2, memory_mb=4096, timeout_secs=120, disk_mb=8 * 1024),
    SandboxProfile.LARGE: SandboxResources(cpus=4, memory_mb=8192, timeout_secs=300, disk_mb=10 * 1024),
}


class SandboxCommand(_Strict):
    """One shell command, run in ``workdir`` (relative to the job's work dir); with
    ``continue_on_fail`` a non-zero exit does not stop the commands after it."""

    cmd: Annotated[str, Field(min_length=1, max_length=MAX_COMMAND_CHARS)]
    workdir: str = "."
    continue_on_fail: bool = False

    @field_validator("workdir")
    @classmethod
    def _inside(cls, value: str) -> str:
        parts = [p for p in value.replace("\\", "/").split("/") if p not in ("", ".")]
        if value.startswith("/") or ".." in parts:
            raise ValueError("workdir is a path inside the job's work dir (no leading /, no ..)")
        return value


class RepoSource(_Strict):
    """The code a job runs on: a git repository at a ref, or an inline ``.tar.gz`` (base64)."""

    kind: Literal["git", "tarball"]
    url: str | None = None
    ref: str | None = None
    tarball_b64: str | None = None
    mount_path: str = "repo"

    @model_validator(mode="after")
    def _one_source(self) -> RepoSource:
        if self.kind == "git":
            if not self.url or self.tarball_b64 is not None:
                raise ValueError("a git repo has a url (and a ref), no tarball")
            if not re.match(r"^(https?|git|ssh)://|^git@", self.url) or any(c.isspace() for c in self.url):
                raise ValueError("a git repo's url is https://, git://, ssh:// or git@ (no spaces)")
            if self.ref is not None and not _GIT_REF.match(self.ref):
                raise ValueError("a git ref is a branch, tag or commit name (letters, digits, ._/-; no leading -)")
        elif not self.tarball_b64 or self.url is not None:
            raise ValueError("a tarball repo has tarball_b64, no url")
        elif len(self.tarball_b64) > MAX_INLINE_TARBALL_BYTES:
            raise ValueError(f"an inline tarball is at most {MAX_INLINE_TARBALL_BYTES} bytes of base64")
        SandboxCommand(cmd="x", workdir=self.mount_path)  # the same rule: inside the work dir
        return self


class SandboxRunRequest(_Strict):
    """A sandbox job: ``commands`` run in order on ``repo`` (if any) with ``env``, under
    ``network`` and within ``profile`` (``resources``, when given, must fit in it)."""

    schema_: Literal["oa.sandbox_run.v1"] = Field(SCHEMA, alias="schema")
    commands: Annotated[tuple[SandboxCommand, ...], Field(min_length=1, max_length=MAX_COMMANDS)]
    env: dict[str, str] = Field(default_factory=dict)
    repo: RepoSource | None = None
    network: NetworkPolicy = NetworkPolicy.NONE
    profile: SandboxProfile = SandboxProfile.SMALL
    resources: SandboxResources | None = None
    #: Glob patterns (inside the work dir) of files to return as artifacts after the commands.
    artifacts: Annotated[tuple[str, ...], Field(max_length=MAX_ARTIFACT_PATTERNS)] = ()

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    @field_validator("artifacts")
    @classmethod
    def _patterns_inside(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not pattern or len(pattern) > 512:
                raise ValueError("an artifact pattern is 1 to 512 characters")
            SandboxCommand(cmd="x", workdir=pattern)  # the same rule: inside the work dir
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} environment variables")
        for name, text in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if "\x00" in text or len(text) > 32_768:
                raise ValueError(f"environment variable {name} holds a NUL or is over 32 KiB")
        return value

    @model_validator(mode="after")
    def _within_profile(self) -> SandboxRunRequest:
        if self.resources is not None and not self.resources.fits(self.profile.resources):
            raise ValueError(f"resources exceed the {self.profile.value} profile's")
        return self

    @property
    def limits(self) -> SandboxResources:
        """What the job may use: its resources, else its profile's."""
        return self.resources or self.profile.resources

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON (``schema`` spelled as the wire has it)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def sha256(self) -> str:
        """SHA-256 of the request's RFC 8785 canonical JSON: what a response's provenance names."""
        return sha256_hex(canonical_json(self.to_json_dict()))


def _sha256(cls: Any, value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("a SHA-256 is 64 lowercase hex digits")
    return value


class CommandRun(_Strict):
    """What one command did."""

    cmd: str
    # None: the supervisor killed it (its clock, a cancel, output past the cap; ``signal`` then 9).
    # A process the kernel killed (the OOM killer) or that died of a signal N exits 128 + N, as a
    # shell reports it: bubblewrap passes its command's status on that way.
    exit_code: int | None
    signal: int | None = None
    duration_ms: Annotated[int, Field(ge=0)]
    stdout_sha256: str
    stderr_sha256: str
    stdout_bytes: Annotated[int, Field(ge=0)]
    stderr_bytes: Annotated[int, Field(ge=0)]
    stdout_preview: str = ""
    stderr_preview: str = ""
    output_capped: bool = False  # output went past the job's cap and was cut (the hashes cover what was kept)

    _digests = field_validator("stdout_sha256", "stderr_sha256")(_sha256)


class Artifact(_Strict):
    """A file the job left, by path inside its work dir, with its hash and size."""

    path: str
    sha256: str
    size_bytes: Annotated[int, Field(ge=0)]
    content_b64: str | None = None  # the file itself, when it is at most ARTIFACT_INLINE_BYTES

    _digests = field_validator("sha256")(_sha256)


class Evidence(_Strict):
    """What the status was decided from."""

    wall_ms: Annotated[int, Field(ge=0)]
    timed_out: bool = False
    oom_kills: Annotated[int, Field(ge=0)] = 0
    output_capped: bool = False
    failed_command: int | None = None  # index of the first command that had to pass and did not
    setup_error: str | None = None
    cancelled: bool = False
    cpu_ms: Annotated[int, Field(ge=0)] = 0  # CPU time of every process of the job (the cgroup's count)
    memory_peak_bytes: Annotated[int, Field(ge=0)] = 0
    pids_limit_hits: Annotated[int, Field(ge=0)] = 0  # forks the process limit refused (a fork bomb, contained)


class Provenance(_Strict):
    """Who ran it, when, on what: the request's and the output's SHA-256."""

    input_sha256: str
    output_sha256: str
    provider_pubkey: str
    executed_at: Annotated[int, Field(ge=0)]  # Unix seconds
    duration_ms: Annotated[int, Field(ge=0)]
    runtime: str = "bubblewrap"  # or "gvisor"


class SandboxRunResponse(_Strict):
    """A sandbox job's result."""

    schema_: Literal["oa.sandbox_run.v1"] = Field(SCHEMA, alias="schema")
    status: SandboxStatus
    runs: tuple[CommandRun, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    evidence: Evidence
    error: str | None = None
    provenance: Provenance | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    def to_json_dict(self, *, with_provenance: bool = True) -> dict[str, Any]:
        """Plain JSON; without provenance it is what ``output_sha256`` covers."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if not with_provenance:
            data.pop("provenance", None)
        return data

    @property
    def output_sha256(self) -> str:
        """SHA-256 of the response without its provenance, as RFC 8785 canonical JSON."""
        return sha256_hex(canonical_json(self.to_json_dict(with_provenance=False)))


def _parsed(model: type[_Strict], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _problem(exc, what) from None


def parse_request(data: Any) -> SandboxRunRequest:
    """A request from plain JSON; :class:`SandboxError` naming the first problem otherwise."""
    return _parsed(SandboxRunRequest, data, "sandbox request")  # type: ignore[no-any-return]


def parse_response(data: Any) -> SandboxRunResponse:
    """A response from plain JSON; :class:`SandboxError` naming the first problem otherwise."""
    return _parsed(SandboxRunResponse, data, "sandbox response")  # type: ignore[no-any-return]
