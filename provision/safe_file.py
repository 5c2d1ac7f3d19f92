"""Replace a user's file so that a crash, a kill or a second run never leaves it broken.

Atomic: the new content goes to a temporary file in the same directory, is fsynced,
then renamed over the old one (rename is atomic within a file system), and the
directory is fsynced so the rename survives a power cut. A symlinked file is followed
and its target replaced (the link stays a link). The file's mode (and owner, when we
may) is kept; a new file is 0600 and a new directory 0700, because a Codex config can
hold credentials. Runs serialise on a lock file, so two runs never lose each other's
edit. The previous content is kept as `NAME.bak-<UTC timestamp>`, the newest few only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from provision.errors import EXIT_NOT_READY, ProvisionError, UsageError

NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
KEEP_BACKUPS = 5
LOCK_WAIT_S = 30.0
TEMP_SUFFIX = ".ollama-provision.tmp"  # our temporary files: removable under the lock


@dataclass(frozen=True)
class FileState:
    """A file as it was read: where it is, what it held, what may be done to it."""

    path: Path  # as named (may be a symlink)
    real_path: Path  # symlinks followed: the file that is replaced
    raw: bytes | None  # None: no such file yet
    mode: int | None
    owner: tuple[int, int] | None
    writable: bool

    @property
    def exists(self) -> bool:
        return self.raw is not None


def read_state(path: Path) -> FileState:
    real = Path(os.path.realpath(path))
    try:
        raw = real.read_bytes()
        info = real.stat()
    except FileNotFoundError:
        return FileState(path, real, None, None, None, True)
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(info.st_mode)
    # A file without write permission says "do not change me", even to root.
    writable = bool(mode & 0o222) and os.access(real, os.W_OK)
    return FileState(path, real, raw, mode, (info.st_uid, info.st_gid), writable)


def ensure_dir(directory: Path) -> None:
    """Create missing directories as 0700 (umask would otherwise widen them)."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=NEW_DIR_MODE)
            os.chmod(folder, NEW_DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _write_error(exc, folder, folder.parent, 0, "create") from None


def write_atomic(state: FileState, data: bytes) -> None:
    """Replace `state.real_path` with `data`: old or new content, never a mix."""
    target = state.real_path
    ensure_dir(target.parent)
    mode = state.mode if state.mode is not None else NEW_FILE_MODE
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX,
                                    dir=target.parent)
    except OSError as exc:
        raise _write_error(exc, state.path, target.parent, len(data)) from None
    try:
        try:
            _set_mode(fd, temp, mode)
            if state.owner is not None and hasattr(os, "fchown"):
                with contextlib.suppress(OSError):  # only root may give files away
                    os.fchown(fd, *state.owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise _write_error(exc, state.path, target.parent, len(data)) from None
        raise
    _fsync_dir(target.parent)


def _write_error(exc: OSError, path: Path, directory: Path, size: int,
                 verb: str = "write") -> ProvisionError:
    """A full disk is the environment failing (exit 1), with where and how much; any other
    refusal (permissions, a read-only file system) is the user's to fix (exit 2)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = None
        what = "the quota is used up" if exc.errno == errno.EDQUOT else "the disk is full"
        return ProvisionError(
            f"cannot {verb} {path}: {what} in {directory} (needs {size:,} bytes"
            + (f", {free:,} free)" if free is not None else ")") + "; nothing was changed",
            exit_code=EXIT_NOT_READY,
            hint=f"free some space in {directory}, then run again")
    return UsageError(f"cannot {verb} {path}: {exc.strerror}")


def remove_file(state: FileState) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state.real_path)
    _fsync_dir(state.real_path.parent)


def _set_mode(fd: int, temp: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # pragma: no cover - Windows
        os.chmod(temp, mode)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path, name: str) -> None:
    """Temporary files left by a killed run (call only while holding the lock)."""
    for leftover in directory.glob(f".{name}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


# --- backups -----------------------------------------------------------------------------

_BACKUP = re.compile(r"\.bak-(\d{8}T\d{6}Z)(?:-(\d+))?$")


def backup(state: FileState, *, keep: int = KEEP_BACKUPS, now: float | None = None) -> Path:
    """Copy the current content beside the named path (`config.toml.bak-20250101T120000Z`)."""
    assert state.raw is not None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    base = state.path.parent / f"{state.path.name}.bak-{stamp}"
    # Within one second: -1, -2... after the highest there (not the first free name, which
    # pruning may have freed and which would sort as the oldest).
    taken = [_order(p)[1] for p in list_backups(state.path) if _order(p)[0] == stamp]
    candidate = base.with_name(f"{base.name}-{max(taken) + 1}") if taken else base
    backup_state = FileState(candidate, candidate, None, None, None, True)
    write_atomic(backup_state, state.raw)  # 0600: it may hold the user's credentials
    prune_backups(state.path, keep)
    return candidate


def _order(backup_path: Path) -> tuple[str, int]:
    match = _BACKUP.search(backup_path.name)
    return (match[1], int(match[2] or 0)) if match else ("", 0)


def list_backups(path: Path) -> list[Path]:
    """This file's backups, oldest first."""
    found = [p for p in path.parent.glob(f"{path.name}.bak-*") if _BACKUP.search(p.name)]
    return sorted(found, key=_order)


def prune_backups(path: Path, keep: int) -> None:
    for old in list_backups(path)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()


# --- the lock ----------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path, *, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold `NAME.lock` beside `path` (an OS lock: released even if the process dies).

    The lock file is removed when done, so none is left lying around; a run that locked
    a file which was removed meanwhile sees that (other inode) and locks the new one.
    """
    lock_path = path.parent / f"{path.name}.lock"
    ensure_dir(lock_path.parent)
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, NEW_FILE_MODE)
        except OSError as exc:
            raise _write_error(exc, lock_path, lock_path.parent, 0,
                               "create the lock file") from None
        if _try_lock(fd) and _same_file(fd, lock_path):
            break
        os.close(fd)
        if time.monotonic() >= deadline:
            raise UsageError(f"another run is editing {path} (it holds {lock_path})",
                             hint="wait for it to finish, then run again")
        time.sleep(0.05)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)  # while still holding it: no one can take a stale one
        os.close(fd)  # closing releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
