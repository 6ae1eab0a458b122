"""N-MNIST: tonic's download layout, a fast reader, tonic-exact denoise + frames, sparse Parquet.

The study turns each N-MNIST recording into frames with tonic::

    tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=denoise_filter_us),
        tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=time_window_us),
    ])

applied to the events as ``tonic.datasets.NMNIST`` returns them (``first_saccade_only=False``,
``stabilize=False``). tonic does this with a Python loop over events (Denoise) and one
``np.add.at`` per frame (ToFrame), about 20 ms per recording. This module computes the *same frames,
cell for cell* with one numba-compiled call per chunk of recordings, and stores the non-zero cells of a
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
* :func:`preprocess_split` (one split -> frames + samples Parquet, one row group per chunk of
  recordings; with ``threads`` > 1 the next chunks are framed while one is written);
* :func:`load_frames` -> :class:`SparseFrames` (cells on the device; ``dense_batch(idx)`` gives
  float32 [T_max, B, 2, 34, 34] zero-padded frames and the int64 frame counts).

Speed (benchmarks/bench_nmnist_preprocess.py, which also times the whole job against tonic's
per-sample pipeline on the same files): the files of a chunk are read into one buffer and framed
by one compiled call (decode and Denoise in one pass), and the frames file is written with
byte-stream-split + zstd encoding, about half the CPU time of Arrow's default dictionary encoding.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:  # torch is imported where frames are loaded: the preprocess job never needs it
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

_PLANE = _HEIGHT * _WIDTH  # cells of one polarity (34 * 34 = 1156); cell code = p * _PLANE + y * _WIDTH + x
_WORDS = (_CELLS + 63) // 64  # 64-bit words of the bit set of touched cells (37; at most 64)
assert _WORDS <= 64
_EVENT_BYTES = 5  # bytes per event in a .bin file
# Denoise map with a border: cell (x, y) at (x + 1) * _MAP_STRIDE + y + 1; border cells hold _NEVER,
# which no timestamp is below, so the neighbours outside tonic's (max x + 1, max y + 1) map never count.
_MAP_STRIDE = _HEIGHT + 2
_MAP_SIZE = (_WIDTH + 2) * _MAP_STRIDE
_NEVER = np.iinfo(np.int64).min

# columns of the per-recording table that _frames_batch returns
_ST_STATUS, _ST_BAD_EVENT, _ST_EVENTS, _ST_DENOISED, _ST_FRAMES, _ST_END, _ST_MAX_COUNT = range(7)
_ST_COLUMNS = 7


@numba.njit(cache=True, nogil=True, inline="always")
def _event_fields(raw, q):  # pragma: no cover - compiled
    """x, y, polarity and 23-bit timestamp of the event at byte q (tonic.io.read_mnist_file's layout)."""
    b2 = np.int64(raw[q + 2])
    t = ((b2 & 127) << 16) | (np.int64(raw[q + 3]) << 8) | np.int64(raw[q + 4])
    return np.int64(raw[q]), np.int64(raw[q + 1]), b2 >> 7, t


@numba.njit(cache=True, nogil=True)
def _scan(raw, lo, hi):  # pragma: no cover - compiled
    """Check the events of raw[lo:hi]; (events, max x + 1, max y + 1, status, first bad event).

    An event with y == _OVERFLOW_Y is a timestamp-overflow marker, not an event. The size hi - lo is
    a positive multiple of 5 (checked when the file is read).
    """
    events = 0
    width = 0
    height = 0
    for i in range((hi - lo) // _EVENT_BYTES):
        x, y, _, _ = _event_fields(raw, lo + _EVENT_BYTES * i)
        if y == _OVERFLOW_Y:
            continue
        if x >= _WIDTH:
            return events, width, height, _BAD_X, i
        if y >= _HEIGHT:
            return events, width, height, _BAD_Y, i
        width = max(width, x + 1)
        height = max(height, y + 1)
        events += 1
    return events, width, height, (_OK if events else _NO_EVENTS), -1


@numba.njit(cache=True, nogil=True)
def _decode(raw):  # pragma: no cover - compiled
    """The events of one checked recording's bytes as int64 arrays x, y, t, p (overflow applied, markers dropped)."""
    n = raw.size // _EVENT_BYTES
    x = np.empty(n, np.int64)
    y = np.empty(n, np.int64)
    t = np.empty(n, np.int64)
    p = np.empty(n, np.int64)
    k = 0
    offset = 0
    for i in range(n):
        xi, yi, pi, ti = _event_fields(raw, _EVENT_BYTES * i)
        if yi == _OVERFLOW_Y:
            offset += _OVERFLOW_US
            continue
        x[k] = xi
        y[k] = yi
        p[k] = pi
        t[k] = ti + offset
        k += 1
    return x[:k], y[:k], t[:k], p[:k]


@numba.njit(cache=True, nogil=True, inline="always")
def _denoise_map(memory, width, height, filter_time):  # pragma: no cover - compiled
    """tonic's Denoise map of one recording: (width x height) cells at filter_time, a border of _NEVER."""
    memory[:] = filter_time
    for y in range(_MAP_STRIDE):
        memory[y] = _NEVER
        memory[(width + 1) * _MAP_STRIDE + y] = _NEVER
    for x in range(_WIDTH + 2):
        memory[x * _MAP_STRIDE] = _NEVER
        memory[x * _MAP_STRIDE + height + 1] = _NEVER


@numba.njit(cache=True, nogil=True, inline="always")
def _denoise_event(memory, x, y, t, p, filter_time, kept_cell, kept_t, m, ordered):  # pragma: no cover
    """tonic.functional.denoise_numpy for one event, in array order; (kept so far, kept times ordered).

    The event first writes t + filter_time into its own cell, then is kept if one of its 4 direct
    neighbours (never itself, no diagonals) holds a value > t.
    """
    j = (x + 1) * _MAP_STRIDE + y + 1
    memory[j] = t + filter_time
    if max(max(memory[j - _MAP_STRIDE], memory[j + _MAP_STRIDE]), max(memory[j - 1], memory[j + 1])) > t:
        if m > 0 and t < kept_t[m - 1]:
            ordered = False
        kept_cell[m] = p * _PLANE + y * _WIDTH + x
        kept_t[m] = t
        m += 1
    return m, ordered


@numba.njit(cache=True, nogil=True)
def _denoise(x, y, t, p, filter_time, kept_cell, kept_t):  # pragma: no cover - compiled
    """Denoise of decoded events (x, y inside the sensor, at least one): kept cell codes and times.

    Returns (kept, kept timestamps non-decreasing).
    """
    memory = np.empty(_MAP_SIZE, np.int64)
    _denoise_map(memory, x.max() + 1, y.max() + 1, filter_time)
    m = 0
    ordered = True
    for i in range(x.size):
        m, ordered = _denoise_event(memory, x[i], y[i], t[i], p[i], filter_time, kept_cell, kept_t, m, ordered)
    return m, ordered


@numba.njit(cache=True, nogil=True)
def _denoise_bytes(raw, lo, hi, width, height, filter_time, memory, kept_cell, kept_t):  # pragma: no cover
    """Decode + Denoise of the checked recording raw[lo:hi] in one pass; (kept, kept times ordered)."""
    _denoise_map(memory, width, height, filter_time)
    m = 0
    ordered = True
    offset = 0
    for q in range(lo, hi, _EVENT_BYTES):
        x, y, p, t = _event_fields(raw, q)
        if y == _OVERFLOW_Y:
            offset += _OVERFLOW_US
            continue
        m, ordered = _denoise_event(memory, x, y, t + offset, p, filter_time, kept_cell, kept_t, m, ordered)
    return m, ordered


# ctz of a 64-bit word with one bit set: table[(bit * magic) >> 58] (de Bruijn sequence 0x03f79d71b4cb0a89)
_DEBRUIJN_MAGIC = 0x03F79D71B4CB0A89
_DEBRUIJN_SHIFT = 58
_DEBRUIJN_TABLE = np.array(
    [0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4, 62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30,
     24, 18, 12, 5, 63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11, 46, 26, 40, 15, 34, 20, 31, 10,
     25, 14, 19, 9, 13, 8, 7, 6],
    dtype=np.int64,
)
# cell code c = polarity * 1156 + y * 34 + x -> polarity, y, x (lookups beat integer division here)
_CELL_P = (np.arange(_CELLS) // _PLANE).astype(np.int8)
_CELL_Y = (np.arange(_CELLS) % _PLANE // _WIDTH).astype(np.int8)
_CELL_X = (np.arange(_CELLS) % _WIDTH).astype(np.int8)


@numba.njit(cache=True, nogil=True, inline="always")
def _lowest_bit(word):  # pragma: no cover - compiled
    """(index, value) of the lowest set bit of a non-zero uint64 (de Bruijn multiplication)."""
    low = word & (~word + np.uint64(1))
    return _DEBRUIJN_TABLE[(low * np.uint64(_DEBRUIJN_MAGIC)) >> np.uint64(_DEBRUIJN_SHIFT)], low


@numba.njit(cache=True, nogil=True, inline="always")
def _add_event(c, bits, counter, words):  # pragma: no cover - compiled
    """Count one event in cell c of the current frame; mark it in the bit set; the new set of touched words.

    Bit w of ``words`` (a uint64: the frame's _WORDS <= 64 words) says that word w of ``bits`` has a cell.
    """
    w = c >> 6
    bits[w] |= np.uint64(1) << np.uint64(c & 63)
    counter[c] += 1
    return words | (np.uint64(1) << np.uint64(w))


@numba.njit(cache=True, nogil=True, inline="always")
def _emit_frame(i, words, bits, counter, frame, pol, yy, xx, count, k):  # pragma: no cover - compiled
    """Append the touched cells of frame i in (polarity, y, x) order and clear them; (new length, max count)."""
    most = 0
    while words:
        w, low_word = _lowest_bit(words)
        words ^= low_word
        word = bits[w]
        bits[w] = 0
        while word:
            bit, low = _lowest_bit(word)
            word ^= low
            c = w * 64 + bit
            frame[k] = i
            pol[k] = _CELL_P[c]
            yy[k] = _CELL_Y[c]
            xx[k] = _CELL_X[c]
            events = counter[c]
            count[k] = events
            most = max(most, events)
            counter[c] = 0
            k += 1
    return k, most


@numba.njit(cache=True, nogil=True)
def _frame_ordered(kept_cell, kept_t, time_window, bits, counter, frame, pol, yy, xx, count, k):  # pragma: no cover
    """tonic's ToFrame(time_window) of time-ordered kept events, cells appended at k; (n_frames, k, max count).

    slice_events_by_time: start = first event, n_frames = max(floor((duration - W) / W) + 1, 1);
    frame f holds start + f*W <= t < start + (f+1)*W (what searchsorted gives on ordered
    timestamps); events from start + n_frames*W on (the incomplete tail) are dropped.
    """
    m = kept_t.size
    t0 = kept_t[0]
    duration = kept_t[m - 1] - t0
    n_frames = max(int(math.floor((duration - time_window) / time_window) + 1), 1)
    tail = t0 + n_frames * time_window
    most = 0
    current = 0
    boundary = t0 + time_window  # where the current frame ends
    words = np.uint64(0)
    for j in range(m):
        tj = kept_t[j]
        if tj >= boundary:
            if tj >= tail:
                break
            k, peak = _emit_frame(current, words, bits, counter, frame, pol, yy, xx, count, k)
            most = max(most, peak)
            words = np.uint64(0)
            current = (tj - t0) // time_window
            boundary = t0 + (current + 1) * time_window
        words = _add_event(kept_cell[j], bits, counter, words)
    k, peak = _emit_frame(current, words, bits, counter, frame, pol, yy, xx, count, k)
    return n_frames, k, max(most, peak)


@numba.njit(cache=True, nogil=True)
def _accumulate(cells, starts, ends):  # pragma: no cover - compiled
    """Sum the events cells[starts[i]:ends[i]] into frame i, as tonic's np.add.at does, for any starts/ends."""
    total = 0
    for i in range(starts.size):
        total += max(ends[i] - starts[i], 0)
    frame = np.empty(total, np.int32)
    pol = np.empty(total, np.int8)
    yy = np.empty(total, np.int8)
    xx = np.empty(total, np.int8)
    count = np.empty(total, np.int32)
    counter = np.zeros(_CELLS, np.int64)
    bits = np.zeros(_WORDS, np.uint64)
    k = 0
    for i in range(starts.size):
        words = np.uint64(0)
        for j in range(starts[i], ends[i]):
            words = _add_event(cells[j], bits, counter, words)
        k, _ = _emit_frame(i, words, bits, counter, frame, pol, yy, xx, count, k)
    return frame[:k], pol[:k], yy[:k], xx[:k], count[:k]


@numba.njit(cache=True, nogil=True)
def _frames_batch(raw, bounds, first, filter_time, time_window, sample, frame, pol, yy, xx, count):  # pragma: no cover
    """Decode + Denoise + ToFrame of the recordings raw[bounds[i]:bounds[i+1]]; cells appended in order.

    The output columns hold at least (bounds[-1] - bounds[0]) / 5 rows (cells <= events); recording
    i gets the rows stats[i-1, _ST_END]:stats[i, _ST_END], with sample = first + i. Returns stats
    int64 [n, _ST_COLUMNS]. A recording whose kept timestamps go backwards (_UNSORTED) gets no rows
    here: the caller frames it with numpy's searchsorted instead.
    """
    n = bounds.size - 1
    stats = np.zeros((n, _ST_COLUMNS), np.int64)
    longest = 0
    for i in range(n):
        longest = max(longest, (bounds[i + 1] - bounds[i]) // _EVENT_BYTES)
    kept_cell = np.empty(longest, np.int64)
    kept_t = np.empty(longest, np.int64)
    memory = np.empty(_MAP_SIZE, np.int64)
    counter = np.zeros(_CELLS, np.int64)
    bits = np.zeros(_WORDS, np.uint64)
    k = 0
    for i in range(n):
        lo = bounds[i]
        hi = bounds[i + 1]
        events, width, height, status, bad = _scan(raw, lo, hi)
        stats[i, _ST_EVENTS] = events
        stats[i, _ST_BAD_EVENT] = bad
        if status == _OK:
            m, ordered = _denoise_bytes(raw, lo, hi, width, height, filter_time, memory, kept_cell, kept_t)
            stats[i, _ST_DENOISED] = m
            if m > 0 and not ordered:
                status = _UNSORTED
            elif m > 0:
                n_frames, end, most = _frame_ordered(
                    kept_cell[:m], kept_t[:m], time_window, bits, counter, frame, pol, yy, xx, count, k
                )
                sample[k:end] = first + i
                stats[i, _ST_FRAMES] = n_frames
                stats[i, _ST_MAX_COUNT] = most
                k = end
        stats[i, _ST_STATUS] = status
        stats[i, _ST_END] = k
    return stats


@numba.njit(cache=True, nogil=True)
def _events_core(x, y, t, p, filter_time, time_window):  # pragma: no cover - compiled
    """Denoise + ToFrame of decoded events (one recording); (status, kept, n_frames, frame, pol, y, x, count)."""
    n = x.size
    kept_cell = np.empty(n, np.int64)
    kept_t = np.empty(n, np.int64)
    m, ordered = _denoise(x, y, t, p, filter_time, kept_cell, kept_t)
    frame = np.empty(m, np.int32)
    pol = np.empty(m, np.int8)
    yy = np.empty(m, np.int8)
    xx = np.empty(m, np.int8)
    count = np.empty(m, np.int32)
    if m == 0 or not ordered:
        return (_OK if m == 0 else _UNSORTED), m, 0, frame, pol, yy, xx, count
    counter = np.zeros(_CELLS, np.int64)
    bits = np.zeros(_WORDS, np.uint64)
    n_frames, k, _ = _frame_ordered(kept_cell[:m], kept_t[:m], time_window, bits, counter, frame, pol, yy, xx, count, 0)
    return _OK, m, n_frames, frame[:k], pol[:k], yy[:k], xx[:k], count[:k]


def _unsorted_frames(x, y, t, p, filter_time: int, time_window: int):
    """Slow path for timestamps that go backwards: tonic's numpy slicing, compiled accumulation.

    Returns (kept, n_frames, frame, polarity, y, x, count).
    """
    kept_cell = np.empty(x.size, np.int64)
    kept_t = np.empty(x.size, np.int64)
    m, _ = _denoise(x, y, t, p, filter_time, kept_cell, kept_t)
    cells, kt = kept_cell[:m], kept_t[:m]
    duration = kt[-1] - kt[0]
    n_frames = max(int(np.floor((duration - time_window) / time_window) + 1), 1)
    window_starts = np.arange(n_frames) * time_window + kt[0]
    starts = np.searchsorted(kt, window_starts)[:n_frames].astype(np.int64)
    ends = np.searchsorted(kt, window_starts + time_window)[:n_frames].astype(np.int64)
    return int(m), n_frames, *_accumulate(cells, starts, ends)


def _check_params(denoise_filter_us: int, time_window_us: int) -> tuple[int, int]:
    for name, value in (("denoise_filter_us", denoise_filter_us), ("time_window_us", time_window_us)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < int(value) < 2**40:
            raise ValueError(f"{name} must be a positive integer number of microseconds, got {value!r}")
    return int(denoise_filter_us), int(time_window_us)


def events_frames(events: np.ndarray, denoise_filter_us: int, time_window_us: int) -> RecordingFrames:
    """Denoise + ToFrame (exactly tonic's, see the module doc) of an event array with fields x, y, t, p."""
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    if len(events) == 0:
        raise ValueError("no events: tonic's Compose returns the empty event array, not frames")
    x, y, t, p = (np.ascontiguousarray(events[name], dtype=np.int64) for name in ("x", "y", "t", "p"))
    if x.min() < 0 or y.min() < 0 or x.max() >= _WIDTH or y.max() >= _HEIGHT or not np.isin(p, (0, 1)).all():
        raise ValueError(f"events outside the {NMNIST_SENSOR_SIZE} sensor (x, y in 0..33, p in 0/1)")
    status, m, n_frames, *cells = _events_core(x, y, t, p, filter_time, time_window)
    if status == _UNSORTED:
        m, n_frames, *cells = _unsorted_frames(x, y, t, p, filter_time, time_window)
    return RecordingFrames(*cells, n_frames=int(n_frames), n_events=len(events), n_events_denoised=int(m))


def recording_frames(path: str | Path, denoise_filter_us: int, time_window_us: int) -> RecordingFrames:
    """Read one ``.bin`` recording and return its frames' non-zero cells (tonic-exact, compiled).

    The same frames as ``Compose([Denoise(filter_time), ToFrame((34, 34, 2), time_window)])`` on
    ``tonic.datasets.NMNIST``'s events, computed by the same compiled batch as :func:`preprocess_split`;
    raises :class:`NMNISTRecordingError` naming the file for an empty, truncated or out-of-sensor
    recording.
    """
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    raw = _read_bytes(path)
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


# ----------------------------------------------------------------------------------------------
# batches of recordings: read, compute, check
# ----------------------------------------------------------------------------------------------

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


def _size_error(path: Path, size: int) -> NMNISTRecordingError | None:
    if size == 0:
        return NMNISTRecordingError(f"{path}: empty recording (0 bytes); expected 5 bytes per event")
    if size % _EVENT_BYTES:
        return NMNISTRecordingError(
            f"{path}: {size} bytes is not a multiple of 5 (5 bytes per event): the file is truncated"
        )
    return None


def _read_batch(files: list[Path]) -> _Batch:
    """The files' bytes in one buffer; reading stops at the first empty or truncated file (kept as read_error)."""
    blobs = []
    error = None
    for path in files:
        with open(path, "rb", buffering=0) as fh:
            data = fh.readall()
        error = _size_error(path, len(data))
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
            pieces.append([np.full(cells[0].size, batch.first + i, dtypes[0])] + [a.astype(d) for a, d in zip(cells, dtypes[1:])])
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
            raise _coordinate_error(path, raw, int(bad), "x" if status == _BAD_X else "y")
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
    found = sorted((f.parts[-2], f.name, f) for f in recordings_dir.glob("*/*.bin"))  # (digit folder, name)
    if not found:
        raise FileNotFoundError(f"{recordings_dir}: no <digit>/*.bin recordings (tonic's N-MNIST layout)")
    bad = sorted({folder for folder, _, _ in found if folder not in _DIGIT_FOLDERS})
    if bad:
        raise ValueError(f"{recordings_dir}: recording folders must be digits 0..9 (the label), found {bad}")
    labels = np.array([int(folder) for folder, _, _ in found], dtype=np.int64)
    return [f for _, _, f in found], labels


_DIGIT_FOLDERS = frozenset("0123456789")


def _loggers(log) -> tuple[Callable[[str], None], Callable[[str], None]]:
    """(info, warning) from a logging.Logger, a plain callable, or None."""
    if log is None:
        return (lambda message: None), (lambda message: None)
    if hasattr(log, "info"):
        return log.info, getattr(log, "warning", log.info)
    return log, (lambda message: log(f"warning: {message}"))


#: Recordings per compiled call and per row group of the frames file (about 3 700 cells per recording).
DEFAULT_CHUNK_SIZE = 128
#: How the frames file is encoded (the values are the same whatever is chosen here): byte-stream-split
#: + zstd writes in about half the CPU time of Arrow's default (dictionary) encoding and is ~13 %
#: smaller on N-MNIST cells (BYTE_STREAM_SPLIT of integer columns needs pyarrow >= 17 to write and read).
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": False,
    "column_encoding": "BYTE_STREAM_SPLIT",
    "write_statistics": ["sample"],  # row-group min/max of the sample column (to find a sample's row groups)
}


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


def _split_metadata(split: str, filter_time: int, time_window: int) -> dict[str, str]:
    return {
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


def _check_preprocess_args(chunk_size: int, threads: int) -> None:
    for name, value in (("chunk_size", chunk_size), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def preprocess_split(
    recordings_dir: str | Path,
    frames_out: str | Path,
    samples_out: str | Path,
    denoise_filter_us: int,
    time_window_us: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    log: logging.Logger | Callable[[str], None] | None = None,
    split: str | None = None,
    threads: int = 1,
) -> dict:
    """Denoise + frame every recording of one split and write the frames/samples Parquet pair.

    ``recordings_dir`` is tonic's split folder (``.../NMNIST/Train``); ``split`` defaults to its
    name in lower case. Recordings are read and framed ``chunk_size`` at a time (one compiled call
    per chunk), each chunk written as one row group, so memory stays bounded by a few chunks. With
    ``threads`` > 1, ``threads - 1`` workers frame the next chunks while this thread writes Parquet;
    the files are identical for any ``threads``. Both files are written under temporary names
    beside the outputs and renamed at the end. Returns n_samples, n_cells, n_events,
    n_events_denoised, threads and seconds.
    """
    start = time.perf_counter()
    say, warn = _loggers(log)
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    _check_preprocess_args(chunk_size, threads)
    recordings_dir = Path(recordings_dir)
    frames_out, samples_out = Path(frames_out), Path(samples_out)
    split = split or recordings_dir.name.lower()
    files, labels = list_recordings(recordings_dir)
    if len(files) > _INT32_MAX:
        raise ValueError(f"{recordings_dir}: {len(files)} recordings do not fit the int32 sample column")
    file_metadata = _split_metadata(split, filter_time, time_window)
    frames_schema = FRAMES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_frames"})
    samples_schema = SAMPLES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_samples"})

    n = len(files)
    stats = np.zeros((n, _ST_COLUMNS), np.int64)
    n_cells = 0
    for out in (frames_out, samples_out):
        out.parent.mkdir(parents=True, exist_ok=True)
    frames_tmp = frames_out.with_name(f".{frames_out.name}.{os.getpid()}.tmp")
    samples_tmp = samples_out.with_name(f".{samples_out.name}.{os.getpid()}.tmp")
    say(
        f"N-MNIST {split}: {n} recordings in {recordings_dir}; denoise {filter_time} us, frames of {time_window} us; "
        f"{threads} thread{'s' if threads > 1 else ''}"
    )
    try:
        with pq.ParquetWriter(frames_tmp, frames_schema, **_PARQUET_OPTIONS) as writer:
            for batch in _computed_batches(files, chunk_size, filter_time, time_window, threads):
                for message in _check_batch(batch):
                    warn(message)
                stats[batch.first : batch.first + len(batch.files)] = batch.stats
                table = pa.Table.from_arrays([pa.array(c) for c in batch.columns], schema=frames_schema)
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
                n_cells += table.num_rows
                say(
                    f"N-MNIST {split}: {min(batch.first + chunk_size, n)}/{n} recordings, {n_cells} cells, "
                    f"{time.perf_counter() - start:.1f} s"
                )
        _write_samples(samples_tmp, samples_schema, stats, labels, files, recordings_dir)
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
        "n_events": int(stats[:, _ST_EVENTS].sum()),
        "n_events_denoised": int(stats[:, _ST_DENOISED].sum()),
        "threads": int(threads),
        "seconds": seconds,
    }


def _write_samples(path: Path, schema: pa.Schema, stats: np.ndarray, labels, files, recordings_dir: Path) -> None:
    """The samples table (one row per recording) from the per-recording stats of the batches."""
    n_events, n_denoised = stats[:, _ST_EVENTS], stats[:, _ST_DENOISED]
    if max(n_events.max(), n_denoised.max()) > _INT32_MAX:
        raise ValueError(f"{recordings_dir}: a recording has more than {_INT32_MAX} events (int32 columns)")
    dataset_root = recordings_dir.parent
    samples = pa.table(
        {
            "sample": np.arange(len(files), dtype=np.int32),
            "label": labels,
            "n_frames": stats[:, _ST_FRAMES].astype(np.int32),
            "n_events": n_events.astype(np.int32),
            "n_events_denoised": n_denoised.astype(np.int32),
            "source": [f.relative_to(dataset_root).as_posix() for f in files],
        },
        schema=schema,
    )
    pq.write_table(samples, path, compression="zstd")


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
        outside = f < 0 or f >= n_frames[s] or pp < 0 or pp >= _POLARITIES or yy < 0 or yy >= _HEIGHT or xx < 0
        if outside or xx >= _WIDTH or c < 1 or c > _INT16_MAX:
            return 3, r
        cells[pos + r] = f * _CELLS + pp * _PLANE + yy * _WIDTH + xx
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
        import torch

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
    import torch

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
