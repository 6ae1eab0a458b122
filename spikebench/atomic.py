"""Every file the workflow writes, written atomically: to a temporary name beside it, then renamed.

A job killed half-way, a full disk or a failing writer never leaves a truncated output under its final
name (Snakemake would take a truncated file for a finished one on the next run), and never replaces a good
file with a bad one. :func:`atomic_output` is the one temp-file-and-rename in the package; the typed writers
below are built on it, and a failed write raises an ``OSError`` that names the file being written (a full
disk's ENOSPC names none on its own), with its errno kept.

The temporary file gets the permissions a plain new file gets under the umask (``mkstemp`` alone would give
0600), so a renamed output looks like any other file the user created.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def write_error(path: str | Path, exc: OSError) -> OSError:
    """The ``OSError`` of a failed write, naming the file being written (same errno and subclass)."""
    if exc.errno is not None:
        # OSError(errno, ...) picks the matching subclass (PermissionError, ...) and keeps errno.
        hint = " (disk full?)" if exc.errno in _DISK_FULL else ""
        return OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}{hint}")
    return OSError(f"cannot write {path}: {exc}")


def chmod_default(path: str | Path) -> None:
    """Give a temporary file (mkstemp: 0600) the permissions a plain new file gets under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The parent folder is created. On any exception the temporary file is removed and ``path`` is left as
    it was (absent, or its previous content). Errors creating or renaming the file name ``path``; errors
    raised inside the block propagate unchanged (the typed writers below name the file themselves).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        chmod_default(name)
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp = Path(name)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of a write as one that names ``path``."""
    try:
        yield
    except OSError as exc:
        if str(path) in str(exc):
            raise
        raise write_error(path, exc) from exc


def write_bytes(data: bytes, path: str | Path) -> Path:
    """``data`` to ``path``, atomically."""
    path = Path(path)
    with atomic_output(path) as tmp, _naming(path):
        tmp.write_bytes(data)
    return path


def write_text(text: str, path: str | Path) -> Path:
    """UTF-8 ``text`` to ``path`` (newlines as given), atomically."""
    path = Path(path)
    with atomic_output(path) as tmp, _naming(path):
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return path


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, NaN/inf as ``None`` (JSON null), paths as strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(obj: Any, path: str | Path) -> Path:
    """``obj`` as indented JSON (NaN/inf -> null, never an invalid ``NaN`` token), atomically."""
    return write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n", path)


def write_parquet(table: Any, path: str | Path, metadata: dict[str, Any] | None = None, **options: Any) -> Path:
    """A pandas DataFrame (index dropped) or pyarrow Table to Parquet, atomically.

    ``metadata`` adds key-value entries to the schema's metadata, each value JSON-encoded (``default=str``);
    ``options`` go to ``pyarrow.parquet.write_table`` (compression, ...).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({str(k).encode(): json.dumps(v, default=str).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_output(path) as tmp, _naming(path):
        pq.write_table(table, tmp, **options)
    return path


class _WriteWatch:
    """A binary file as ``torch.save`` writes to it, remembering the ``OSError`` a write raised.

    torch's zip writer turns a failed write into its own ``RuntimeError`` (``unexpected pos 6464 vs 6400``),
    which names no file; :func:`save_torch` turns it back into the ``OSError`` that caused it.
    """

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path``, atomically.

    Through a Python file, so that a full disk is an ``OSError`` (ENOSPC) naming ``path``, also where torch's
    writer reports the failed write as its own ``RuntimeError``.
    """
    import torch

    path = Path(path)
    with atomic_output(path) as tmp, _naming(path):
        with open(tmp, "wb") as handle:
            watch = _WriteWatch(handle)
            try:
                torch.save(obj, watch)
            except RuntimeError as exc:
                cause = watch.error or (exc.__context__ if isinstance(exc.__context__, OSError) else None)
                if cause is None:
                    raise
                raise write_error(path, cause) from exc
            if watch.error is not None:  # a failed write torch went past: the file is not whole
                raise write_error(path, watch.error)
    return path
