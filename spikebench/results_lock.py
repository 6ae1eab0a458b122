"""One results folder, one run writing it: a file lock ``<results>/.spikebench.lock``.

Snakemake's own lock (``.snakemake/locks``) belongs to the working directory, so two checkouts (or two working
directories) with the same ``results:`` both ran, and the second resumed training from the first one's
checkpoint while the first was still writing it. The workflow now takes this lock when it starts running jobs
(``onstart`` in ``rules/common.smk``: the main Snakemake process only; job processes get ``--no-hooks``, and a
dry run ``-n`` takes nothing) and gives it back ``onsuccess`` / ``onerror``. A second run on the same results
folder, from any working directory, stops before its first job with the holder's host, process id, working
directory and start time (:class:`ResultsLockedError`).

The lock is ``fcntl.flock`` on the file, held by an open file descriptor of the main process, so the kernel
frees it when that process ends in any way (killed, crashed, powered off): a stale lock frees itself. The file
itself stays; it holds the holder's record (JSON) while the lock is held and is emptied on release. A run that
finds a record in a free lock (its writer died without releasing) takes the lock over and logs whose it was.
On NFS ``flock`` is forwarded to the server as a POSIX lock, so it holds between hosts, unless the folder is
mounted with ``local_lock=flock``/``nolock``: a lock record of another host is therefore named as such, and a
take-over of one warns that the other run may still be going on that host.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

LOCK_NAME = ".spikebench.lock"
_HELD: dict[Path, ResultsLock] = {}


class ResultsLockedError(RuntimeError):
    """Another run holds the results folder's lock; the message names it."""


def lock_path(results: str | Path) -> Path:
    return Path(results) / LOCK_NAME


def holder_record() -> dict[str, Any]:
    """Who this process is: host, process id, working directory, start time and command line."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
    }


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a run that has not written its name yet (it is starting)"
    return (
        f"process {holder.get('pid')} on host {holder.get('host')} (working directory {holder.get('cwd')}, "
        f"started {holder.get('started')})"
    )


def _read(fh: IO[str]) -> dict[str, Any] | None:
    fh.seek(0)
    text = fh.read().strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": None, "host": None, "cwd": None, "started": None, "unreadable": text[:200]}
    return record if isinstance(record, dict) else None


def _other_host(holder: dict[str, Any] | None) -> bool:
    return bool(holder and holder.get("host") and holder["host"] != socket.gethostname())


def _held_message(path: Path, holder: dict[str, Any] | None) -> str:
    message = (
        f"results folder {path.parent.resolve()} is being written by another run: {describe(holder)} holds "
        f"{path.resolve()}. "
    )
    if _other_host(holder):
        message += (
            f"That run is on another host ({holder['host']}): the results folder is shared between hosts (NFS or "
            "another network file system), so this host cannot see whether it still runs; check there. "
        )
    return message + (
        "Wait for it to finish, or give this run a results folder of its own (config key 'results'). "
        "A lock whose run has ended frees itself; nothing needs deleting."
    )


def _took_over(path: Path, previous: dict[str, Any], log: Any) -> None:
    message = f"{path.resolve()}: took over the lock left by {describe(previous)}, which ended without releasing it"
    if _other_host(previous):
        message += (
            f". Its record names another host ({previous['host']}): if that run is still going there, this file "
            "system does not share locks between hosts (NFS mounted with local_lock=flock or nolock); stop one of "
            "the two runs"
        )
    log.warning(message)


class ResultsLock:
    """The held lock of one results folder (:func:`acquire`); :meth:`release` gives it back."""

    def __init__(self, path: Path, fh: IO[str], holder: dict[str, Any], previous: dict[str, Any] | None) -> None:
        self.path, self._fh, self.holder, self.previous = path, fh, holder, previous

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        """Empty the record, unlock, close (a second call does nothing)."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def __enter__(self) -> ResultsLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(results: str | Path, log: Any = None) -> ResultsLock:
    """Take the lock of ``results`` (created if need be) or raise :class:`ResultsLockedError` naming its holder.

    Never waits. A record left in a free lock (a run that died) is taken over and logged on ``log``.
    """
    log = log or logging.getLogger("spikebench")
    path = lock_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # held open while the lock is; "a+" truncates nothing before it is ours
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fh)
        fh.close()
        raise ResultsLockedError(_held_message(path, holder)) from None
    except OSError as exc:  # ENOLCK: a file system without locks
        fh.close()
        raise ResultsLockedError(
            f"cannot lock {path} ({exc}): this file system does not support file locks, so two runs on results "
            f"folder {path.parent} could not be told apart; put results on a file system that does"
        ) from exc
    previous = _read(fh)
    if previous is not None:
        _took_over(path, previous, log)
    holder = holder_record()
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(holder) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
    return ResultsLock(path, fh, holder, previous)


def hold(results: str | Path, log: Any = None) -> ResultsLock:
    """:func:`acquire`, kept until :func:`let_go` (the workflow's ``onstart``; ``onsuccess``/``onerror`` let go)."""
    key = lock_path(results).resolve()
    if key in _HELD and _HELD[key].held:
        return _HELD[key]
    _HELD[key] = acquire(results, log)
    # One formatted string: Snakemake's logger does not format %-arguments.
    (log or logging.getLogger("spikebench")).info(
        f"results folder {Path(results).resolve()} locked for this run ({describe(_HELD[key].holder)})"
    )
    return _HELD[key]


def let_go(results: str | Path) -> None:
    """Release what :func:`hold` took for ``results`` (nothing if it holds nothing)."""
    lock = _HELD.pop(lock_path(results).resolve(), None)
    if lock is not None:
        lock.release()
