"""A sandbox job's files on the host: a tmpfs of the job's disk size holding its work dir, its
``/tmp`` and its ``/dev/shm``, the request's tarball staged in it (``tar`` unpacks it inside the
sandbox), artifacts collected from it, all of it removed after. (File system I/O only; what to
run and how is decided elsewhere.) Root never creates, unpacks or follows anything of the job's
inside the work dir: it only reads files the job left, once every process of the job is gone.

The disk limit is the tmpfs's size, which the kernel enforces (``ENOSPC``). Mounting one needs
``CAP_SYS_ADMIN`` (a node running as root, or in a user and mount namespace of its own): without
it a job is refused, not run with unlimited disk. Pages of a tmpfs are charged to the memory
cgroup of the process that writes them, so a job's files also count towards its memory limit.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import fnmatch
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from dspy_pylon.plain_errors import SandboxError, SandboxRefused
from dspy_pylon.sandbox.schema import ARTIFACT_INLINE_BYTES, Artifact

MAX_ARTIFACTS = 64
MAX_INLINE_TOTAL = 256 * 1024
MAX_WALK = 20_000
STAGED_TARBALL = ".pylon-repo.tar"
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


class SetupFailed(SandboxError):
    """A job's files could not be prepared (a bad tarball, a failed clone, a full disk): the job
    ends with status ``error`` and nothing of it runs."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass
class Workspace:
    """One job's directory tree: ``root`` (the tmpfs) holding ``work`` (``/work`` inside),
    ``tmp`` (``/tmp``) and ``shm`` (``/dev/shm``)."""

    root: Path
    uid: int | None = None  # files belong to this host uid (when the node runs as root)
    mounted: bool = False

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def shm(self) -> Path:
        return self.root / "shm"

    @classmethod
    def create(cls, base: Path, name: str, *, disk_mb: int, uid: int | None) -> Workspace:
        """Mount a ``disk_mb`` tmpfs at ``base/name`` and make the job's dirs on it;
        :class:`SandboxRefused` when the tmpfs cannot be mounted."""
        root = base / name
        root.mkdir(parents=True, exist_ok=False)
        root.chmod(0o700)
        space = cls(root, uid)
        owner = f",uid={uid},gid={uid}" if uid is not None else ""
        options = f"size={disk_mb}m,mode=0700{owner}".encode()
        if _libc().mount(b"tmpfs", str(root).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
            err = ctypes.get_errno()
            root.rmdir()
            raise SandboxRefused(
                f"cannot enforce the job's disk limit: mounting a {disk_mb} MB tmpfs failed ({os.strerror(err)}); "
                "a sandbox node needs CAP_SYS_ADMIN",
                missing=("a size-limited tmpfs for the work dir",),
            )
        space.mounted = True
        for path in (space.work, space.tmp, space.shm):
            path.mkdir(mode=0o700)
            if uid is not None:
                os.lchown(path, uid, uid)
        return space

    def stage_tarball(self, tarball_b64: str) -> str:
        """Write the request's tarball into the job's ``/tmp`` (``tar`` unpacks it inside the
        sandbox, as the job's user: the node never unpacks a customer's archive itself) and
        return its path inside the sandbox."""
        try:
            data = base64.b64decode(tarball_b64, validate=True)
        except (binascii.Error, ValueError):
            raise SetupFailed("the repo tarball is not valid base64") from None
        # Nothing of the job has run yet; still, never follow a link or reuse a file.
        fd = os.open(self.tmp / STAGED_TARBALL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            try:
                out.write(data)
                out.flush()
            except OSError as exc:  # ENOSPC: larger than the job's disk
                raise SetupFailed(f"the repo tarball does not fit in the job's disk: {exc.strerror}") from None
            if self.uid is not None:
                os.fchown(out.fileno(), self.uid, self.uid)
        return f"/tmp/{STAGED_TARBALL}"

    def collect(self, patterns: tuple[str, ...]) -> tuple[Artifact, ...]:
        """The regular files whose path inside the work dir matches one of ``patterns``
        (shell-style, ``*`` crossing directories), with hashes and sizes (the small ones inline),
        in path order, at most ``MAX_ARTIFACTS``. The walk never follows a link and looks at no
        more than ``MAX_WALK`` entries: a job cannot make the node read, or wander, outside its
        work dir. Call only once every process of the job is gone."""
        if not patterns:
            return ()
        found = [rel for rel in _walk(self.work) if any(fnmatch.fnmatchcase(rel, p) for p in patterns)]
        artifacts: list[Artifact] = []
        inline_left = MAX_INLINE_TOTAL
        for rel in sorted(found)[:MAX_ARTIFACTS]:
            digest, size, head = _hash_file(self.work / rel, keep=min(ARTIFACT_INLINE_BYTES, inline_left))
            if digest is None:
                continue
            inline = head if head is not None and len(head) == size else None
            if inline is not None:
                inline_left -= size
            artifacts.append(
                Artifact(
                    path=rel,
                    sha256=digest,
                    size_bytes=size,
                    content_b64=base64.b64encode(inline).decode() if inline is not None else None,
                )
            )
        return tuple(artifacts)

    def remove(self) -> None:
        """Unmount the tmpfs (its contents go with it) and remove the directory."""
        if self.mounted:
            _libc().umount2(str(self.root).encode(), _MNT_DETACH)
            self.mounted = False
        shutil.rmtree(self.root, ignore_errors=True)  # never follows links (fd-based on Linux)


def _walk(top: Path) -> list[str]:
    """Paths (relative, POSIX) of the regular files below ``top``, links never followed, at most
    ``MAX_WALK`` entries looked at."""
    found: list[str] = []
    stack = [""]
    seen = 0
    while stack and seen < MAX_WALK:
        rel = stack.pop()
        try:
            with os.scandir(top / rel if rel else top) as entries:
                listed = list(entries)
        except OSError:
            continue
        for entry in listed:
            seen += 1
            path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            elif entry.is_file(follow_symlinks=False):
                found.append(path)
    return found


def _hash_file(path: Path, *, keep: int) -> tuple[str | None, int, bytes | None]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, 0, None
    digest, size, head = hashlib.sha256(), 0, bytearray()
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None, 0, None
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            if len(head) <= keep:
                head += chunk[: keep + 1 - len(head)]
    return digest.hexdigest(), size, bytes(head) if len(head) <= keep else None
