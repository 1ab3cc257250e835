"""The isolated executor on this host, for real: bubblewrap, cgroups (v1 here), seccomp, a tmpfs
work dir. Each hostile job is contained with the status its evidence shows, and the host stays
healthy: no process, cgroup or mount of a job outlives it."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import dspy_pylon as pylon
from dspy_pylon.sandbox import (
    ExecutorConfig,
    NetworkPolicy,
    SandboxExecutor,
    SandboxRunRequest,
    SandboxStatus,
    run_local,
)
from dspy_pylon.sandbox.cgroups import PARENT_NAME

TINY = {"cpus": 1, "memory_mb": 256, "timeout_secs": 20, "disk_mb": 64}


def request(*cmds: str, **fields: Any) -> SandboxRunRequest:
    fields.setdefault("resources", TINY)
    return SandboxRunRequest(commands=[{"cmd": c} for c in cmds], **fields)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def executor() -> SandboxExecutor:
    return SandboxExecutor()


def _job_groups() -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if "cgroup" in line.split(" - ")[-1]:
            for folder, dirs, _ in os.walk(mountpoint):
                if os.path.basename(folder) == PARENT_NAME:
                    found += [d for d in dirs if d.startswith("job-")]
    return found


@pytest.fixture(autouse=True)
def host_stays_clean(executor: SandboxExecutor) -> Iterator[None]:
    mounts_before = Path("/proc/self/mounts").read_text().count("tmpfs")
    yield
    assert _job_groups() == [], "a job's cgroup outlived it"
    assert Path("/proc/self/mounts").read_text().count("tmpfs") == mounts_before, "a job's tmpfs outlived it"
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still start processes


def test_a_normal_run_reports_exit_codes_hashes_previews_and_provenance(executor: SandboxExecutor) -> None:
    req = request("echo hello; echo oops >&2", "printf 'x%.0s' 1 2 3 > out.txt; exit 3", artifacts=("*.txt",))
    res = executor.run(req, provider_pubkey="ab" * 32)
    assert res.status is SandboxStatus.FAILED and res.evidence.failed_command == 1
    first, second = res.runs
    assert (first.exit_code, first.stdout_preview, first.stderr_preview) == (0, "hello\n", "oops\n")
    assert first.stdout_sha256 == sha(b"hello\n") and first.stdout_bytes == 6
    assert second.exit_code == 3
    (artifact,) = res.artifacts
    assert (artifact.path, artifact.size_bytes, artifact.sha256) == ("out.txt", 3, sha(b"xxx"))
    assert base64.b64decode(artifact.content_b64 or "") == b"xxx"
    assert res.provenance is not None
    assert res.provenance.input_sha256 == req.sha256
    assert res.provenance.output_sha256 == res.output_sha256
    assert res.provenance.provider_pubkey == "ab" * 32 and res.provenance.runtime == "bubblewrap"
    assert res.evidence.cpu_ms >= 0 and res.evidence.memory_peak_bytes > 0
    assert "exited with 3" in (res.error or "")


def test_continue_on_fail_runs_the_next_command_and_the_job_succeeds(executor: SandboxExecutor) -> None:
    req = SandboxRunRequest(
        commands=[{"cmd": "false", "continue_on_fail": True}, {"cmd": "echo after"}], resources=TINY
    )
    res = executor.run(req)
    assert res.status is SandboxStatus.SUCCESS
    assert [r.exit_code for r in res.runs] == [1, 0]


def test_commands_share_the_work_dir_and_run_in_their_workdir(executor: SandboxExecutor) -> None:
    req = SandboxRunRequest(
        commands=[{"cmd": "mkdir -p sub && echo 1 > sub/f"}, {"cmd": "pwd; cat f", "workdir": "sub"}],
        resources=TINY,
    )
    res = executor.run(req)
    assert res.status is SandboxStatus.SUCCESS
    assert res.runs[1].stdout_preview == "/work/sub\n1\n"


def test_no_network_under_none_not_even_a_loopback_socket(executor: SandboxExecutor) -> None:
    probe = (
        'python3 -c "import socket\n'
        "for fam in (socket.AF_INET, socket.AF_INET6):\n"
        "    try:\n        socket.socket(fam); print('opened')\n"
        "    except OSError as e: print('refused', e.errno)\n"
        "socket.socket(socket.AF_UNIX); print('unix ok')\""
    )
    res = executor.run(request(probe))
    assert res.status is SandboxStatus.SUCCESS, res.runs[0].stderr_preview
    assert res.runs[0].stdout_preview == "refused 13\nrefused 13\nunix ok\n"


def test_localhost_is_a_loopback_of_its_own_not_the_hosts(executor: SandboxExecutor) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        script = (
            'python3 -c "import socket\n'
            "s = socket.create_server(('127.0.0.1', 0))\n"
            "c = socket.create_connection(s.getsockname()); print('own ok')\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('host reached')\n"
            "except OSError: print('host unreachable')\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 80), timeout=2); print('internet reached')\n"
            "except OSError: print('internet unreachable')\""
        )
        res = executor.run(request(script, network="localhost"))
    assert res.runs[0].stdout_preview == "own ok\nhost unreachable\ninternet unreachable\n", res.runs[0].stderr_preview


def test_full_network_is_refused_unless_the_node_allows_it(executor: SandboxExecutor) -> None:
    with pytest.raises(pylon.SandboxRefused, match="network policy 'full'") as caught:
        executor.run(request("true", network="full"))
    assert isinstance(caught.value, pylon.PylonError) and caught.value.missing == ("network full",)


def test_writes_outside_the_work_dir_fail_and_the_host_sees_nothing(executor: SandboxExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "escape"
    script = (
        f"for p in /etc/x /usr/x /x /proc/x {marker} /root/x; do touch $p 2>/dev/null && echo wrote $p; done;"
        " touch /work/in /tmp/t && echo inside ok; ls /root /home 2>&1 | head -2"
    )
    res = executor.run(request(script))
    out = res.runs[0].stdout_preview
    assert "wrote" not in out and "inside ok" in out
    assert not marker.exists()


def test_the_job_has_no_privileges_and_the_seccomp_filter_is_on(executor: SandboxExecutor) -> None:
    script = (
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; id -u;"
        " unshare -r true 2>/dev/null && echo unshared || echo no-unshare;"
        " python3 -c \"import ctypes; print('ptrace', ctypes.CDLL(None, use_errno=True).ptrace(16, 1, 0, 0))\""
    )
    res = executor.run(request(script))
    assert res.runs[0].stdout_preview == (
        "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n1000\nno-unshare\nptrace -1\n"
    )


def test_the_providers_environment_does_not_leak_and_the_jobs_does_not_appear_in_ps(
    executor: SandboxExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYLON_TEST_PROVIDER_SECRET", "s3cret")
    seen: list[str] = []
    req = request("sleep 0.3; env | sort", env={"JOB_TOKEN": "tok-123"})
    job = threading.Thread(target=lambda: seen.append(executor.run(req).runs[0].stdout_preview))
    job.start()
    time.sleep(0.15)
    cmdlines = [" ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"])]
    job.join()
    assert "JOB_TOKEN=tok-123" in seen[0] and "s3cret" not in seen[0]
    assert "HOME=/work" in seen[0]
    assert not any("tok-123" in line for line in cmdlines)


def test_a_fork_bomb_is_held_to_the_process_limit(executor: SandboxExecutor) -> None:
    req = request("b(){ b | b & }; b; sleep 2; echo survived", resources={**TINY, "timeout_secs": 5})
    res = executor.run(req)
    assert res.evidence.pids_limit_hits > 0
    assert res.status in (SandboxStatus.SUCCESS, SandboxStatus.TIMEOUT)
    assert res.evidence.cpu_ms <= res.evidence.wall_ms * 1.2 + 50  # one CPU's quota, not the host's two


def test_allocating_past_the_memory_limit_is_oom(executor: SandboxExecutor) -> None:
    res = executor.run(request("python3 -c 'x = bytearray(600 * 1024 * 1024)'"))
    assert res.status is SandboxStatus.OOM
    assert res.evidence.oom_kills >= 1
    assert res.evidence.memory_peak_bytes <= 256 * 1024 * 1024 + 4096
    assert "memory limit" in (res.error or "")


def test_past_the_time_limit_is_timeout_and_later_commands_do_not_run(executor: SandboxExecutor) -> None:
    req = request("sleep 30", "echo never", resources={**TINY, "timeout_secs": 1})
    started = time.monotonic()
    res = executor.run(req)
    assert time.monotonic() - started < 5
    assert res.status is SandboxStatus.TIMEOUT and res.evidence.timed_out
    assert len(res.runs) == 1 and res.runs[0].exit_code is None and res.runs[0].signal == 9


def test_100_mb_of_output_is_capped_and_the_status_says_so(executor: SandboxExecutor) -> None:
    res = executor.run(request("head -c 100000000 /dev/zero; echo after"))
    run = res.runs[0]
    cap = executor.config.output_cap_bytes
    assert run.output_capped and run.stdout_bytes == cap and run.stdout_sha256 == sha(b"\0" * cap)
    assert res.status is SandboxStatus.FAILED and res.evidence.output_capped
    assert "cap" in (res.error or "")


def test_a_setsid_grandchild_is_killed_with_its_job(executor: SandboxExecutor) -> None:
    marker = "sleep 4242.5"
    res = executor.run(request(f"setsid sh -c '{marker}' >/dev/null 2>&1 & echo started", "sleep 0.2; echo second"))
    assert res.status is SandboxStatus.SUCCESS
    assert [r.stdout_preview for r in res.runs] == ["started\n", "second\n"]
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]
    assert leftovers == []


def test_the_disk_limit_is_the_work_dirs_size(executor: SandboxExecutor) -> None:
    res = executor.run(request("head -c 100000000 /dev/zero > big", resources={**TINY, "disk_mb": 16}))
    assert res.status is SandboxStatus.FAILED
    assert "No space left" in res.runs[0].stderr_preview


def test_cancel_stops_a_running_job(executor: SandboxExecutor) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    res = executor.run(request("sleep 30"), cancel=cancel)
    assert time.monotonic() - started < 3
    assert res.status is SandboxStatus.CANCELLED and res.evidence.cancelled


def _tarball(files: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buf.getvalue()).decode()


def test_an_inline_tarball_is_the_repo_and_its_tests_run(executor: SandboxExecutor) -> None:
    suite = (
        b"import unittest\n\nclass T(unittest.TestCase):\n"
        b"    def test_ok(self):\n        self.assertEqual(1 + 1, 2)\n\n"
        b"    def test_also(self):\n        self.assertIn('a', 'abc')\n"
    )
    repo = {"kind": "tarball", "tarball_b64": _tarball({"test_math.py": suite, "README": b"hi"})}
    req = SandboxRunRequest(
        commands=[
            {"cmd": "ls; cat README", "workdir": "repo"},
            {"cmd": "python3 -m unittest -q 2>&1", "workdir": "repo"},
        ],
        repo=repo,
        resources=TINY,
    )
    res = executor.run(req)
    assert res.status is SandboxStatus.SUCCESS, res.runs
    assert res.runs[0].stdout_preview == "README\ntest_math.py\nhi"
    assert "Ran 2 tests" in res.runs[1].stdout_preview


def test_a_tarball_escaping_the_work_dir_is_a_setup_error_and_nothing_runs(executor: SandboxExecutor) -> None:
    repo = {"kind": "tarball", "tarball_b64": _tarball({"../../evil": b"x"})}
    res = executor.run(SandboxRunRequest(commands=[{"cmd": "echo ran"}], repo=repo, resources=TINY))
    assert res.status is SandboxStatus.ERROR and res.runs == ()
    assert "tarball" in (res.evidence.setup_error or "")


def test_artifacts_never_follow_links_out_of_the_work_dir(executor: SandboxExecutor) -> None:
    res = executor.run(
        request("ln -s /etc/hostname stolen; mkdir d; ln -s /etc d/x; ln -s / root; echo k > keep", artifacts=("*",))
    )
    assert [a.path for a in res.artifacts] == ["keep"]


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("git")
    work = base / "src"
    work.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "one"], ["tag", "v1"]):
        if args[0] == "add":
            (work / "hello.txt").write_text("from git\n")
        subprocess.run(["git", *args], cwd=work, env=env, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(base / "repo.git")], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"git://127.0.0.1:{port}/repo.git"
    daemon.terminate()
    daemon.wait()


@pytest.fixture(scope="module")
def cloning() -> SandboxExecutor:
    return SandboxExecutor(ExecutorConfig(allow_git=True))


def test_a_git_repo_is_cloned_at_its_ref(cloning: SandboxExecutor, git_server: str) -> None:
    repo = {"kind": "git", "url": git_server, "ref": "v1", "mount_path": "code"}
    res = cloning.run(
        SandboxRunRequest(commands=[{"cmd": "cat hello.txt", "workdir": "code"}], repo=repo, resources=TINY)
    )
    assert res.status is SandboxStatus.SUCCESS, res.evidence
    assert res.runs[0].stdout_preview == "from git\n"


def test_a_clone_that_fails_is_a_setup_error(cloning: SandboxExecutor, git_server: str) -> None:
    repo = {"kind": "git", "url": git_server, "ref": "no-such-ref"}
    res = cloning.run(SandboxRunRequest(commands=[{"cmd": "echo ran"}], repo=repo, resources=TINY))
    assert res.status is SandboxStatus.ERROR and res.runs == ()
    assert "git clone" in (res.evidence.setup_error or "")


def test_a_node_that_does_not_clone_refuses_git_jobs() -> None:
    strict = SandboxExecutor()  # cloning is off unless the operator turns it on
    repo = {"kind": "git", "url": "https://example.org/x.git"}
    with pytest.raises(pylon.SandboxRefused, match="git"):
        strict.run(SandboxRunRequest(commands=[{"cmd": "true"}], repo=repo, resources=TINY))


def test_a_host_without_the_memory_controller_refuses_the_job(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    lines = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "memory" not in line]
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    (proc / "cgroup").write_text(Path("/proc/self/cgroup").read_text())
    weak = SandboxExecutor(ExecutorConfig(proc=str(proc)))
    with pytest.raises(pylon.SandboxRefused, match="memory cgroup controller") as caught:
        weak.run(request("echo must not run"))
    assert any("memory" in m for m in caught.value.missing)


def test_a_host_without_bubblewrap_refuses_the_job() -> None:
    with pytest.raises(pylon.SandboxRefused, match="bubblewrap") as caught:
        SandboxExecutor(ExecutorConfig(bwrap="no-such-bwrap")).run(request("true"))
    assert caught.value.missing == ("bubblewrap",)


def test_run_local_takes_json_and_a_bad_request_is_a_sandbox_error() -> None:
    res = run_local({"commands": [{"cmd": "echo hi"}], "resources": TINY})
    assert res.status is SandboxStatus.SUCCESS and res.provenance is not None
    assert res.provenance.provider_pubkey == "local"
    with pytest.raises(pylon.SandboxError, match="commands"):
        run_local({"commands": []})


def test_network_policy_enum_is_what_the_executor_checks() -> None:
    assert set(ExecutorConfig().networks) == {NetworkPolicy.NONE, NetworkPolicy.LOCALHOST}


def test_a_job_directory_the_job_uid_cannot_reach_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs the root node setup CI has (a job uid to drop to)")
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    with pytest.raises(pylon.SandboxRefused, match="out of reach"):
        SandboxExecutor(ExecutorConfig(root=hidden / "jobs")).run(request("true"))


def test_the_requests_environment_never_reaches_the_host_side(executor: SandboxExecutor, tmp_path: Path) -> None:
    trap = tmp_path / "ld-debug"
    env = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(trap), "LD_PRELOAD": "/work/evil.so", "MINE": "1"}
    res = executor.run(request("true", "unset LD_DEBUG LD_PRELOAD; printenv MINE LD_DEBUG_OUTPUT", env=env))
    assert res.runs[1].stdout_preview.endswith(f"1\n{trap}\n")  # the job has its variables...
    assert not list(tmp_path.glob("ld-debug*"))  # ...and nothing on the host ran with them


def test_a_tarball_cannot_write_outside_the_sandbox_through_a_link(executor: SandboxExecutor, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        archive.addfile(link)
        evil = tarfile.TarInfo("out/planted")
        evil.size = 2
        archive.addfile(evil, io.BytesIO(b"x\n"))
    repo = {"kind": "tarball", "tarball_b64": base64.b64encode(buf.getvalue()).decode()}
    res = executor.run(SandboxRunRequest(commands=[{"cmd": "ls -la"}], repo=repo, resources=TINY))
    assert not (tmp_path / "planted").exists()
    assert res.status in (SandboxStatus.SUCCESS, SandboxStatus.ERROR)


def test_dev_shm_counts_towards_the_disk_limit(executor: SandboxExecutor) -> None:
    res = executor.run(request("head -c 100000000 /dev/zero > /dev/shm/big", resources={**TINY, "disk_mb": 16}))
    assert "No space left" in res.runs[0].stderr_preview
    res = executor.run(request("touch /dev/x"))
    assert "Read-only" in res.runs[0].stderr_preview


def test_a_workdir_the_job_made_into_a_file_is_the_jobs_own_failure(executor: SandboxExecutor) -> None:
    req = SandboxRunRequest(commands=[{"cmd": "echo > f"}, {"cmd": "pwd", "workdir": "f/x"}], resources=TINY)
    res = executor.run(req)
    assert res.status is SandboxStatus.FAILED and res.evidence.failed_command == 1
    assert res.runs[1].exit_code != 0 and "Not a directory" in res.runs[1].stderr_preview


def test_concurrent_jobs_run_as_different_host_uids(executor: SandboxExecutor) -> None:
    from dspy_pylon.sandbox.executor import _UidPool

    pool = _UidPool(range(100, 104))
    taken = {pool.take() for _ in range(4)}
    assert taken == {100, 101, 102, 103}
    with pytest.raises(pylon.SandboxRefused, match="no free job uid"):
        pool.take()
    pool.give_back(101)
    assert pool.take() == 101
    owners: list[int] = []

    def owner_of_work() -> None:
        base = executor._base_dir
        for _ in range(200):
            # A job's dir is root's until its tmpfs (owned by the job's uid) is mounted on it.
            mounted = [p.stat().st_uid for p in base.iterdir() if p.name.startswith("job-")]
            mounted = [uid for uid in mounted if uid != 0]
            if len(mounted) == 2:
                owners.extend(mounted)
                return
            time.sleep(0.01)

    jobs = [threading.Thread(target=executor.run, args=(request("sleep 1"),)) for _ in range(2)]
    for job in jobs:
        job.start()
    owner_of_work()
    for job in jobs:
        job.join()
    assert len(owners) == 2 and owners[0] != owners[1] and 0 not in owners
