"""Fetching one dataset file: into a partial folder beside it, md5-checked, then moved into place.

A failed or interrupted download leaves no partial file under the final name; an existing file is never
overwritten. The download itself is torchvision's ``download_url`` (redirects, Google Drive, progress).

Every download and extraction works in a *partial folder*, ``.spikebench-partial-<name>-XXXXXXXX`` beside
its target (:func:`partial_folder`), removed when the work ends. A job that is killed leaves its partial folder
behind; the next download run removes such stale ones (:func:`remove_stale_partials`) and says so in its log.
A partial folder is stale only when no process holds the lock on its ``owner.lock`` (an ``fcntl.flock`` held
for the whole download), so a download running right now in another process is never touched; only entries
with that prefix are ever removed, nothing else in a data folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from spikebench.data.manifest import md5sum

#: The prefix of every partial download/extraction folder (and nothing else).
PARTIAL_PREFIX = ".spikebench-partial-"
#: The file in a partial folder whose lock its owner holds; it names the owner's host and pid.
OWNER_FILE = "owner.lock"
#: A partial folder of another host (whose process cannot be checked) counts as stale only after this long unchanged.
FOREIGN_QUIET_S = 3600.0
#: A partial folder without an owner file yet (being created) is left alone for this long.
SETUP_GRACE_S = 60.0

log = logging.getLogger(__name__)


class DownloadError(OSError):
    """A download failed; the message names the URL and the file it was for."""


def _lock(fd: int, blocking: bool) -> bool | None:
    """Lock ``fd`` exclusively: True if locked, False if another process holds it, None without file locks here."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except (ImportError, OSError):  # no advisory locks (platform or file system)
        return None


