"""The isolated executor: runs a :class:`SandboxRunRequest` on this host under bubblewrap, in
cgroups that hold it to its memory, CPU and process limits, on a tmpfs of its disk size, against
the supervisor's clock, and returns the :class:`SandboxRunResponse` with the evidence its status
was decided from.

Each command is one bubblewrap sandbox over the job's shared work dir. It starts behind a gate
(a shell that waits for one line on stdin before exec'ing bubblewrap), so it is in the job's
cgroups before it can fork; killing it (the supervisor's clock, a cancel, output past its cap)
kills bubblewrap, whose PID namespace goes down with everything in it, and then sweeps the
cgroup for anything left. What the host cannot enforce is refused before anything runs
(:class:`SandboxRefused`), never run weaker.
"""

from __future__ import annotations

import functools
import os
import secrets
import selectors
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspy_pylon.plain_errors import SandboxRefused
from dspy_pylon.sandbox.bwrap import (
    HOST_ENV,
    BwrapPlan,
    HostView,
    bwrap_args,
    bwrap_command,
    host_view,
    job_environment,
)
from dspy_pylon.sandbox.cgroups import CgroupLimits, CgroupPlan, JobCgroup, detect_plan
from dspy_pylon.sandbox.outcome import CappedOutput, command_run, decide_status, status_error
from dspy_pylon.sandbox.schema import (
    SCHEMA,
    CommandRun,
    Evidence,
    NetworkPolicy,
    Provenance,
    SandboxCommand,
    SandboxRunRequest,
    SandboxRunResponse,
)
from dspy_pylon.sandbox.seccomp_filter import filter_bpf, filter_fd
from dspy_pylon.sandbox.workspace import SetupFailed, Workspace

#: The gate: wait for the supervisor's go (after it put us in the job's cgroups), then become bubblewrap.
GATE = ("/bin/sh", "-c", 'read -r _ && exec "$@" </dev/null', "sh")
TICK_S = 0.05
#: After a command's process has gone, how long its pipes may stay open before the job is swept.
LINGER_S = 1.0
RUNTIME = "bubblewrap"


@dataclass(frozen=True)
class ExecutorConfig:
    """How this host runs sandbox jobs.

    ``networks``: the policies it accepts (``full`` only if the operator allows it);
    ``allow_git``: whether it clones a request's git repo. The clone runs in the sandbox, on the
    job's clock, but on the host's network (its loopback and LAN included): allow it only where
    that network has nothing to hide;
    ``output_cap_bytes``: what it keeps of each command's stdout and of its stderr;
    ``pids_max``: processes a job may have at once; ``root``: where job dirs go;
    ``cgroup_parent``: a delegated v2 group to put jobs under; ``job_uids``: the host uids jobs
    run as when the node runs as root (each running job gets one of its own, so no two jobs can
    reach each other's files)."""

    networks: frozenset[NetworkPolicy] = frozenset({NetworkPolicy.NONE, NetworkPolicy.LOCALHOST})
    allow_git: bool = False
    output_cap_bytes: int = 1 << 20
    pids_max: int = 256
    root: Path | None = None
    cgroup_parent: str | None = None
    job_uids: range = range(1_000_000_000, 1_000_000_000 + (1 << 20))
    bwrap: str = "bwrap"
    proc: str = "/proc/self"  # where this process's mountinfo and cgroup files are read (tests point it elsewhere)


@dataclass(frozen=True)
class HostReadiness:
    """What :meth:`SandboxExecutor.probe` found: bubblewrap, the cgroup plan, the host view."""

    bwrap: str
    plan: CgroupPlan
    view: HostView
    as_root: bool


@dataclass
class _Ran:
    run: CommandRun
    stopped: str | None  # "timeout" | "cancelled" | "capped" | None


@dataclass
class _Job:
    request: SandboxRunRequest
    ready: HostReadiness
    cgroup: JobCgroup
    space: Workspace
    deadline_ns: int
    cancel: threading.Event | None
    runs: list[CommandRun] = field(default_factory=list)


