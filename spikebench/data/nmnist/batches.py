"""Chunks of recordings framed at once: read into one buffer, framed by one compiled call, checked.

Both :func:`recording_frames` (one file) and the preprocess job (whole splits, :mod:`.store`) go
through :func:`_compute_batch`, so a single recording and a split's Parquet hold the same cells.
"""

from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikebench.data.nmnist.errors import NMNISTRecordingError
from spikebench.data.nmnist.framing import (
    _BAD_X,
    _BAD_Y,
    _INT16_MAX,
    _NO_EVENTS,
    _OK,
    _ST_DENOISED,
    _ST_END,
    _ST_EVENTS,
    _ST_FRAMES,
    _ST_MAX_COUNT,
    _ST_STATUS,
    _UNSORTED,
    RecordingFrames,
    _check_params,
    _decode,
    _frames_batch,
    _unsorted_frames,
)
from spikebench.data.nmnist.recordings import EVENT_BYTES as _EVENT_BYTES, coordinate_error, read_bytes, size_error
from spikebench.data.nmnist.schema import FRAMES_SCHEMA

#: dtypes of the cell columns sample, frame, polarity, y, x, count: the Parquet schema's, and wide
#: ones (int32 frame and count) for RecordingFrames, whose counts may exceed int16 before the check.
_CELL_DTYPES = tuple(np.dtype(field.type.to_pandas_dtype()) for field in FRAMES_SCHEMA)
_CELL_DTYPES_WIDE = (np.int32, np.int32, np.int8, np.int8, np.int8, np.int32)


@dataclass
class _Batch:
    """Recordings files[first:first+n] read into one buffer and, after _compute_batch, their cells."""

    files: list[Path]
    raw: np.ndarray  # uint8, the files' bytes one after the other
    bounds: np.ndarray  # int64 [n + 1]: recording i is raw[bounds[i]:bounds[i+1]]
    first: int = 0  # index of files[0] in the split: the sample column starts there
    read_error: NMNISTRecordingError | None = None  # the file after the last one read was empty/truncated
    stats: np.ndarray | None = None  # int64 [n, _ST_COLUMNS]
    columns: tuple[np.ndarray, ...] = ()  # sample, frame, polarity, y, x, count


def _read_batch(files: list[Path]) -> _Batch:
    """The files' bytes in one buffer; reading stops at the first empty or truncated file (kept as read_error)."""
    blobs = []
    error = None
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            data = fh.readall()
        error = size_error(path, len(data))
        if error is not None:
            break
        blobs.append(data)
    bounds = np.zeros(len(blobs) + 1, np.int64)
    np.cumsum([len(b) for b in blobs], out=bounds[1:])
    raw = np.frombuffer(b"".join(blobs), np.uint8)
    return _Batch(files=files[: len(blobs)], raw=raw, bounds=bounds, read_error=error)


def _compute_batch(batch: _Batch, filter_time: int, time_window: int, dtypes=_CELL_DTYPES) -> _Batch:
    """Frames of every recording read into the batch (compiled, no GIL), unsorted ones spliced in."""
    rows = int(batch.bounds[-1]) // _EVENT_BYTES  # cells <= events
    columns = [np.empty(rows, dtype) for dtype in dtypes]
    batch.stats = stats = _frames_batch(batch.raw, batch.bounds, batch.first, filter_time, time_window, *columns)
    end = int(stats[-1, _ST_END]) if len(stats) else 0
    columns = [c[:end] for c in columns]
    unsorted = np.flatnonzero(stats[:, _ST_STATUS] == _UNSORTED)
    if unsorted.size:
        pieces, start = [], 0
        for i in unsorted:
            x, y, t, p = _decode(batch.raw[batch.bounds[i] : batch.bounds[i + 1]])
            _, n_frames, *cells = _unsorted_frames(x, y, t, p, filter_time, time_window)
            stats[i, _ST_FRAMES] = n_frames
            stats[i, _ST_MAX_COUNT] = int(cells[-1].max()) if cells[-1].size else 0
            here = int(stats[i, _ST_END])
            pieces.append([c[start:here] for c in columns])
            pieces.append(
                [np.full(cells[0].size, batch.first + i, dtypes[0])] + [a.astype(d) for a, d in zip(cells, dtypes[1:])]
            )
            start = here
        pieces.append([c[start:] for c in columns])
        columns = [np.concatenate([piece[j] for piece in pieces]) for j in range(len(dtypes))]
    batch.columns = tuple(columns)
    return batch


