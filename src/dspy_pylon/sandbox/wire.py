"""Sandbox jobs on Nostr (pure): the job kinds, what a node offers and charges, the request and
result events' shape, and the customer's verification of a result.

**Kinds.** No NIP-90 kind is registered for running code. We use **5930** for requests and
**6930** for results (request + 1000, as NIP-90 pairs them), the numbers the original system's
notes chose; its code used 5102/6102, which an old image-overlay proposal already holds. 5930
sits in the 59xx block DVM authors use for agent tasks and is not in the data-vending-machines
kind registry. Feedback is NIP-90's kind 7000, cancellation a NIP-09 deletion naming kind 5930.

**Request.** One ``["i", <request JSON>, "text"]`` input holding the ``oa.sandbox_run.v1``
request as RFC 8785 canonical JSON, ``["param", "schema", "oa.sandbox_run.v1"]`` and
``["output", "application/json"]``; the usual ``bid``, ``relays`` and ``p`` tags. A request
to one provider is encrypted like any NIP-90 job.

**Result.** Kind 6930 whose content is the ``oa.sandbox_run.v1`` response as canonical JSON,
with NIP-90's ``e``, ``p`` and ``amount`` tags and, for a request up to 16 KiB, its ``request``
echo (encrypted like its request); cut down to fit the relays' cap (:func:`shrinking`).

**Price.** A node announces a base price and a price per CPU-second. A job is billed before it
runs, for what it may use: base + per-CPU-second x its CPUs x its time limit (the cgroup's CPU
quota and the supervisor's clock hold it to that); the result reports the CPU time it used.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspy_pylon.contract.hashing import canonical_json
from dspy_pylon.nostr.ciphers import Cipher
from dspy_pylon.nostr.nip90 import JobInput, JobRequest, JobResult
from dspy_pylon.plain_errors import MalformedEvent, SandboxError
from dspy_pylon.sandbox.outcome import decide_status
from dspy_pylon.sandbox.schema import (
    SCHEMA,
    NetworkPolicy,
    SandboxProfile,
    SandboxRunRequest,
    SandboxRunResponse,
    parse_request,
    parse_response,
)

SANDBOX_REQUEST_KIND = 5930
SANDBOX_RESULT_KIND = SANDBOX_REQUEST_KIND + 1000
OUTPUT_MIME = "application/json"


@dataclass(frozen=True)
class SandboxOffer:
    """What a node sells: the profiles, the prices (msats: a base per job plus a price per
    CPU-second of what the job may use), the network policies and whether it clones git repos."""

    profiles: tuple[SandboxProfile, ...] = tuple(SandboxProfile)
    base_msats: int = 0
    msats_per_cpu_second: int = 0
    networks: tuple[NetworkPolicy, ...] = (NetworkPolicy.NONE, NetworkPolicy.LOCALHOST)
    #: Clones run on the node's own network (its loopback and LAN included): off unless the operator says so.
    allow_git: bool = False
    runtime: str = "bubblewrap"

    def __post_init__(self) -> None:
        for name in ("base_msats", "msats_per_cpu_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SandboxError(f"a sandbox offer's {name} is a non-negative integer (msats), got {value!r}")
        if not self.profiles:
            raise SandboxError("a sandbox offer sells at least one profile")

    @property
    def priced(self) -> bool:
        """Whether any job costs something."""
        return bool(self.base_msats or self.msats_per_cpu_second)

    def price(self, request: SandboxRunRequest) -> int:
        """What ``request`` costs here (msats): base + per CPU-second x CPUs x time limit."""
        limits = request.limits
        return self.base_msats + self.msats_per_cpu_second * limits.cpus * limits.timeout_secs

    def refusal(self, request: SandboxRunRequest) -> str | None:
        """Why this offer does not cover ``request``, or None."""
        if request.profile not in self.profiles:
            sold = ", ".join(p.value for p in self.profiles)
            return f"profile {request.profile.value!r} is not offered here (offered: {sold})"
        if request.network not in self.networks:
            allowed = ", ".join(p.value for p in self.networks)
            return f"network policy {request.network.value!r} is not offered here (offered: {allowed})"
        if request.repo is not None and request.repo.kind == "git" and not self.allow_git:
            return "this node does not clone git repositories: send the code as an inline tarball"
        return None

    def to_meta(self) -> dict[str, Any]:
        """The offer as it rides in the node's NIP-89 announcement (``content["sandbox"]``)."""
        return {
            "schema": SCHEMA,
            "runtime": self.runtime,
            "profiles": {p.value: p.resources.model_dump(mode="json") for p in self.profiles},
            "base_msats": self.base_msats,
            "msats_per_cpu_second": self.msats_per_cpu_second,
            "networks": [n.value for n in self.networks],
            "git": self.allow_git,
        }

    @classmethod
    def from_meta(cls, meta: object) -> SandboxOffer | None:
        """An offer from another node's announcement (None when it has none or it is unreadable)."""
        if not isinstance(meta, Mapping) or meta.get("schema") != SCHEMA:
            return None
        try:
            profiles = tuple(SandboxProfile(name) for name in meta.get("profiles") or ())
            networks = tuple(NetworkPolicy(name) for name in meta.get("networks") or ())
            return cls(
                profiles=profiles,
                base_msats=meta.get("base_msats", 0),
                msats_per_cpu_second=meta.get("msats_per_cpu_second", 0),
                networks=networks,
                allow_git=meta.get("git") is True,
                runtime=str(meta.get("runtime") or "")[:32],
            )
        except (ValueError, TypeError, SandboxError):
            return None