class SandboxExecutor:
    """Runs sandbox jobs on this host (construction does no I/O; :meth:`probe` checks the host
    once, on first use)."""

    def __init__(self, config: ExecutorConfig | None = None) -> None:
        self.config = config or ExecutorConfig()
        self._lock = threading.Lock()
        self._ready: HostReadiness | None = None
        self._uids = _UidPool(self.config.job_uids)

    def probe(self) -> HostReadiness:
        """Check that this host can isolate and limit a job (bubblewrap, cgroups with the memory,
        pids and cpu controllers, libseccomp, a size-limited tmpfs); :class:`SandboxRefused`
        naming what is missing."""
        with self._lock:
            if self._ready is None:
                bwrap = shutil.which(self.config.bwrap)
                if bwrap is None:
                    raise SandboxRefused(
                        f"bubblewrap ({self.config.bwrap!r}) is not installed on this host", missing=("bubblewrap",)
                    )
                plan = detect_plan(proc=self.config.proc, parent=self.config.cgroup_parent)
                for policy in NetworkPolicy:
                    filter_bpf(policy)
                # The disk limit is a tmpfs: a host that cannot mount one refuses now, not job by job.
                Workspace.create(self._base_dir, f"probe-{uuid.uuid4().hex}", disk_mb=1, uid=None).remove()
                self._ready = HostReadiness(bwrap, plan, host_view(), os.geteuid() == 0)
            return self._ready

    def admit(self, request: SandboxRunRequest) -> HostReadiness:
        """Whether this host will run ``request`` as asked; :class:`SandboxRefused` if not."""
        if request.network not in self.config.networks:
            allowed = ", ".join(sorted(p.value for p in self.config.networks))
            raise SandboxRefused(
                f"this node does not allow network policy {request.network.value!r} (it allows {allowed})",
                missing=(f"network {request.network.value}",),
            )
        if request.repo is not None and request.repo.kind == "git" and not self.config.allow_git:
            raise SandboxRefused("this node does not clone git repositories", missing=("git clone",))
        return self.probe()

    def run(
        self,
        request: SandboxRunRequest,
        *,
        cancel: threading.Event | None = None,
        provider_pubkey: str = "",
    ) -> SandboxRunResponse:
        """Run ``request`` to its end and return the response (with provenance). A job the host
        cannot run as asked raises :class:`SandboxRefused` before anything runs; everything
        after that (a bad tarball, a full disk, a clone that fails) is a response with status
        ``error``. ``cancel`` stops it within a tick (status ``cancelled``)."""
        ready = self.admit(request)
        started_ns = time.monotonic_ns()
        executed_at = int(time.time())
        # Named at random, never after the job's id: another job knowing the id must not find it.
        name = f"job-{uuid.uuid4().hex}"
        uid = self._uids.take() if ready.as_root else None
        try:
            return self._run_as(request, ready, name, uid, cancel, provider_pubkey, started_ns, executed_at)
        finally:
            if uid is not None:
                self._uids.give_back(uid)

    def _run_as(
        self,
        request: SandboxRunRequest,
        ready: HostReadiness,
        name: str,
        uid: int | None,
        cancel: threading.Event | None,
        provider_pubkey: str,
        started_ns: int,
        executed_at: int,
    ) -> SandboxRunResponse:
        limits = request.limits
        cgroup = JobCgroup.create(
            ready.plan,
            name,
            CgroupLimits(memory_bytes=limits.memory_mb << 20, cpus=limits.cpus, pids=self.config.pids_max),
        )
        try:
            space = Workspace.create(self._base_dir, name, disk_mb=limits.disk_mb, uid=uid)
        except BaseException:
            cgroup.remove()
            raise
        job = _Job(request, ready, cgroup, space, started_ns + limits.timeout_secs * 1_000_000_000, cancel)
        try:
            evidence, artifacts = self._drive(job, started_ns)
        finally:
            cgroup.remove()
            space.remove()
        status = decide_status(evidence)
        runs = tuple(job.runs)
        bare = SandboxRunResponse(
            schema=SCHEMA,
            status=status,
            runs=runs,
            artifacts=artifacts,
            evidence=evidence,
            error=status_error(status, evidence, runs),
        )
        provenance = Provenance(
            input_sha256=request.sha256,
            output_sha256=bare.output_sha256,
            provider_pubkey=provider_pubkey,
            executed_at=executed_at,
            duration_ms=(time.monotonic_ns() - started_ns) // 1_000_000,
            runtime=RUNTIME,
        )
        return bare.model_copy(update={"provenance": provenance})

    def _drive(self, job: _Job, started_ns: int) -> tuple[Evidence, tuple[Any, ...]]:
        stopped: str | None = None
        failed: int | None = None
        setup_error: str | None = None
        artifacts: tuple[Any, ...] = ()
        try:
            stopped, setup_error = self._setup(job)
            if stopped is None and setup_error is None:
                for index, command in enumerate(job.request.commands):
                    ran = self._command(job, command)
                    job.runs.append(ran.run)
                    if ran.stopped is not None:
                        stopped = ran.stopped
                        failed = index if stopped == "capped" else None
                        break
                    if ran.run.exit_code != 0 and not command.continue_on_fail:
                        failed = index
                        break
            if not job.cgroup.kill():
                raise SetupFailed("processes of the job could not be killed")
            if setup_error is None:
                artifacts = job.space.collect(job.request.artifacts)
        except SetupFailed as exc:
            setup_error = exc.args[0] if exc.args else type(exc).__name__
        except OSError as exc:  # the host failed under the job (a full disk while staging, ...)
            setup_error = f"the node failed on the job: {type(exc).__name__}: {exc.strerror or exc}"
        return (
            Evidence(
                wall_ms=(time.monotonic_ns() - started_ns) // 1_000_000,
                timed_out=stopped == "timeout",
                cancelled=stopped == "cancelled",
                oom_kills=job.cgroup.oom_kills(),
                output_capped=stopped == "capped",
                failed_command=failed,
                setup_error=setup_error,
                cpu_ms=job.cgroup.cpu_ns() // 1_000_000,
                memory_peak_bytes=job.cgroup.memory_peak(),
                pids_limit_hits=job.cgroup.pids_limit_hits(),
            ),
            artifacts,
        )

    def _setup(self, job: _Job) -> tuple[str | None, str | None]:
        repo = job.request.repo
        if repo is None:
            return None, None
        if repo.kind == "tarball":
            assert repo.tarball_b64 is not None  # the schema's rule
            staged = job.space.stage_tarball(repo.tarball_b64)
            # GNU tar unpacks as the job's user inside the sandbox: whatever the archive holds
            # (links out, absolute paths, devices), it lands in the sandbox or nowhere.
            script = f"tar -xf {staged} --no-same-owner --no-same-permissions; status=$?; rm -f {staged}; exit $status"
            what, setup = "unpacking the repo tarball", SandboxCommand(cmd=script, workdir=repo.mount_path)
            ran = self._command(job, setup)
        else:
            assert repo.url is not None
            what = f"git clone of {repo.url}"
            ran = self._command(job, SandboxCommand(cmd=_clone_script(repo.url, repo.ref, repo.mount_path)), clone=True)
        if ran.stopped is not None:
            return ran.stopped, None
        if ran.run.exit_code != 0:
            return None, f"{what} failed (exit {ran.run.exit_code}): {ran.run.stderr_preview[-300:]}"
        return None, None

    def _command(self, job: _Job, command: SandboxCommand, *, clone: bool = False) -> _Ran:
        request = job.request
        network = NetworkPolicy.FULL if clone else request.network
        cap = self.config.output_cap_bytes
        stdout, stderr = CappedOutput(cap), CappedOutput(cap)
        seccomp = filter_fd(network)
        plan = BwrapPlan(
            work_dir=str(job.space.work),
            tmp_dir=str(job.space.tmp),
            shm_dir=str(job.space.shm),
            cmd=command.cmd,
            workdir=command.workdir,
            network=network,
            seccomp_fd=seccomp,
            env=job_environment({} if clone else request.env, _CLONE_ENV if clone else ()),
        )
        args = _args_fd(bwrap_args(plan, job.ready.view))
        started = time.monotonic_ns()
        try:
            proc = subprocess.Popen(
                [*GATE, job.ready.bwrap, "--args", str(args), *bwrap_command(plan)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(seccomp, args),
                env=HOST_ENV,
                start_new_session=True,
                **_as_job_user(job.space.uid),
            )
        except OSError as exc:
            raise SetupFailed(f"cannot start bubblewrap: {exc}") from None
        finally:
            os.close(seccomp)
            os.close(args)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            job.cgroup.join(proc.pid)
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        except OSError as exc:
            proc.kill()
            proc.wait()
            raise SetupFailed(f"cannot put the job in its cgroups: {exc}") from None
        stopped = self._supervise(job, proc, stdout, stderr)
        if stopped is not None:
            proc.kill()
            job.cgroup.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        code = proc.returncode
        killed = stopped is not None or code < 0
        return _Ran(
            command_run(
                command.cmd,
                exit_code=None if killed else code,
                signal=9 if killed else None,
                duration_ns=time.monotonic_ns() - started,
                stdout=stdout,
                stderr=stderr,
            ),
            stopped,
        )

    def _supervise(
        self, job: _Job, proc: subprocess.Popen[bytes], stdout: CappedOutput, stderr: CappedOutput
    ) -> str | None:
        assert proc.stdout is not None and proc.stderr is not None
        sinks = {proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr}
        with selectors.DefaultSelector() as selector:
            for fd in sinks:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            exited_at: float | None = None
            while selector.get_map():
                now = time.monotonic_ns()
                if now >= job.deadline_ns:
                    return "timeout"
                if job.cancel is not None and job.cancel.is_set():
                    return "cancelled"
                if exited_at is None and proc.poll() is not None:
                    exited_at = time.monotonic()
                elif exited_at is not None and time.monotonic() - exited_at > LINGER_S:
                    job.cgroup.kill()  # something outside the PID namespace's reach holds the pipes
                for key, _ in selector.select(min(TICK_S, (job.deadline_ns - now) / 1e9)):
                    fd = int(key.fd)
                    try:
                        chunk = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                    elif not sinks[fd].feed(chunk):
                        return "capped"
        return None

    @functools.cached_property
    def _base_dir(self) -> Path:
        base = self.config.root or Path(tempfile.gettempdir(), f"pylon-sandbox-{os.geteuid()}")
        base.mkdir(mode=0o711, parents=True, exist_ok=True)
        info = base.lstat()
        if base.is_symlink() or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise SandboxRefused(
                f"the sandbox job directory {base} is not this user's own private directory",
                missing=("a private job directory",),
            )
        base.chmod(0o711)  # job uids must traverse it to their own (0700) tmpfs; nobody may list it
        if os.geteuid() == 0:
            closed = [p for p in base.resolve().parents if not p.stat().st_mode & 0o001]
            if closed:
                raise SandboxRefused(
                    f"the sandbox job directory {base} is out of reach of the jobs' uids: "
                    f"{closed[0]} is not searchable by others (bubblewrap runs as that uid)",
                    missing=("a job directory its uid can reach",),
                )
        return base


class _UidPool:
    """Host uids for running jobs, one per job at a time (random within the range, so two nodes
    on one host are unlikely to meet either)."""

    def __init__(self, uids: range) -> None:
        self.uids = uids
        self._lock = threading.Lock()
        self._taken: set[int] = set()

    def take(self) -> int:
        with self._lock:
            for _ in range(64):
                uid = self.uids[secrets.randbelow(len(self.uids))]
                if uid not in self._taken:
                    self._taken.add(uid)
                    return uid
        raise SandboxRefused("no free job uid left in this node's range", missing=("a free job uid",))

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._taken.discard(uid)


def _args_fd(args: list[str]) -> int:
    """bubblewrap's arguments in a memory file (``--args FD`` reads them NUL-separated): the
    job's environment can be megabytes, more than a pipe holds without a writer thread."""
    fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
    os.write(fd, b"".join(arg.encode() + b"\0" for arg in args))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


_CLONE_ENV = (("GIT_TERMINAL_PROMPT", "0"), ("GIT_CONFIG_NOSYSTEM", "1"), ("GIT_ASKPASS", "/bin/false"))


def _clone_script(url: str, ref: str | None, mount_path: str) -> str:
    # Protocols limited to the network ones the schema accepts: no file://, no ext:: helpers.
    git = "git -c protocol.allow=never -c protocol.https.allow=always -c protocol.http.allow=always"
    git += " -c protocol.git.allow=always -c protocol.ssh.allow=always"
    where = shlex.quote(mount_path)
    return (
        f"{git} init -q {where} && cd {where} && {git} fetch -q --depth 1 {shlex.quote(url)} "
        f"{shlex.quote(ref or 'HEAD')} && {git} checkout -q FETCH_HEAD"
    )


def _as_job_user(uid: int | None) -> dict[str, Any]:
    return {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}


_default: SandboxExecutor | None = None
_default_lock = threading.Lock()


def run_local(
    request: SandboxRunRequest | dict[str, Any], *, cancel: threading.Event | None = None
) -> SandboxRunResponse:
    """Run a sandbox job on this host with the default :class:`SandboxExecutor` (a request or
    its JSON). :class:`SandboxRefused` when this host cannot isolate or limit it as asked."""
    from dspy_pylon.sandbox.schema import parse_request

    global _default
    parsed = request if isinstance(request, SandboxRunRequest) else parse_request(request)
    with _default_lock:
        if _default is None:
            _default = SandboxExecutor()
    return _default.run(parsed, cancel=cancel, provider_pubkey="local")
