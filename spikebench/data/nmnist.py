"""N-MNIST: tonic's download layout, a fast reader, tonic-exact denoise + frames, sparse Parquet.

The study turns each N-MNIST recording into frames with tonic::

    tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=denoise_filter_us),
        tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=time_window_us),
    ])

applied to the events as ``tonic.datasets.NMNIST`` returns them (``first_saccade_only=False``,
``stabilize=False``). tonic does this with a Python loop over events (Denoise) and one
``np.add.at`` per frame (ToFrame), about 20 ms per recording. This module computes the *same frames,
cell for cell* with one numba-compiled function per recording, and stores the non-zero cells of a
whole split as sparse Parquet that :func:`load_frames` turns into padded dense batches on the device.

Exact equivalence with tonic (tonic 1.7 source; checked on real recordings in tests/test_nmnist.py):

* **Reading** (``tonic.io.read_mnist_file`` with ``NMNIST.dtype``): 5 bytes per event; x = byte 0,
  y = byte 1, p = bit 7 of byte 2, t = the low 23 bits of bytes 2-4 (µs). An event with y == 240 is
  a timestamp-overflow marker: it adds 2**13 µs to the timestamps of itself and every later event
  and is then dropped. Fields x, y, t, p are all int64, in file order (no sorting).
* **Denoise** (``tonic.functional.denoise_numpy``): events are visited in array order; a map of size
  (max x + 1, max y + 1) *of this recording* starts at ``filter_time`` everywhere; each event first
  writes ``t + filter_time`` into its own cell, then is kept if any of its 4 direct neighbours
  (x +- 1, y +- 1, inside that map; never itself, no diagonals) holds a value > t. Consequences kept
  here on purpose: neighbours that never fired count as "fired at time 0", so every event with
  t < filter_time is kept (unless the map is 1 x 1); a neighbour that fired at the same timestamp
  earlier in the array counts, one later in the array does not.
* **ToFrame** (``tonic.functional.to_frame_numpy`` with ``slice_events_by_time``, overlap 0,
  ``include_incomplete=False``): start = t of the first kept event, duration = t(last) - t(first),
  ``n_frames = max(int(floor((duration - W) / W) + 1), 1)``; frame i holds the events with
  ``start + i*W <= t < start + (i+1)*W`` (``np.searchsorted(..., side='left')`` bounds), so events at
  or after ``start + n_frames*W`` (the incomplete tail) are dropped and an event exactly on a window
  boundary opens the next frame. A frame is indexed [p, y, x] (sensor_size[::-1] = (2, 34, 34)) and
  counts events (tonic's int16; counts above 32767 are refused here instead of wrapping).
  Recordings whose timestamps are not non-decreasing fall back to numpy's own ``searchsorted``, so
  they too match tonic exactly.
* **Compose**: when Denoise leaves no event, tonic's Compose stops and returns the empty event
  array instead of frames; here that recording gets ``n_frames = 0`` and no cells (a warning is
  logged by :func:`preprocess_split`). Real N-MNIST recordings never hit this.

Stored files (one pair per split, written by :func:`preprocess_split`):

* frames Parquet, one row per non-zero frame cell, sorted by sample, frame, polarity, y, x:
  ``sample`` int32 (row of the samples table), ``frame`` int16 (time step, 0-based),
  ``polarity`` int8 (0 = OFF, 1 = ON), ``y`` int8, ``x`` int8 (0..33), ``count`` int16 (events in
  that cell, >= 1);
* samples Parquet, one row per recording in tonic's order (digit folder, then file name: the
  index of ``tonic.datasets.NMNIST``): ``sample`` int32, ``label`` int64 (the digit folder),
  ``n_frames`` int32, ``n_events`` int32 (events in the file, overflow markers excluded, *before*
  denoising), ``n_events_denoised`` int32 (events kept by Denoise, before the tail is dropped),
  ``source`` string (path relative to the dataset root ``.../NMNIST``, posix, e.g.
  ``Train/5/00001.bin``);
* both carry key-value metadata: denoise_filter_us, time_window_us, sensor_size (JSON), split,
  and the tonic/numba/numpy/pyarrow/spikebench versions.

Public API:

* :func:`nmnist_split_folder` (tonic's layout ``root/NMNIST/{Train,Test}``; the verified download
  is :func:`spikebench.data.nmnist_download.download_nmnist`);
* :func:`read_recording` (tonic's event array), :func:`recording_frames` / :func:`events_frames`
  (:class:`RecordingFrames`: sparse cells, ``to_dense()`` gives tonic's int16 frames);
* :func:`preprocess_split` (one split -> frames + samples Parquet, streamed by row group);
* :func:`load_frames` -> :class:`SparseFrames` (cells on the device; ``dense_batch(idx)`` gives
  float32 [T_max, B, 2, 34, 34] zero-padded frames and the int64 frame counts).

Speed (benchmarks/bench_nmnist_preprocess.py): the compiled core reads and frames a recording
about 100x faster than tonic's per-sample pipeline on the same machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

#: tonic's ``NMNIST.sensor_size``: (x/width, y/height, polarities).
NMNIST_SENSOR_SIZE: tuple[int, int, int] = (34, 34, 2)

#: ``tonic.datasets.NMNIST.dtype``: x, y, t, p as the platform int (int64).
EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])

#: The split name -> tonic's folder under ``<root>/NMNIST`` (``NMNIST.train_folder``/``test_folder``).
SPLIT_FOLDERS: dict[str, str] = {"train": "Train", "test": "Test"}

_WIDTH, _HEIGHT, _POLARITIES = NMNIST_SENSOR_SIZE
_CELLS = _POLARITIES * _HEIGHT * _WIDTH  # cells in one frame (2 * 34 * 34)
_OVERFLOW_Y = 240  # y value of a timestamp-overflow marker in the N-MNIST format
_OVERFLOW_US = 2**13
_INT16_MAX = np.iinfo(np.int16).max
_INT32_MAX = np.iinfo(np.int32).max

# status codes of the compiled core
_OK, _BAD_X, _BAD_Y, _NO_EVENTS, _UNSORTED = 0, 1, 2, 3, 4

FRAMES_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False, metadata={"description": "row of the samples table"}),
        pa.field("frame", pa.int16(), nullable=False, metadata={"description": "frame (time step), 0-based"}),
        pa.field("polarity", pa.int8(), nullable=False, metadata={"description": "0 = OFF, 1 = ON"}),
        pa.field("y", pa.int8(), nullable=False, metadata={"description": "pixel row, 0..33"}),
        pa.field("x", pa.int8(), nullable=False, metadata={"description": "pixel column, 0..33"}),
        pa.field("count", pa.int16(), nullable=False, metadata={"description": "events in the cell (>= 1)"}),
    ]
)
SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.int32(), nullable=False, metadata={"description": "0-based, tonic's dataset index"}),
        pa.field("label", pa.int64(), nullable=False, metadata={"description": "digit (the folder name)"}),
        pa.field("n_frames", pa.int32(), nullable=False, metadata={"description": "frames (time steps) of the sample"}),
        pa.field(
            "n_events", pa.int32(), nullable=False,
            metadata={"description": "events in the file before denoising (overflow markers excluded)"},
        ),
        pa.field(
            "n_events_denoised", pa.int32(), nullable=False,
            metadata={"description": "events kept by Denoise (before ToFrame drops the incomplete tail)"},
        ),
        pa.field("source", pa.string(), nullable=False, metadata={"description": "path relative to the NMNIST folder"}),
    ]
)
_REQUIRED_METADATA = ("denoise_filter_us", "time_window_us", "sensor_size", "split")


class NMNISTRecordingError(ValueError):
    """An N-MNIST recording file is truncated, empty or has impossible coordinates."""


class NMNISTFramesError(ValueError):
    """A preprocessed N-MNIST Parquet file lacks a column or metadata, or is inconsistent."""


class NMNISTDownloadError(RuntimeError):
    """The N-MNIST archive could not be fetched, verified or extracted."""


class RecordingFrames(NamedTuple):
    """The non-zero cells of one recording's frames (the same frames as tonic's ToFrame)."""

    frame: np.ndarray  # int32, time step of each cell
    polarity: np.ndarray  # int8
    y: np.ndarray  # int8
    x: np.ndarray  # int8
    count: np.ndarray  # int32, events in the cell (>= 1)
    n_frames: int
    n_events: int  # events read from the file (overflow markers excluded)
    n_events_denoised: int  # events kept by Denoise

    def to_dense(self) -> np.ndarray:
        """The frames as tonic returns them: int16 [n_frames, 2, 34, 34] indexed [t, p, y, x]."""
        if self.count.size and int(self.count.max()) > _INT16_MAX:
            raise OverflowError(f"a frame cell counts {int(self.count.max())} events; int16 holds at most {_INT16_MAX}")
        dense = np.zeros((self.n_frames, _POLARITIES, _HEIGHT, _WIDTH), dtype=np.int16)
        dense[self.frame, self.polarity, self.y, self.x] = self.count
        return dense


# ----------------------------------------------------------------------------------------------
# layout (the verified download is spikebench.data.nmnist_download)
# ----------------------------------------------------------------------------------------------


def nmnist_split_folder(root: str | Path, split: str) -> Path:
    """tonic's folder of one split: ``root/NMNIST/Train`` or ``root/NMNIST/Test``."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown N-MNIST split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
    return Path(root) / "NMNIST" / SPLIT_FOLDERS[split]


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def _read_bytes(path: str | Path) -> np.ndarray:
    with open(path, "rb") as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8)
    if raw.size == 0:
        raise NMNISTRecordingError(f"{path}: empty recording (0 bytes); expected 5 bytes per event")
    if raw.size % 5:
        raise NMNISTRecordingError(
            f"{path}: {raw.size} bytes is not a multiple of 5 (5 bytes per event): the file is truncated"
        )
    return raw