def _check_batch(batch: _Batch, wide: bool = False) -> list[str]:
    """Raise for the first bad recording in file order; the warnings (recordings Denoise emptied)."""
    stats = batch.stats
    bad_rows = (stats[:, _ST_STATUS] != _OK) & (stats[:, _ST_STATUS] != _UNSORTED) | (stats[:, _ST_DENOISED] == 0)
    if not wide:
        bad_rows |= (stats[:, _ST_FRAMES] > _INT16_MAX + 1) | (stats[:, _ST_MAX_COUNT] > _INT16_MAX)
    warnings = []
    for i in np.flatnonzero(bad_rows).tolist():  # few or none: the per-row checks in file order
        path = batch.files[i]
        status, bad, _, denoised, n_frames, _, most = stats[i].tolist()
        if status in (_BAD_X, _BAD_Y):
            raw = batch.raw[batch.bounds[i] : batch.bounds[i + 1]]
            raise coordinate_error(path, raw, int(bad), "x" if status == _BAD_X else "y")
        if status == _NO_EVENTS:
            raise NMNISTRecordingError(f"{path}: no events (only timestamp-overflow markers)")
        if not wide and n_frames > _INT16_MAX + 1:
            raise ValueError(
                f"{path}: {n_frames} frames; the int16 frame column holds at most {_INT16_MAX + 1} "
                "(use a longer time_window_us)"
            )
        if not wide and most > _INT16_MAX:
            raise ValueError(
                f"{path}: a frame cell counts {most} events; the int16 count column (tonic's int16 frames) "
                f"holds at most {_INT16_MAX}"
            )
        if denoised == 0:
            warnings.append(f"{path}: Denoise kept no event; stored with 0 frames (tonic returns no frames)")
    if batch.read_error is not None:
        raise batch.read_error
    return warnings


def recording_frames(path: str | Path, denoise_filter_us: int, time_window_us: int) -> RecordingFrames:
    """Read one ``.bin`` recording and return its frames' non-zero cells (tonic-exact, compiled).

    The same frames as ``Compose([Denoise(filter_time), ToFrame((34, 34, 2), time_window)])`` on
    ``tonic.datasets.NMNIST``'s events, computed by the same compiled batch as :func:`preprocess_split`;
    raises :class:`NMNISTRecordingError` naming the file for an empty, truncated or out-of-sensor
    recording.
    """
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    raw = read_bytes(path)
    columns = [np.empty(raw.size // _EVENT_BYTES, dtype) for dtype in _CELL_DTYPES_WIDE]
    row = _frames_batch(raw, np.array([0, raw.size], np.int64), 0, filter_time, time_window, *columns)[0]
    if row[_ST_STATUS] == _OK:
        columns = [c[: row[_ST_END]] for c in columns[1:]]  # no sample column
    else:  # a bad file raises here; unsorted timestamps take numpy's searchsorted path
        batch = _compute_batch(_read_batch([Path(path)]), filter_time, time_window, _CELL_DTYPES_WIDE)
        _check_batch(batch, wide=True)
        columns, row = batch.columns[1:], batch.stats[0]
    return RecordingFrames(
        *columns, n_frames=int(row[_ST_FRAMES]), n_events=int(row[_ST_EVENTS]), n_events_denoised=int(row[_ST_DENOISED])
    )


def _computed_batches(files: list[Path], chunk_size: int, filter_time: int, time_window: int, threads: int):
    """The batches of ``chunk_size`` recordings in file order, read and computed.

    With one thread each batch is computed when the caller asks for it. With more, ``threads - 1``
    workers compute up to ``threads`` batches ahead while the caller (the Parquet writer) works, so
    exactly ``threads`` threads are busy. Batches do not depend on each other: the result, and the
    row groups, are the same for any number of threads.
    """

    def compute(lo: int) -> _Batch:
        batch = _read_batch(files[lo : lo + chunk_size])
        batch.first = lo
        return _compute_batch(batch, filter_time, time_window)

    starts = iter(range(0, len(files), chunk_size))
    if threads == 1:
        yield from map(compute, starts)
        return
    with ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="nmnist-frames") as pool:
        pending = deque(pool.submit(compute, lo) for lo in itertools.islice(starts, threads))
        try:
            while pending:
                batch = pending.popleft().result()
                for lo in itertools.islice(starts, 1):
                    pending.append(pool.submit(compute, lo))
                yield batch
        finally:
            for future in pending:
                future.cancel()
