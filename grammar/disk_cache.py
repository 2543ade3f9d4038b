"""GrammarDiskCache: compiled outlines-core Indexes on disk, data only and authenticated.

An entry ``<dir>/<key>.index`` holds ``Index.from_binary``'s bytes (Rust bincode: loading runs no
code; nothing here is ever unpickled), behind a header and an HMAC-SHA256 tag made with a per-user
secret, ``<dir>/.key`` (32 random bytes, mode 0600). Layout, integers big-endian::

    magic b"LOOMIDX\\0" | format version u16 | key length u16 | key (ASCII) | payload length u64
    | tag (32 bytes) = HMAC-SHA256(secret, everything before the tag + payload) | payload

An entry that is truncated, corrupt, or foreign (other magic, version, key, length or tag) is a miss:
it is logged and the caller recompiles and rewrites it. The folder is kept 0700; if it or the secret
belongs to another user, or the secret is readable by group or others, the disk cache is not used at
all (one warning). Disk errors never fail a compile: they are logged and the cache steps aside."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from outlines_core import Index

logger = logging.getLogger(__name__)

MAGIC = b"LOOMIDX\x00"
FORMAT_VERSION = 1
SECRET_NAME = ".key"
SECRET_BYTES = 32
_TAG_BYTES = 32
_FIXED = struct.Struct(">8sHH")  # magic, format version, key length
_LENGTH = struct.Struct(">Q")  # payload length
_KEY_PATTERN = re.compile(r"[0-9a-f]{8,128}")


def index_to_bytes(index: Any) -> bytes:
    """The bytes ``Index.from_binary`` rebuilds ``index`` from (outlines-core 0.2's ``__reduce__``)."""
    reduced = index.__reduce__()
    data = reduced[1][0] if len(reduced) > 1 and len(reduced[1]) == 1 else None
    if not isinstance(data, bytes):
        raise TypeError(f"cannot serialise {type(index).__name__}: unexpected __reduce__ {reduced[0]!r}")
    return data


class GrammarDiskCache:
    """``read(key) -> Index | None`` and ``write(key, index)`` in one folder; thread-safe."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self._disabled = False

    def read(self, key: str) -> Index | None:
        secret = self._ready()
        if secret is None:
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("grammar cache entry %s is unreadable (%s); recompiling", path, exc)
            return None
        payload, problem = _unpack(data, key, secret)
        if payload is None:
            logger.warning("grammar cache entry %s ignored: %s; recompiling it", path, problem)
            return None
        try:
            return Index.from_binary(payload)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # ValueError, or a Rust panic (pyo3 PanicException)
            logger.warning("grammar cache entry %s does not load (%r); recompiling it", path, exc)
            return None

    def write(self, key: str, index: Any) -> None:
        secret = self._ready()
        if secret is None:
            return
        path = self._path(key)
        try:
            data = _pack(key, index_to_bytes(index), secret)
        except TypeError as exc:
            logger.warning("grammar cache entry %s not written: %s", path, exc)
            return
        tmp_name = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".index")
            with os.fdopen(fd, "wb") as tmp:  # mkstemp creates the file 0600
                tmp.write(data)
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:  # a full or read-only disk must not fail compiles
            logger.warning("grammar cache entry %s not written: %s", path, exc)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def _path(self, key: str) -> Path:
        if not _KEY_PATTERN.fullmatch(key):
            raise ValueError(f"grammar cache keys are lowercase hex digests, got {key!r}")
        return self.directory / f"{key}.index"

    def _ready(self) -> bytes | None:
        """The secret once the folder checks out; None (after one warning) if the cache is unusable."""
        if self._secret is not None or self._disabled:
            return self._secret
        with self._lock:
            if self._secret is None and not self._disabled:
                try:
                    self._prepare_directory()
                    self._secret = self._load_or_create_secret()
                except (OSError, _Unsafe) as exc:
                    self._disabled = True
                    logger.warning("grammar disk cache %s is not used: %s", self.directory, exc)
            return self._secret

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            raise _Unsafe("it is not a directory")
        if info.st_uid != _uid():
            raise _Unsafe(f"it belongs to uid {info.st_uid}, not to this user ({_uid()})")
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(self.directory, 0o700)

    def _load_or_create_secret(self) -> bytes:
        path = self.directory / SECRET_NAME
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return self._create_secret(path)
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != _uid():
                raise _Unsafe(f"{path} is not a file of this user")
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise _Unsafe(
                    f"{path} is readable or writable by group or others (mode "
                    f"{stat.S_IMODE(info.st_mode):o}); remove it or chmod it 600"
                )
            secret = f.read(SECRET_BYTES + 1)
        if len(secret) != SECRET_BYTES:
            raise _Unsafe(f"{path} holds {len(secret)} bytes, not {SECRET_BYTES}; remove it")
        return secret

    def _create_secret(self, path: Path) -> bytes:
        """Write the secret to a private temp file, then link it in place: a hard link, like O_EXCL,
        fails if another process got there first (then its secret is used), and is never partial."""
        secret = secrets.token_bytes(SECRET_BYTES)
        fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-key-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(secret)
            try:
                os.link(tmp_name, path)
            except FileExistsError:
                return self._load_or_create_secret()
            except OSError:  # no hard links on this file system: O_EXCL, mode 0600
                try:
                    new = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    return self._load_or_create_secret()
                with os.fdopen(new, "wb") as f:
                    f.write(secret)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        return secret


class _Unsafe(Exception):
    """The cache folder or its secret fails an ownership or permission check."""


def _uid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else -1


def _prefix(key: bytes, payload_length: int) -> bytes:
    return _FIXED.pack(MAGIC, FORMAT_VERSION, len(key)) + key + _LENGTH.pack(payload_length)


def _pack(key: str, payload: bytes, secret: bytes) -> bytes:
    prefix = _prefix(key.encode("ascii"), len(payload))
    tag = hmac.new(secret, prefix + payload, hashlib.sha256).digest()
    return prefix + tag + payload


def _unpack(data: bytes, key: str, secret: bytes) -> tuple[bytes | None, str]:
    """(payload, "") for a sound entry of ``key``, else (None, why not)."""
    if len(data) < _FIXED.size:
        return None, f"truncated ({len(data)} bytes)"
    magic, file_version, key_length = _FIXED.unpack_from(data)
    if magic != MAGIC:
        return None, "not a loomlm grammar cache entry (bad magic)"
    if file_version != FORMAT_VERSION:
        return None, f"format version {file_version}, expected {FORMAT_VERSION}"
    key_end = _FIXED.size + key_length
    if len(data) < key_end + _LENGTH.size + _TAG_BYTES:
        return None, f"truncated header ({len(data)} bytes)"
    if data[_FIXED.size : key_end] != key.encode("ascii"):
        return None, "written for another cache key"
    (payload_length,) = _LENGTH.unpack_from(data, key_end)
    payload_start = key_end + _LENGTH.size + _TAG_BYTES
    if len(data) - payload_start != payload_length:
        return None, f"payload is {len(data) - payload_start} bytes, header says {payload_length}"
    tag = data[payload_start - _TAG_BYTES : payload_start]
    payload = data[payload_start:]
    expected = hmac.new(secret, data[: payload_start - _TAG_BYTES] + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        return None, "authentication tag mismatch (tampered, or written with another secret)"
    return payload, ""