def _coordinate_error(path: str | Path, raw: np.ndarray, event: int, axis: str) -> NMNISTRecordingError:
    value = int(raw[5 * event + (0 if axis == "x" else 1)])
    return NMNISTRecordingError(
        f"{path}: event {event} has {axis} = {value}, outside the sensor's 0..{_WIDTH - 1} "
        f"(N-MNIST is {_WIDTH}x{_HEIGHT}); the file is corrupt or not an N-MNIST recording"
    )


def read_recording(path: str | Path) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` file, equal to ``tonic.io.read_mnist_file(path, NMNIST.dtype)``.

    A structured array with int64 fields x, y, t (µs), p in file order. Raises
    :class:`NMNISTRecordingError` naming the file if it is empty, truncated (size not a multiple of
    5 bytes), holds only overflow markers, or has an x or y outside 0..33.
    """
    raw = _read_bytes(path)
    ev = raw.reshape(-1, 5).astype(np.int64)
    overflow = ev[:, 1] == _OVERFLOW_Y
    keep = ~overflow
    bad_x = np.flatnonzero(keep & (ev[:, 0] >= _WIDTH))
    bad_y = np.flatnonzero(keep & (ev[:, 1] >= _HEIGHT))
    if bad_x.size or bad_y.size:
        first_x = bad_x[0] if bad_x.size else ev.shape[0]
        first_y = bad_y[0] if bad_y.size else ev.shape[0]
        raise _coordinate_error(path, raw, min(first_x, first_y), "x" if first_x <= first_y else "y")
    t = ((ev[:, 2] & 127) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    if overflow.any():
        t = t + _OVERFLOW_US * np.cumsum(overflow)
    events = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    if events.size == 0:
        raise NMNISTRecordingError(f"{path}: no events (only timestamp-overflow markers)")
    events["x"] = ev[keep, 0]
    events["y"] = ev[keep, 1]
    events["t"] = t[keep]
    events["p"] = ev[keep, 2] >> 7
    return events


# ----------------------------------------------------------------------------------------------
# compiled core: decode + Denoise + ToFrame, sparse output
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _decode(raw):  # pragma: no cover - compiled
    """tonic.io.read_mnist_file on a byte array (size a positive multiple of 5); status + bad event."""
    n = raw.size // 5
    x = np.empty(n, np.int64)
    y = np.empty(n, np.int64)
    t = np.empty(n, np.int64)
    p = np.empty(n, np.int64)
    k = 0
    offset = 0
    for i in range(n):
        b0 = np.int64(raw[5 * i])
        b1 = np.int64(raw[5 * i + 1])
        b2 = np.int64(raw[5 * i + 2])
        if b1 == 240:
            offset += 8192
            continue
        if b0 > 33:
            return x[:0], y[:0], t[:0], p[:0], 1, i
        if b1 > 33:
            return x[:0], y[:0], t[:0], p[:0], 2, i
        x[k] = b0
        y[k] = b1
        p[k] = b2 >> 7
        t[k] = (((b2 & 127) << 16) | (np.int64(raw[5 * i + 3]) << 8) | np.int64(raw[5 * i + 4])) + offset
        k += 1
    return x[:k], y[:k], t[:k], p[:k], 0, -1


@numba.njit(cache=True, nogil=True)
def _denoise_mask(x, y, t, filter_time):  # pragma: no cover - compiled
    """tonic.functional.denoise_numpy as a keep-mask (same visiting order, same map bounds)."""
    n = x.size
    width = x.max() + 1
    height = y.max() + 1
    memory = np.full((width, height), filter_time, np.int64)
    keep = np.zeros(n, np.bool_)
    for i in range(n):
        xi = x[i]
        yi = y[i]
        ti = t[i]
        memory[xi, yi] = ti + filter_time
        if (
            (xi > 0 and memory[xi - 1, yi] > ti)
            or (xi < width - 1 and memory[xi + 1, yi] > ti)
            or (yi > 0 and memory[xi, yi - 1] > ti)
            or (yi < height - 1 and memory[xi, yi + 1] > ti)
        ):
            keep[i] = True
    return keep


# ctz of a 64-bit word with one bit set: table[(bit * magic) >> 58] (de Bruijn sequence 0x03f79d71b4cb0a89)
_DEBRUIJN_MAGIC = 0x03F79D71B4CB0A89
_DEBRUIJN_TABLE = np.array(
    [0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4, 62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30,
     24, 18, 12, 5, 63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11, 46, 26, 40, 15, 34, 20, 31, 10,
     25, 14, 19, 9, 13, 8, 7, 6],
    dtype=np.int64,
)
# cell code c = polarity * 1156 + y * 34 + x -> polarity, y, x (lookups beat integer division here)
_CELL_P = (np.arange(_CELLS) // (_HEIGHT * _WIDTH)).astype(np.int8)
_CELL_Y = (np.arange(_CELLS) % (_HEIGHT * _WIDTH) // _WIDTH).astype(np.int8)
_CELL_X = (np.arange(_CELLS) % _WIDTH).astype(np.int8)


@numba.njit(cache=True, nogil=True, inline="always")
def _emit_frame(i, first_word, last_word, bits, counter, frame, pol, yy, xx, count, k):  # pragma: no cover
    """Append the touched cells of frame i in (polarity, y, x) order; clear them; return the new length."""
    table = _DEBRUIJN_TABLE
    magic = np.uint64(_DEBRUIJN_MAGIC)
    one = np.uint64(1)
    for w in range(first_word, last_word + 1):
        word = bits[w]
        while word:
            low = word & (~word + one)  # lowest set bit
            c = w * 64 + table[(low * magic) >> np.uint64(58)]
            frame[k] = i
            pol[k] = _CELL_P[c]
            yy[k] = _CELL_Y[c]
            xx[k] = _CELL_X[c]
            count[k] = counter[c]
            counter[c] = 0
            k += 1
            word ^= low
        bits[w] = 0
    return k


@numba.njit(cache=True, nogil=True)
def _accumulate(x, y, p, starts, ends):  # pragma: no cover - compiled
    """Sum events[starts[i]:ends[i]] into frame i, as tonic's np.add.at does, for any starts/ends."""
    n_frames = starts.size
    total = 0
    for i in range(n_frames):
        if ends[i] > starts[i]:
            total += ends[i] - starts[i]
    frame = np.empty(total, np.int32)
    pol = np.empty(total, np.int8)
    yy = np.empty(total, np.int8)
    xx = np.empty(total, np.int8)
    count = np.empty(total, np.int32)
    counter = np.zeros(2 * 34 * 34, np.int64)
    bits = np.zeros((2 * 34 * 34 + 63) // 64, np.uint64)
    one = np.uint64(1)
    k = 0
    for i in range(n_frames):
        first_word = bits.size
        last_word = -1
        for j in range(starts[i], ends[i]):
            c = p[j] * 1156 + y[j] * 34 + x[j]
            w = c >> 6
            bits[w] |= one << np.uint64(c & 63)
            counter[c] += 1
            first_word = min(first_word, w)
            last_word = max(last_word, w)
        k = _emit_frame(i, first_word, last_word, bits, counter, frame, pol, yy, xx, count, k)
    return frame[:k], pol[:k], yy[:k], xx[:k], count[:k]


@numba.njit(cache=True, nogil=True)
def _frames_core(x, y, t, p, filter_time, time_window):  # pragma: no cover - compiled
    """Denoise + ToFrame(time_window) fused in two passes over decoded events (tonic-exact).

    Returns (status, n_kept, n_frames, frame, polarity, y, x, count); status _UNSORTED (4) when the
    kept timestamps go backwards, for which the caller slices with numpy's searchsorted instead.
    """
    n = x.size
    width = x.max() + 1
    height = y.max() + 1
    memory = np.full((width, height), filter_time, np.int64)
    kept_cell = np.empty(n, np.int64)
    kept_t = np.empty(n, np.int64)
    m = 0
    ordered = True
    for i in range(n):  # tonic.functional.denoise_numpy
        xi = x[i]
        yi = y[i]
        ti = t[i]
        memory[xi, yi] = ti + filter_time
        if (
            (xi > 0 and memory[xi - 1, yi] > ti)
            or (xi < width - 1 and memory[xi + 1, yi] > ti)
            or (yi > 0 and memory[xi, yi - 1] > ti)
            or (yi < height - 1 and memory[xi, yi + 1] > ti)
        ):
            if m > 0 and ti < kept_t[m - 1]:
                ordered = False
            kept_cell[m] = p[i] * 1156 + yi * 34 + xi
            kept_t[m] = ti
            m += 1
    frame = np.empty(m, np.int32)
    pol = np.empty(m, np.int8)
    yy = np.empty(m, np.int8)
    xx = np.empty(m, np.int8)
    count = np.empty(m, np.int32)
    if m == 0 or not ordered:
        return (0 if m == 0 else 4), m, 0, frame, pol, yy, xx, count
    # slice_events_by_time: start = first kept event, incomplete tail dropped
    t0 = kept_t[0]
    duration = kept_t[m - 1] - t0
    n_frames = max(int(math.floor((duration - time_window) / time_window) + 1), 1)
    counter = np.zeros(2 * 34 * 34, np.int64)
    bits = np.zeros((2 * 34 * 34 + 63) // 64, np.uint64)
    one = np.uint64(1)
    k = 0
    current = 0
    first_word = bits.size
    last_word = -1
    for j in range(m):  # timestamps are ordered: frame = (t - t0) // W, as searchsorted would bound it
        f = (kept_t[j] - t0) // time_window
        if f >= n_frames:
            break
        if f != current:
            k = _emit_frame(current, first_word, last_word, bits, counter, frame, pol, yy, xx, count, k)
            current = f
            first_word = bits.size
            last_word = -1
        c = kept_cell[j]
        w = c >> 6
        bits[w] |= one << np.uint64(c & 63)
        counter[c] += 1
        first_word = min(first_word, w)
        last_word = max(last_word, w)
    k = _emit_frame(current, first_word, last_word, bits, counter, frame, pol, yy, xx, count, k)
    return 0, m, n_frames, frame[:k], pol[:k], yy[:k], xx[:k], count[:k]


def _unsorted_frames(x, y, t, p, filter_time: int, time_window: int):
    """Slow path for timestamps that go backwards: tonic's numpy slicing, compiled accumulation."""
    keep = _denoise_mask(x, y, t, filter_time)
    kx, ky, kt, kp = x[keep], y[keep], t[keep], p[keep]
    duration = kt[-1] - kt[0]
    n_frames = max(int(np.floor((duration - time_window) / time_window) + 1), 1)
    window_starts = np.arange(n_frames) * time_window + kt[0]
    starts = np.searchsorted(kt, window_starts)[:n_frames].astype(np.int64)
    ends = np.searchsorted(kt, window_starts + time_window)[:n_frames].astype(np.int64)
    return int(kt.size), n_frames, *_accumulate(kx, ky, kp, starts, ends)


def _check_params(denoise_filter_us: int, time_window_us: int) -> tuple[int, int]:
    for name, value in (("denoise_filter_us", denoise_filter_us), ("time_window_us", time_window_us)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < int(value) < 2**40:
            raise ValueError(f"{name} must be a positive integer number of microseconds, got {value!r}")
    return int(denoise_filter_us), int(time_window_us)


def _frames_from_decoded(x, y, t, p, filter_time: int, time_window: int, n_events: int) -> RecordingFrames:
    status, m, n_frames, *cells = _frames_core(x, y, t, p, filter_time, time_window)
    if status == _UNSORTED:
        m, n_frames, *cells = _unsorted_frames(x, y, t, p, filter_time, time_window)
    return RecordingFrames(*cells, n_frames=int(n_frames), n_events=n_events, n_events_denoised=int(m))


def events_frames(events: np.ndarray, denoise_filter_us: int, time_window_us: int) -> RecordingFrames:
    """Denoise + ToFrame (exactly tonic's, see the module doc) of an event array with fields x, y, t, p."""
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    if len(events) == 0:
        raise ValueError("no events: tonic's Compose returns the empty event array, not frames")
    x, y, t, p = (np.ascontiguousarray(events[name], dtype=np.int64) for name in ("x", "y", "t", "p"))
    if x.min() < 0 or y.min() < 0 or x.max() >= _WIDTH or y.max() >= _HEIGHT or not np.isin(p, (0, 1)).all():
        raise ValueError(f"events outside the {NMNIST_SENSOR_SIZE} sensor (x, y in 0..33, p in 0/1)")
    return _frames_from_decoded(x, y, t, p, filter_time, time_window, len(events))


def recording_frames(path: str | Path, denoise_filter_us: int, time_window_us: int) -> RecordingFrames:
    """Read one ``.bin`` recording and return its frames' non-zero cells (tonic-exact, compiled).

    The same frames as ``Compose([Denoise(filter_time), ToFrame((34, 34, 2), time_window)])`` on
    ``tonic.datasets.NMNIST``'s events; raises :class:`NMNISTRecordingError` naming the file for an
    empty, truncated or out-of-sensor recording.
    """
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    raw = _read_bytes(path)
    x, y, t, p, status, bad = _decode(raw)
    if status == _BAD_X:
        raise _coordinate_error(path, raw, bad, "x")
    if status == _BAD_Y:
        raise _coordinate_error(path, raw, bad, "y")
    if x.size == 0:
        raise NMNISTRecordingError(f"{path}: no events (only timestamp-overflow markers)")
    return _frames_from_decoded(x, y, t, p, filter_time, time_window, int(x.size))


# ----------------------------------------------------------------------------------------------
# preprocessing a split into sparse Parquet
# ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import spikebench

    out = {}
    for package in ("tonic", "numba", "numpy", "pyarrow"):
        try:
            out[f"{package}_version"] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[f"{package}_version"] = "not installed"
    out["spikebench_version"] = spikebench.__version__
    return out


def list_recordings(recordings_dir: str | Path) -> tuple[list[Path], np.ndarray]:
    """The ``<digit>/*.bin`` files of a split folder in tonic's order (digit folder, file name), labels."""
    recordings_dir = Path(recordings_dir)
    if not recordings_dir.is_dir():
        raise FileNotFoundError(f"N-MNIST recordings folder {recordings_dir} does not exist")
    files = sorted(recordings_dir.glob("*/*.bin"), key=lambda f: (f.parent.name, f.name))
    if not files:
        raise FileNotFoundError(f"{recordings_dir}: no <digit>/*.bin recordings (tonic's N-MNIST layout)")
    bad = sorted({f.parent.name for f in files if f.parent.name not in "0123456789" or len(f.parent.name) != 1})
    if bad:
        raise ValueError(f"{recordings_dir}: recording folders must be digits 0..9 (the label), found {bad}")
    labels = np.array([int(f.parent.name) for f in files], dtype=np.int64)
    return files, labels


def _loggers(log) -> tuple[Callable[[str], None], Callable[[str], None]]:
    """(info, warning) from a logging.Logger, a plain callable, or None."""
    if log is None:
        return (lambda message: None), (lambda message: None)
    if hasattr(log, "info"):
        return log.info, getattr(log, "warning", log.info)
    return log, (lambda message: log(f"warning: {message}"))


def preprocess_split(
    recordings_dir: str | Path,
    frames_out: str | Path,
    samples_out: str | Path,
    denoise_filter_us: int,
    time_window_us: int,
    chunk_size: int = 2000,
    log: logging.Logger | Callable[[str], None] | None = None,
    split: str | None = None,
) -> dict:
    """Denoise + frame every recording of one split and write the frames/samples Parquet pair.

    ``recordings_dir`` is tonic's split folder (``.../NMNIST/Train``); ``split`` defaults to its
    name in lower case. Recordings are processed ``chunk_size`` at a time, each chunk written as one
    row group, so memory stays bounded by one chunk's sparse cells. Both files are written under
    temporary names beside the outputs and renamed at the end. Returns n_samples, n_cells,
    n_events, n_events_denoised and seconds.
    """
    start = time.perf_counter()
    say, warn = _loggers(log)
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    recordings_dir = Path(recordings_dir)
    frames_out, samples_out = Path(frames_out), Path(samples_out)
    split = split or recordings_dir.name.lower()
    files, labels = list_recordings(recordings_dir)
    if len(files) > _INT32_MAX:
        raise ValueError(f"{recordings_dir}: {len(files)} recordings do not fit the int32 sample column")
    dataset_root = recordings_dir.parent
    file_metadata = {
        "denoise_filter_us": str(filter_time),
        "time_window_us": str(time_window),
        "sensor_size": json.dumps(list(NMNIST_SENSOR_SIZE)),
        "split": split,
        "equivalent_to": (
            f"tonic.transforms.Compose([Denoise(filter_time={filter_time}), "
            f"ToFrame(sensor_size=(34, 34, 2), time_window={time_window})]) on tonic.datasets.NMNIST"
        ),
        **_versions(),
    }
    frames_schema = FRAMES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_frames"})
    samples_schema = SAMPLES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_samples"})

    n = len(files)
    n_frames = np.zeros(n, np.int64)
    n_events = np.zeros(n, np.int64)
    n_denoised = np.zeros(n, np.int64)
    n_cells = 0
    for out in (frames_out, samples_out):
        out.parent.mkdir(parents=True, exist_ok=True)
    frames_tmp = frames_out.with_name(f".{frames_out.name}.{os.getpid()}.tmp")
    samples_tmp = samples_out.with_name(f".{samples_out.name}.{os.getpid()}.tmp")
    say(f"N-MNIST {split}: {n} recordings in {recordings_dir}; denoise {filter_time} us, frames of {time_window} us")
    try:
        # One background thread writes chunk k (Arrow releases the GIL) while chunk k+1 is computed;
        # at most two chunks' sparse cells are alive at a time.
        with (
            pq.ParquetWriter(frames_tmp, frames_schema, compression="zstd") as writer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="nmnist-parquet") as pool,
        ):
            pending = None
            for lo in range(0, n, chunk_size):
                parts = []
                for i in range(lo, min(lo + chunk_size, n)):
                    rec = recording_frames(files[i], filter_time, time_window)
                    if rec.n_frames > _INT16_MAX + 1:
                        raise ValueError(
                            f"{files[i]}: {rec.n_frames} frames; the int16 frame column holds at most "
                            f"{_INT16_MAX + 1} (use a longer time_window_us)"
                        )
                    if rec.count.size and int(rec.count.max()) > _INT16_MAX:
                        raise ValueError(
                            f"{files[i]}: a frame cell counts {int(rec.count.max())} events; the int16 count "
                            f"column (tonic's int16 frames) holds at most {_INT16_MAX}"
                        )
                    if rec.n_events_denoised == 0:
                        warn(f"{files[i]}: Denoise kept no event; stored with 0 frames (tonic returns no frames)")
                    n_frames[i], n_events[i], n_denoised[i] = rec.n_frames, rec.n_events, rec.n_events_denoised
                    parts.append((i, rec))
                sample = np.concatenate([np.full(r.count.size, i, np.int32) for i, r in parts])
                table = pa.table(
                    {
                        "sample": sample,
                        "frame": np.concatenate([r.frame for _, r in parts]).astype(np.int16),
                        "polarity": np.concatenate([r.polarity for _, r in parts]),
                        "y": np.concatenate([r.y for _, r in parts]),
                        "x": np.concatenate([r.x for _, r in parts]),
                        "count": np.concatenate([r.count for _, r in parts]).astype(np.int16),
                    },
                    schema=frames_schema,
                )
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.write_table, table, row_group_size=max(table.num_rows, 1))
                n_cells += table.num_rows
                say(
                    f"N-MNIST {split}: {min(lo + chunk_size, n)}/{n} recordings, {n_cells} cells, "
                    f"{time.perf_counter() - start:.1f} s"
                )
            if pending is not None:
                pending.result()
        if max(n_events.max(), n_denoised.max()) > _INT32_MAX:
            raise ValueError(f"{recordings_dir}: a recording has more than {_INT32_MAX} events (int32 columns)")
        samples = pa.table(
            {
                "sample": np.arange(n, dtype=np.int32),
                "label": labels,
                "n_frames": n_frames.astype(np.int32),
                "n_events": n_events.astype(np.int32),
                "n_events_denoised": n_denoised.astype(np.int32),
                "source": [f.relative_to(dataset_root).as_posix() for f in files],
            },
            schema=samples_schema,
        )
        pq.write_table(samples, samples_tmp, compression="zstd")
        os.replace(frames_tmp, frames_out)
        os.replace(samples_tmp, samples_out)
    finally:
        frames_tmp.unlink(missing_ok=True)
        samples_tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    say(f"N-MNIST {split}: wrote {frames_out} ({n_cells} cells) and {samples_out} ({n} samples) in {seconds:.1f} s")
    return {
        "split": split,
        "n_samples": n,
        "n_cells": n_cells,
        "n_events": int(n_events.sum()),
        "n_events_denoised": int(n_denoised.sum()),
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------------------------
# loading: sparse cells on the device, dense padded batches
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _pack_cells(sample, frame, polarity, y, x, count, n_frames, previous, cells, counts, per_sample, pos):  # pragma: no cover
    """Validate one row group and pack its rows into cells/counts at pos; (status, bad row).

    status 1: sample goes backwards (unsorted), 2: sample outside the samples table, 3: a cell outside
    the sample's frames or the sensor, or a count outside 1..32767.
    """
    n = n_frames.size
    for r in range(sample.size):
        s = np.int64(sample[r])
        if s < previous:
            return 1, r
        if s < 0 or s >= n:
            return 2, r
        f = np.int64(frame[r])
        pp = np.int64(polarity[r])
        yy = np.int64(y[r])
        xx = np.int64(x[r])
        c = np.int64(count[r])
        if f < 0 or f >= n_frames[s] or pp < 0 or pp > 1 or yy < 0 or yy > 33 or xx < 0 or xx > 33 or c < 1 or c > 32767:
            return 3, r
        cells[pos + r] = f * 2312 + pp * 1156 + yy * 34 + xx
        counts[pos + r] = c
        per_sample[s] += 1
        previous = s
    return 0, -1


def _parse_metadata(path: Path, schema: pa.Schema) -> dict:
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    missing = [key for key in _REQUIRED_METADATA if key not in raw]
    if missing:
        raise NMNISTFramesError(
            f"{path}: Parquet metadata lacks {missing} (the transform parameters written by preprocess_split); "
            "the file was not made by spikebench.data.nmnist.preprocess_split: rerun it"
        )
    meta = {k: v for k, v in raw.items() if k not in ("ARROW:schema", "pandas")}
    try:
        meta["denoise_filter_us"] = int(raw["denoise_filter_us"])
        meta["time_window_us"] = int(raw["time_window_us"])
        meta["sensor_size"] = tuple(int(v) for v in json.loads(raw["sensor_size"]))
    except (ValueError, TypeError) as err:
        raise NMNISTFramesError(f"{path}: unreadable transform parameters in the Parquet metadata: {err}") from err
    if meta["sensor_size"] != NMNIST_SENSOR_SIZE:
        raise NMNISTFramesError(f"{path}: sensor_size {meta['sensor_size']} is not N-MNIST's {NMNIST_SENSOR_SIZE}")
    return meta


def _check_columns(path: Path, schema: pa.Schema, expected: pa.Schema) -> None:
    missing = [name for name in expected.names if name not in schema.names]
    if missing:
        raise NMNISTFramesError(f"{path}: missing column(s) {missing}; expected {expected.names}")
    for field in expected:
        have = schema.field(field.name).type
        if pa.types.is_integer(field.type) and not pa.types.is_integer(have):
            raise NMNISTFramesError(f"{path}: column {field.name!r} is {have}, expected an integer type")


@dataclass
class SparseFrames:
    """A split's frames as sparse cells on a device, CSR-like: sample i owns ``cells[offsets[i]:offsets[i+1]]``.

    ``cells`` packs frame * 2312 + polarity * 1156 + y * 34 + x (int32), ``counts`` the event counts
    (int16); ``labels`` and ``n_frames`` are int64 [n]. :meth:`dense_batch` builds padded float32
    frames [T_max, B, 2, 34, 34] with one scatter on the device.
    """

    offsets: torch.Tensor
    cells: torch.Tensor
    counts: torch.Tensor
    labels: torch.Tensor
    n_frames: torch.Tensor
    sources: list[str]
    metadata: dict
    device: torch.device

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def sensor_size(self) -> tuple[int, int, int]:
        return NMNIST_SENSOR_SIZE

    def dense_batch(self, idx: torch.Tensor | Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of the samples ``idx``: float32 [T_max, B, 2, 34, 34] (zero-padded at the end), n_frames int64 [B].

        T_max is the largest n_frames in the batch; frame t of sample b equals tonic's frame t.
        """
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.device).reshape(-1)
        batch = idx.numel()
        if batch == 0:
            return torch.zeros((0, 0, _POLARITIES, _HEIGHT, _WIDTH), device=self.device), idx.clone()
        if len(self) == 0:
            raise IndexError("dense_batch on an empty SparseFrames")
        safe = idx.clamp(0, len(self) - 1)  # no device-side assert before the range check below
        starts = self.offsets[safe]
        lengths = self.offsets[safe + 1] - starts
        n_frames = self.n_frames[safe]
        lo, hi, t_max, total = torch.stack([idx.min(), idx.max(), n_frames.max(), lengths.sum()]).tolist()
        if lo < 0 or hi >= len(self):
            raise IndexError(f"sample index out of range 0..{len(self) - 1}: got {lo}..{hi}")
        out = torch.zeros(t_max * batch * _CELLS, dtype=torch.float32, device=self.device)
        if total:
            b = torch.repeat_interleave(torch.arange(batch, device=self.device), lengths, output_size=total)
            first = torch.cumsum(lengths, 0) - lengths
            pos = torch.arange(total, device=self.device) + (starts - first)[b]
            cell = self.cells[pos].to(torch.int64)
            flat = ((cell // _CELLS) * batch + b) * _CELLS + cell % _CELLS
            out.index_put_((flat,), self.counts[pos].to(torch.float32))
        return out.view(t_max, batch, _POLARITIES, _HEIGHT, _WIDTH), n_frames.clone()


def load_frames(
    frames_path: str | Path,
    samples_path: str | Path,
    device: str | torch.device = "cpu",
    indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> SparseFrames:
    """Read a split's frames/samples Parquet pair (from :func:`preprocess_split`) into :class:`SparseFrames`.

    ``indices`` keeps only those samples (e.g. the train or validation part of the training split),
    renumbered 0..k-1 in the given order. Raises :class:`NMNISTFramesError` naming the file for a
    missing column, missing transform metadata, or inconsistent contents.
    """
    frames_path, samples_path = Path(frames_path), Path(samples_path)
    for path in (frames_path, samples_path):
        if not path.is_file():
            raise FileNotFoundError(f"N-MNIST frames file {path} does not exist (run preprocess_split)")
    samples_file = pq.ParquetFile(samples_path)
    frames_file = pq.ParquetFile(frames_path)
    _check_columns(samples_path, samples_file.schema_arrow, SAMPLES_SCHEMA)
    _check_columns(frames_path, frames_file.schema_arrow, FRAMES_SCHEMA)
    meta = _parse_metadata(samples_path, samples_file.schema_arrow)
    frames_meta = _parse_metadata(frames_path, frames_file.schema_arrow)
    for key in _REQUIRED_METADATA:
        if meta[key] != frames_meta[key]:
            raise NMNISTFramesError(
                f"{frames_path} has {key} = {frames_meta[key]!r} but {samples_path} has {meta[key]!r}: "
                "they come from different preprocessing runs"
            )

    samples = samples_file.read(columns=["sample", "label", "n_frames", "source"])
    sample_ids = samples.column("sample").to_numpy()
    n = len(sample_ids)
    if not np.array_equal(sample_ids, np.arange(n)):
        raise NMNISTFramesError(f"{samples_path}: column 'sample' must be 0..{n - 1} in order")
    labels = samples.column("label").to_numpy().astype(np.int64)
    n_frames = samples.column("n_frames").to_numpy().astype(np.int64)
    sources = samples.column("source").to_pylist()

    total = frames_file.metadata.num_rows
    cells = np.empty(total, np.int32)
    counts = np.empty(total, np.int16)
    per_sample = np.zeros(n, np.int64)
    pos, previous = 0, -1
    columns = ["sample", "frame", "polarity", "y", "x", "count"]
    for group in range(frames_file.num_row_groups):
        table = frames_file.read_row_group(group, columns=columns)
        arrays = [table.column(c).to_numpy() for c in columns]
        rows = len(arrays[0])
        if pos + rows > total:
            raise NMNISTFramesError(f"{frames_path}: row groups hold more rows than the footer's {total}")
        status, bad = _pack_cells(*arrays, n_frames, previous, cells, counts, per_sample, pos)
        if status == 1:
            raise NMNISTFramesError(f"{frames_path}: rows are not sorted by 'sample' (row {pos + bad})")
        if status == 2:
            raise NMNISTFramesError(
                f"{frames_path}: row {pos + bad} has sample {arrays[0][bad]}, outside 0..{n - 1} of {samples_path}"
            )
        if status == 3:
            sample, frame, polarity, y, x, count = (int(a[bad]) for a in arrays)
            raise NMNISTFramesError(
                f"{frames_path}: row {pos + bad} (sample {sample}, frame {frame}, polarity {polarity}, y {y}, x {x}, "
                f"count {count}) lies outside the sample's {n_frames[sample]} frames or the {NMNIST_SENSOR_SIZE} "
                "sensor, or its count is outside 1..32767"
            )
        pos += rows
        if rows:
            previous = int(arrays[0][-1])
    if pos != total:
        raise NMNISTFramesError(f"{frames_path}: read {pos} rows, the footer says {total}")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(per_sample, out=offsets[1:])

    if indices is not None:
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices must lie in 0..{n - 1} ({samples_path} has {n} samples)")
        starts, lengths = offsets[idx], offsets[idx + 1] - offsets[idx]
        new_offsets = np.zeros(idx.size + 1, np.int64)
        np.cumsum(lengths, out=new_offsets[1:])
        new_cells = np.empty(int(new_offsets[-1]), np.int32)
        new_counts = np.empty(int(new_offsets[-1]), np.int16)
        for lo in range(0, idx.size, 4096):  # bounded temporaries: 4096 samples per step
            hi = min(lo + 4096, idx.size)
            a, z = new_offsets[lo], new_offsets[hi]
            src = np.repeat(starts[lo:hi] - new_offsets[lo:hi], lengths[lo:hi]) + np.arange(a, z)
            new_cells[a:z] = cells[src]
            new_counts[a:z] = counts[src]
        cells, counts, offsets = new_cells, new_counts, new_offsets
        labels, n_frames, sources = labels[idx], n_frames[idx], [sources[i] for i in idx]

    device = torch.device(device)
    return SparseFrames(
        offsets=torch.from_numpy(offsets).to(device),
        cells=torch.from_numpy(cells).to(device),
        counts=torch.from_numpy(counts).to(device),
        labels=torch.from_numpy(np.ascontiguousarray(labels)).to(device),
        n_frames=torch.from_numpy(np.ascontiguousarray(n_frames)).to(device),
        sources=sources,
        metadata=meta,
        device=device,
    )
