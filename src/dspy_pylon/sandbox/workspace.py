"""A sandbox job's files on the host: a tmpfs of the job's disk size holding its work dir and its
``/tmp``, the request's tarball unpacked into it, artifacts collected from it, all of it removed
after. (File system I/O only; what to run and how is decided elsewhere.)

The disk limit is the tmpfs's size, which the kernel enforces (``ENOSPC``). Mounting one needs
``CAP_SYS_ADMIN`` (a node running as root, or in a user and mount namespace of its own): without
it a job is refused, not run with unlimited disk. Pages of a tmpfs are charged to the memory
cgroup of the process that writes them, so a job's files also count towards its memory limit.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import hashlib
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from dspy_pylon.plain_errors import SandboxError, SandboxRefused
from dspy_pylon.sandbox.schema import ARTIFACT_INLINE_BYTES, Artifact

MAX_ARTIFACTS = 64
MAX_INLINE_TOTAL = 256 * 1024
MAX_TAR_MEMBERS = 20_000
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


class SetupFailed(SandboxError):
    """A job's files could not be prepared (a bad tarball, a failed clone, a full disk): the job
    ends with status ``error`` and nothing of it runs."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass
class Workspace:
    """One job's directory tree: ``root`` (the tmpfs), ``work`` (``/work`` inside), ``tmp``."""

    root: Path
    uid: int | None = None  # files belong to this host uid (when the node runs as root)
    mounted: bool = False

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def create(cls, base: Path, name: str, *, disk_mb: int, uid: int | None) -> Workspace:
        """Mount a ``disk_mb`` tmpfs at ``base/name`` and make the work and tmp dirs on it;
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
        for path in (space.work, space.tmp):
            path.mkdir(mode=0o700)
            space._own(path)
        return space

    def _own(self, path: Path) -> None:
        if self.uid is not None:
            os.lchown(path, self.uid, self.uid)

    def unpack_tarball(self, tarball_b64: str, mount_path: str) -> None:
        """Unpack an inline ``.tar.gz`` at ``work/mount_path`` with tarfile's ``data`` filter (no
        absolute paths, no links out of the tree, no devices, no setuid bits)."""
        try:
            data = base64.b64decode(tarball_b64, validate=True)
        except (binascii.Error, ValueError):
            raise SetupFailed("the repo tarball is not valid base64") from None
        target = self.work / mount_path
        target.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                members = archive.getmembers()
                if len(members) > MAX_TAR_MEMBERS:
                    raise SetupFailed(f"the repo tarball has over {MAX_TAR_MEMBERS} entries")
                archive.extractall(target, members=members, filter="data")
        except SetupFailed:
            raise
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ENOSPC included: the disk limit
            raise SetupFailed(f"the repo tarball could not be unpacked: {type(exc).__name__}: {exc}") from None
        self.own_tree(self.work)

    def own_tree(self, top: Path) -> None:
        """Give everything below ``top`` to the job's uid."""
        if self.uid is None:
            return
        self._own(top)
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                self._own(Path(folder, name))

    def ensure_dir(self, rel: str) -> None:
        """Make ``work/rel`` (and the job's own parents of it) if missing. A path the job made
        into a link is left alone: bubblewrap then fails to enter it, inside the sandbox."""
        path = self.work
        for part in Path(rel).parts:
            path = path / part
            if path.is_symlink():
                return
            if not path.exists():
                path.mkdir(mode=0o755)
                self._own(path)

    def collect(self, patterns: tuple[str, ...]) -> tuple[Artifact, ...]:
        """The regular files matching ``patterns``, with hashes and sizes (the small ones inline),
        in path order, at most ``MAX_ARTIFACTS``. Links are never followed: a job cannot make the
        node read a file outside its work dir."""
        work = self.work.resolve()
        found: dict[str, Path] = {}
        for pattern in patterns:
            for path in sorted(self.work.glob(pattern)):
                rel = path.relative_to(self.work).as_posix()
                if rel in found or not _inside(path, work):
                    continue
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(path.lstat().st_mode):
                        found[rel] = path
                if len(found) >= MAX_ARTIFACTS:
                    break
        artifacts: list[Artifact] = []
        inline_left = MAX_INLINE_TOTAL
        for rel in sorted(found)[:MAX_ARTIFACTS]:
            digest, size, head = _hash_file(found[rel], keep=min(ARTIFACT_INLINE_BYTES, inline_left))
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
        shutil.rmtree(self.root, ignore_errors=True)


def _inside(path: Path, work: Path) -> bool:
    try:
        path.parent.resolve(strict=True).relative_to(work)
    except (OSError, ValueError):
        return False
    return True


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