def sandbox_job(
    request: SandboxRunRequest,
    *,
    bid_msats: int | None,
    relays: Sequence[str] = (),
    providers: Sequence[str] = (),
    encrypted: bool = False,
    cipher: Cipher = Cipher.NIP04,
    nonce: str = "",
) -> JobRequest:
    """The NIP-90 job request (kind 5930) carrying ``request``."""
    return JobRequest(
        inputs=(JobInput(canonical_json(request.to_json_dict()).decode(), "text"),),
        kind=SANDBOX_REQUEST_KIND,
        params=(("schema", SCHEMA),),
        output=OUTPUT_MIME,
        bid_msats=bid_msats,
        relays=tuple(relays),
        providers=tuple(providers),
        encrypted=encrypted,
        cipher=cipher,
        nonce=nonce,
    )


def read_sandbox_job(job: JobRequest) -> SandboxRunRequest:
    """The sandbox request a job carries; :class:`MalformedEvent` when it carries none."""
    if job.kind != SANDBOX_REQUEST_KIND:
        raise MalformedEvent(f"kind {job.kind} is not a sandbox job ({SANDBOX_REQUEST_KIND})")
    schema = job.param("schema")
    if schema not in (None, SCHEMA):
        raise MalformedEvent(f"sandbox schema {str(schema)[:40]!r} is not {SCHEMA}")
    texts = [i for i in job.inputs if i.type == "text"]
    if len(texts) != 1:
        raise MalformedEvent("a sandbox job has exactly one text input: the oa.sandbox_run.v1 request")
    try:
        data = json.loads(texts[0].data)
        return parse_request(data)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, SandboxError):
            raise MalformedEvent(f"not a valid sandbox request: {exc}") from None
        raise MalformedEvent("a sandbox job's input is not JSON") from None


#: A request up to this size is echoed in its result (NIP-90's ``request`` tag); a larger one
#: (an inline tarball) is linked by the ``e`` tag only, leaving the relays' cap to the response.
ECHO_LIMIT = 16_384


def sandbox_result(job: JobRequest, response: SandboxRunResponse, amount_msats: int) -> JobResult:
    """The result (kind 6930) a node publishes for ``job``: the response as canonical JSON."""
    echo = job.event_json if job.event_json and len(job.event_json.encode()) <= ECHO_LIMIT else None
    return JobResult(
        request_id=job.id,
        customer=job.customer,
        content=canonical_json(response.to_json_dict()).decode(),
        kind=SANDBOX_RESULT_KIND,
        request_json=echo,
        amount_msats=amount_msats,
        encrypted=job.encrypted,
        cipher=job.cipher,
    )


def shrinking(response: SandboxRunResponse) -> Iterator[SandboxRunResponse]:
    """``response``, then smaller versions of it, for a node to send the first whose signed
    (and encrypted) event fits the relays' cap: inline artifact contents go first, then previews
    shrink to 1024, 256 and 0 bytes. Hashes and sizes stay (they cover the whole output); the
    provenance's output hash is recomputed for what is sent."""
    yield response
    artifacts = tuple(a.model_copy(update={"content_b64": None}) for a in response.artifacts)
    candidate = _with_output_hash(response.model_copy(update={"artifacts": artifacts}))
    yield candidate
    for keep in (1024, 256, 0):
        runs = tuple(
            r.model_copy(update={name: _head(getattr(r, name), keep) for name in ("stdout_preview", "stderr_preview")})
            for r in candidate.runs
        )
        yield _with_output_hash(candidate.model_copy(update={"runs": runs}))


def _head(text: str, keep: int) -> str:
    return text.encode()[:keep].decode("utf-8", "ignore")


def _with_output_hash(response: SandboxRunResponse) -> SandboxRunResponse:
    if response.provenance is None:
        return response
    provenance = response.provenance.model_copy(update={"output_sha256": response.output_sha256})
    return response.model_copy(update={"provenance": provenance})