@contextlib.contextmanager
def partial_folder(parent: str | Path, name: str) -> Iterator[Path]:
    """A new, empty folder ``parent/.spikebench-partial-<name>-XXXXXXXX`` for one download or extraction.

    This process holds the lock on its ``owner.lock`` while the block runs; the folder is removed at the end,
    whatever happens (what the block moved out of it stays where it was moved).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f"{PARTIAL_PREFIX}{name}-"))
    fd = os.open(stage / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, blocking=True)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # only the folder made above
        os.close(fd)  # releases the lock, after the folder is gone


def place(source: Path, dest: Path) -> None:
    """Move the finished file ``source`` to ``dest``, never replacing a file there."""
    try:
        os.link(source, dest)  # fails if dest exists, atomically
    except FileExistsError:
        raise FileExistsError(f"{dest} appeared meanwhile; it was left as it is and this copy discarded") from None
    except OSError:  # a file system without hard links
        if dest.exists():
            raise FileExistsError(f"{dest} appeared meanwhile; it was left as it is and this copy discarded") from None
        os.replace(source, dest)
    else:
        source.unlink()


def write_new(data: bytes, dest: str | Path) -> Path:
    """``data`` as the new file ``dest`` (never replacing one), written in a partial folder beside it first."""
    from spikebench.atomic import write_error

    dest = Path(dest)
    with partial_folder(dest.parent, dest.name) as stage:
        try:
            (stage / dest.name).write_bytes(data)
        except OSError as exc:
            raise write_error(dest, exc) from exc
        place(stage / dest.name, dest)
    return dest


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _newest_change(folder: Path) -> float:
    """The latest mtime of ``folder`` and anything in it (a download in progress keeps writing)."""
    newest = folder.lstat().st_mtime
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, path.lstat().st_mtime)
    return newest


def _verdict(fd: int, quiet: float) -> str | None:
    """Why the partial folder whose ``owner.lock`` is open as ``fd`` was abandoned (None: it may be in use).

    Called with the lock taken when it can be: its owner holds it for as long as it runs.
    """
    locked = _lock(fd, blocking=False)
    if locked is False:
        return None  # its owner is running
    host, _, pid = os.read(fd, 512).decode(errors="replace").strip().partition(" ")
    if host == socket.gethostname() and pid.isdigit():
        if locked or not _pid_alive(int(pid)):
            return f"its process {pid} on this host has ended"
        return None
    if locked and quiet > FOREIGN_QUIET_S:  # another host's process cannot be asked; its lock is free
        return f"left by host {host or '?'} (pid {pid or '?'}), unlocked and unchanged for {quiet:.0f} s"
    return None


def _remove_if_stale(folder: Path) -> str | None:
    """Remove the partial ``folder`` if it was abandoned (holding its lock meanwhile); why, or None if kept."""
    quiet = time.time() - _newest_change(folder)
    try:
        fd = os.open(folder / OWNER_FILE, os.O_RDWR)
    except FileNotFoundError:  # being created, or its creator was killed right then
        if quiet <= SETUP_GRACE_S:
            return None
        shutil.rmtree(folder)
        return f"no owner, unchanged for {quiet:.0f} s"
    try:
        reason = _verdict(fd, quiet)
        if reason is not None:
            shutil.rmtree(folder)
        return reason
    finally:
        os.close(fd)


def remove_stale_partials(folder: str | Path, log_: logging.Logger | None = None) -> list[Path]:
    """Remove the partial folders of interrupted downloads in ``folder`` (entries ``.spikebench-partial-*`` that
    no running process owns) and log each; return those removed.

    Nothing else is touched: other entries, files with the prefix and partial folders in use stay as they are
    (those in use, and what look like leftovers of older spikebench versions, are mentioned in the log).
    """
    folder, say = Path(folder), log_ or log
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
    except OSError as error:  # an unreadable folder: nothing of ours to clean there
        say.warning("cannot look for stale partial downloads in %s (%s)", folder, error)
        return removed
    for entry in entries:
        if not entry.name.startswith(PARTIAL_PREFIX):
            if entry.name.startswith(".extract-") or (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                say.warning(
                    "%s looks like a temporary file of an older spikebench; left alone (delete it yourself if no "
                    "download is running)",
                    entry,
                )
            continue
        if entry.is_symlink() or not entry.is_dir():
            say.warning("%s has spikebench's partial-download prefix but is not a partial folder; left alone", entry)
            continue
        try:
            reason = _remove_if_stale(entry)
        except FileNotFoundError:  # removed meanwhile (by its owner, or another run's clean-up)
            continue
        except OSError as error:  # a read-only data root, say: reported, never fatal
            say.warning("%s looks like a stale partial download but could not be removed (%s)", entry, error)
            continue
        if reason is None:
            say.info("%s belongs to a download in progress; left alone", entry)
            continue
        removed.append(entry)
        say.info("removed %s, a stale partial download of an interrupted run (%s)", entry, reason)
    return removed


def fetch_url(url: str, dest: str | Path, md5: str | None) -> Path:
    """Download ``url`` to ``dest`` (which must not exist) and check its md5 before moving it there.

    The download goes into a partial folder beside ``dest``; every failure names the URL and ``dest``
    (:class:`DownloadError`, an ``OSError``; a wrong md5 is a ``DataIntegrityError``) and keeps nothing.
    """
    from torchvision.datasets.utils import download_url

    from spikebench.data.mnist import DataIntegrityError

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists; spikebench never overwrites a dataset file")
    with partial_folder(dest.parent, dest.name) as stage:
        part = stage / dest.name
        try:
            download_url(url, str(stage), filename=dest.name)
            if not part.is_file():
                raise FileNotFoundError(f"the download wrote no file {part}")
        except Exception as error:  # noqa: BLE001 - any failure of the download, reported with URL and target
            raise DownloadError(
                f"could not download {url} to {dest} ({type(error).__name__}: {error}); nothing was kept"
            ) from error
        found = md5sum(part)
        if md5 is not None and found != md5:
            raise DataIntegrityError(
                f"{url}: the file downloaded for {dest} has md5 {found}, expected {md5}; nothing was kept"
            )
        place(part, dest)
    return dest
