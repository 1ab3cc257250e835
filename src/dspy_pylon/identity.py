"""Nostr identity: a BIP-39 mnemonic turned into keys the NIP-06 way, kept in a private file.

The identity file is ``<pylon home>/identity.mnemonic`` (home: ``$PYLON_HOME``, else
``~/.openagents/pylon``). It holds the recovery words on one line and is created with mode
0600, atomically, and never overwritten. Keys are derived by :mod:`dspy_pylon.nip06` along
``m/44'/1237'/<account>'/0/0`` (NIP-06; the same keys as nostr-sdk's ``Keys.from_mnemonic``) —
not from the first bytes of the seed, as the original Rust system did.

Secrets never leave their file: error messages name files, word positions and (for a typed
phrase) the first unknown word, never the phrase or a secret key; :class:`Identity` shows only
public data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import unicodedata
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from dspy_pylon import nip06
from dspy_pylon.durable import fsync_dir
from dspy_pylon.plain_errors import IdentityError, IdentityMissing, InvalidMnemonic

if TYPE_CHECKING:  # imported where used: `pylon spend` and pylon_home() need neither
    import nostr_sdk
    from mnemonic import Mnemonic

__all__ = [
    "IDENTITY_FILENAME",
    "VALID_STRENGTHS",
    "VALID_WORD_COUNTS",
    "Identity",
    "generate_mnemonic",
    "identity_path",
    "init_identity",
    "keys_from_mnemonic",
    "load_identity",
    "pylon_home",
    "resolve_keys",
    "validate_mnemonic",
]

log = logging.getLogger(__name__)

IDENTITY_FILENAME = "identity.mnemonic"
VALID_WORD_COUNTS = (12, 15, 18, 21, 24)
VALID_STRENGTHS = (128, 160, 192, 224, 256)
_MAX_FILE_BYTES = 4096  # a 24-word phrase is under 250 bytes; anything far larger is not an identity file
_SHOWN_WORD_CHARS = 24  # an unknown "word" longer than this is shortened in messages


@cache
def _english() -> Mnemonic:
    from mnemonic import Mnemonic

    return Mnemonic("english")


@cache
def _wordset() -> frozenset[str]:
    return frozenset(_english().wordlist)


def pylon_home() -> Path:
    """The Pylon home directory: ``$PYLON_HOME`` if set (and not empty), else ``~/.openagents/pylon``."""
    env = os.environ.get("PYLON_HOME", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".openagents" / "pylon"


def identity_path(home: Path | str | None = None) -> Path:
    """The identity file, ``<home>/identity.mnemonic`` (``home`` defaults to :func:`pylon_home`)."""
    return (Path(home).expanduser() if home is not None else pylon_home()) / IDENTITY_FILENAME


def _normalise(words: str) -> list[str]:
    # NFKD as BIP-39 prescribes, then lower case; split() drops every kind of whitespace run.
    return unicodedata.normalize("NFKD", words).lower().split()


def _diagnose(words: list[str]) -> tuple[str, str] | None:
    """What is wrong with a normalised phrase, or None.

    Returns ``(reason, detail)``: ``reason`` holds no word of the phrase (safe to show for a
    file); ``detail`` may add the first unknown word (for a phrase the user just typed).
    """
    allowed = ", ".join(str(n) for n in VALID_WORD_COUNTS)
    if len(words) not in VALID_WORD_COUNTS:
        reason = f"a mnemonic has {allowed} words, not {len(words)}"
        return reason, reason
    known = _wordset()
    for position, word in enumerate(words, start=1):
        if word not in known:
            shown = word if len(word) <= _SHOWN_WORD_CHARS else word[:_SHOWN_WORD_CHARS] + "..."
            reason = f"word {position} is not in the BIP-39 English wordlist"
            return reason, f"{reason}: {shown!r}"
    if not _english().check(" ".join(words)):
        reason = "the checksum does not match (a word is wrong or the words are out of order)"
        return reason, reason
    return None


def validate_mnemonic(words: str) -> str:
    """Check a BIP-39 English mnemonic and return it normalised (lower case, single spaces).

    Raises :class:`~dspy_pylon.errors.InvalidMnemonic` for a word count other than 12, 15, 18,
    21 or 24, for a word outside the wordlist (the first such word is named), or for a bad
    checksum. The phrase itself never appears in the message.
    """
    normalised = _normalise(words)
    problem = _diagnose(normalised)
    if problem is not None:
        raise InvalidMnemonic(f"invalid mnemonic: {problem[1]}; check the words against your written backup")
    return " ".join(normalised)


def keys_from_mnemonic(words: str, passphrase: str = "", account: int = 0) -> nostr_sdk.Keys:
    """Derive Nostr keys from a BIP-39 mnemonic with NIP-06 (path ``m/44'/1237'/<account>'/0/0``).

    ``passphrase`` is the optional BIP-39 passphrase ("25th word"); the empty string means none.
    It is hashed in its NFKD form as BIP-39 says (nostr-sdk's own ``Keys.from_mnemonic`` hashes
    it as typed, so a composed "ä" would give other keys than other BIP-39 wallets).
    Raises :class:`~dspy_pylon.errors.InvalidMnemonic` for a bad phrase and
    :class:`~dspy_pylon.errors.IdentityError` for an account outside ``0..2**31-1``.
    """
    import nostr_sdk

    normalised = validate_mnemonic(words)
    return nostr_sdk.Keys.parse(nip06.secret_from_mnemonic(normalised, passphrase, account).hex())


def generate_mnemonic(strength: int = 128) -> str:
    """A new random BIP-39 English mnemonic: 128 bits of entropy give 12 words, 256 give 24.

    ``strength`` must be one of 128, 160, 192, 224 or 256 (12, 15, 18, 21 or 24 words).
    """
    if strength not in VALID_STRENGTHS:
        allowed = ", ".join(str(s) for s in VALID_STRENGTHS)
        raise IdentityError(f"mnemonic strength must be one of {allowed} bits, not {strength}")
    return str(_english().generate(strength))


class Identity:
    """Loaded Nostr keys and where they came from. Shows only public data (npub, path).

    Holds the derived secret, not nostr-sdk ``Keys``: the CLI's quick commands read the npub
    without importing nostr-sdk (see :mod:`dspy_pylon.nip06`); :attr:`keys` builds them on use.
    Not a dataclass: ``dataclasses.asdict`` or a field-wise ``==`` would hand the secret out.
    Two identities are equal when their public keys and paths are.
    """

    __slots__ = ("_secret", "path")

    def __init__(self, secret: bytes, path: Path | None = None) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise IdentityError("an Identity needs the 32-byte secret key")
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "path", path)

    _secret: bytes
    path: Path | None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("an Identity is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("an Identity is read-only")

    @property
    def secret(self) -> bytes:
        """The 32-byte secret key. Never log, print or send it."""
        return self._secret

    @property
    def keys(self) -> nostr_sdk.Keys:
        """The nostr-sdk keys."""
        import nostr_sdk

        return nostr_sdk.Keys.parse(self._secret.hex())

    @property
    def npub(self) -> str:
        """The public key in NIP-19 form (``npub1...``)."""
        return nip06.npub(self.public_key_hex)

    @property
    def public_key_hex(self) -> str:
        """The public key as 64 lower-case hex characters."""
        return nip06.public_key_hex(self._secret)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self.public_key_hex == other.public_key_hex and self.path == other.path

    def __hash__(self) -> int:
        return hash((self.public_key_hex, self.path))

    def __reduce__(self) -> str:
        raise IdentityError("an Identity holds a secret key: it is never pickled")

    # Read-only: a copy (DSPy deep-copies programs) is the same identity, not a pickle round trip.
    def __copy__(self) -> Identity:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Identity:
        return self

    def __repr__(self) -> str:
        return f"Identity(npub={self.npub!r}, path={self.path!r})"

    __str__ = __repr__


def _ensure_home(home: Path) -> None:
    """Create ``home`` (parents as needed); a directory created here gets mode 0700."""
    home.parent.mkdir(parents=True, exist_ok=True)
    try:
        home.mkdir(mode=0o700)
    except FileExistsError:
        if not home.is_dir():
            raise IdentityError(f"{home} exists and is not a directory; set PYLON_HOME to a directory") from None
        return
    os.chmod(home, 0o700)  # mkdir's mode is filtered by the umask


def init_identity(home: Path | str | None = None, words: str | None = None) -> Path:
    """Create the identity file with a new mnemonic (or ``words``, validated) and return its path.

    The file is written to a temporary file created with mode 0600 in the same directory,
    fsynced, then hard-linked into place: an existing identity file is never overwritten (that
    raises :class:`~dspy_pylon.errors.IdentityError`) and a crash never leaves a partial file.
    """
    phrase = validate_mnemonic(words) if words is not None else generate_mnemonic()
    path = identity_path(home)
    if path.exists() or path.is_symlink():
        raise _exists(path)
    _ensure_home(path.parent)
    tmp = path.parent / f".{IDENTITY_FILENAME}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.write(fd, (phrase + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            raise IdentityError(
                f"cannot create {path} ({exc.strerror}); the directory's file system must support hard links"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    log.info("created identity file %s", path)
    return path


def _exists(path: Path) -> IdentityError:
    return IdentityError(
        f"identity file {path} already exists and will not be overwritten; "
        "use it as it is, or move it away yourself (it holds your only copy of the keys unless you wrote them down)"
    )


def load_identity(home: Path | str | None = None) -> Identity:
    """Load the identity file and derive its NIP-06 keys (account 0, no passphrase).

    Raises :class:`~dspy_pylon.errors.IdentityMissing` when there is no file (run ``pylon init``)
    and :class:`~dspy_pylon.errors.InvalidMnemonic` (naming the file, not its content) when the
    file does not hold a valid mnemonic. A file that group or others can read still loads, with a
    warning to ``chmod 600`` it.
    """
    path = identity_path(home)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise IdentityMissing(
            f"no identity file at {path}: run `pylon init` to create one "
            "(or set PYLON_HOME to the directory that holds identity.mnemonic)"
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise IdentityError(f"identity file {path} is not a regular file")
    if mode & 0o077:
        log.warning(
            "identity file %s can be read by other users (mode %s): run `chmod 600 %s`",
            path,
            oct(stat.S_IMODE(mode)),
            path,
        )
    reason: str | None
    if len(raw) > _MAX_FILE_BYTES:
        reason = "it is far larger than a mnemonic"
    else:
        try:
            problem = _diagnose(_normalise(raw.decode("utf-8")))
        except UnicodeDecodeError:
            problem = ("it is not UTF-8 text", "")
        reason = problem[0] if problem is not None else None
    if reason is not None:
        raise InvalidMnemonic(
            f"identity file {path} does not hold a valid mnemonic ({reason}); "
            "restore it from your written backup with `pylon init --restore` after moving the broken file away"
        )
    # Validated above; NIP-06 with no passphrase (nostr-sdk agrees: no passphrase to normalise).
    return Identity(secret=nip06.secret_from_mnemonic(validate_mnemonic(raw.decode("utf-8"))), path=path)


def resolve_keys(
    *,
    mnemonic: str | None = None,
    private_key: str | None = None,
    home: Path | str | None = None,
) -> nostr_sdk.Keys:
    """The keys to use: an explicit ``mnemonic`` wins, then ``private_key``, else the identity file.

    ``private_key`` is 64 hex characters or an ``nsec1...`` string; a bad one raises
    :class:`~dspy_pylon.errors.IdentityError` without repeating it. ``None`` means "not given".
    """
    if mnemonic is not None:
        return keys_from_mnemonic(mnemonic)
    if private_key is not None:
        import nostr_sdk

        try:
            return nostr_sdk.Keys.parse(private_key.strip())
        except nostr_sdk.NostrSdkError:
            raise IdentityError(
                "the private key is not valid: give 64 hex characters or an nsec1... string "
                "(an npub is a public key and cannot sign)"
            ) from None
    return load_identity(home).keys