@dataclass(frozen=True)
class Verification:
    """What the customer checked on a sandbox result; ``problems`` empty means it holds."""

    checked: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    unverifiable: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def read_result(content: str) -> SandboxRunResponse:
    """The response a result carries; :class:`MalformedEvent` when it is not one."""
    try:
        return parse_response(json.loads(content))
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, SandboxError):
            raise MalformedEvent(f"not a valid sandbox response: {exc}") from None
        raise MalformedEvent("a sandbox result's content is not JSON") from None


def verify_response(request: SandboxRunRequest, response: SandboxRunResponse, *, provider: str) -> Verification:
    """Check a response against the request it answers and the key that signed it: the
    provenance names our request's hash, the signer and the output's hash; the runs are our
    commands, in order, as many as the evidence says ran, each exit code as the status needs;
    outputs whole in their preview hash to what the response says (a preview cut short, or of
    output that is not clean UTF-8, cannot be checked from it: it is listed as unverifiable,
    never as a problem); inline artifacts hash to theirs and match our patterns; the status is what the
    evidence shows."""
    checked: list[str] = []
    problems: list[str] = []
    unverifiable: list[str] = []
    prov = response.provenance
    if prov is None:
        problems.append("no provenance")
    else:
        checked.append("provenance")
        if prov.input_sha256 != request.sha256:
            problems.append("provenance names another request (input_sha256)")
        if prov.provider_pubkey != provider:
            problems.append("provenance names another provider than the result's signer")
        if prov.output_sha256 != response.output_sha256:
            problems.append("provenance output_sha256 is not the response's hash")
    problems += _runs_match_evidence(request, response)
    for index, (run, command) in enumerate(zip(response.runs, request.commands, strict=False)):
        if run.cmd != command.cmd:
            problems.append(f"run {index} is not our command {index}")
        for stream in ("stdout", "stderr"):
            text = getattr(run, f"{stream}_preview")
            preview = text.encode()
            count = getattr(run, f"{stream}_bytes")
            if "\ufffd" in text or len(preview) < count:  # not clean text, or cut (to a cap, to fit a relay)
                unverifiable.append(f"runs[{index}].{stream}")
            elif len(preview) > count:
                problems.append(f"run {index}'s {stream} preview is longer than its byte count")
            else:
                checked.append(f"runs[{index}].{stream}")
                if hashlib.sha256(preview).hexdigest() != getattr(run, f"{stream}_sha256"):
                    problems.append(f"run {index}'s {stream} does not hash to its {stream}_sha256")
    for artifact in response.artifacts:
        if not any(fnmatch.fnmatchcase(artifact.path, pattern) for pattern in request.artifacts):
            problems.append(f"artifact {artifact.path} matches none of our patterns")
        if artifact.content_b64 is None:
            unverifiable.append(f"artifacts[{artifact.path}]")
            continue
        try:
            data = base64.b64decode(artifact.content_b64, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"artifact {artifact.path}'s content is not base64")
            continue
        checked.append(f"artifacts[{artifact.path}]")
        if hashlib.sha256(data).hexdigest() != artifact.sha256 or len(data) != artifact.size_bytes:
            problems.append(f"artifact {artifact.path} does not hash to its sha256")
    if decide_status(response.evidence) is not response.status:
        problems.append(f"status {response.status.value} is not what its evidence shows")
    return Verification(tuple(checked), tuple(problems), tuple(unverifiable))


def _runs_match_evidence(request: SandboxRunRequest, response: SandboxRunResponse) -> list[str]:
    """Whether the runs are the ones the evidence implies: none after a setup failure; all of
    them when nothing stopped the job; up to the failed command when one failed; every run before
    the last passed or was allowed to fail."""
    evidence, runs, commands = response.evidence, response.runs, request.commands
    if len(runs) > len(commands):
        return ["more runs than commands"]
    if evidence.setup_error is not None:
        return ["runs after a setup failure"] if runs else []
    problems: list[str] = []
    stopped = evidence.timed_out or evidence.cancelled or evidence.output_capped
    failed = evidence.failed_command
    if failed is not None and not evidence.output_capped:
        if len(runs) != failed + 1:
            problems.append(f"command {failed} failed, yet {len(runs)} commands ran")
        elif runs[failed].exit_code == 0 or commands[failed].continue_on_fail:
            problems.append(f"command {failed} is named as failed, but it passed or was allowed to fail")
    elif not stopped and len(runs) != len(commands):
        problems.append(f"{len(runs)} of {len(commands)} commands ran, yet nothing stopped the job")
    last = len(runs) - 1 if (stopped or failed is not None) else len(runs)
    for index in range(max(last, 0)):
        if runs[index].exit_code != 0 and not commands[index].continue_on_fail:
            problems.append(f"command {index} exited {runs[index].exit_code}, yet the job went on as if it passed")
    return problems
