"""The tonic-exact framing core: decode + Denoise + ToFrame of N-MNIST events in numba-compiled kernels.

What each kernel reproduces of tonic (and why the results are equal cell for cell) is in the package
doc; the tests compare them with tonic itself on the real recordings. The output is sparse: the
non-zero cells of each frame in (frame, polarity, y, x) order, never the dense frames.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from spikebench.data.catalog import (
    NMNIST_CELLS as _CELLS,
    NMNIST_HEIGHT as _HEIGHT,
    NMNIST_PLANE as _PLANE,
    NMNIST_POLARITIES as _POLARITIES,
    NMNIST_SENSOR_SIZE,
    NMNIST_WIDTH as _WIDTH,
)
from spikebench.data.nmnist.recordings import (
    EVENT_BYTES as _EVENT_BYTES,
    OVERFLOW_US as _OVERFLOW_US,
    OVERFLOW_Y as _OVERFLOW_Y,
    P_SHIFT as _P_SHIFT,
    T_HIGH_MASK as _T_HIGH_MASK,
)

_INT16_MAX = np.iinfo(np.int16).max

# status codes of the compiled core
_OK, _BAD_X, _BAD_Y, _NO_EVENTS, _UNSORTED = 0, 1, 2, 3, 4

# cell code = p * _PLANE + y * _WIDTH + x (0 .. _CELLS - 1); the touched cells of a frame are a bit set
# of _WORDS 64-bit words, and the touched words one more 64-bit word (so _WORDS is at most 64)
_WORD_BITS = 64
_WORD_SHIFT = 6  # c >> 6 is the word of cell c
_BIT_MASK = _WORD_BITS - 1  # c & 63 is its bit in that word
_WORDS = (_CELLS + _BIT_MASK) // _WORD_BITS  # 37
assert _WORDS <= _WORD_BITS and 1 << _WORD_SHIFT == _WORD_BITS
# Denoise map with a border: cell (x, y) at (x + 1) * _MAP_STRIDE + y + 1; border cells hold _NEVER,
# which no timestamp is below, so the neighbours outside tonic's (max x + 1, max y + 1) map never count.
_MAP_STRIDE = _HEIGHT + 2
_MAP_SIZE = (_WIDTH + 2) * _MAP_STRIDE
_NEVER = np.iinfo(np.int64).min
_MAX_PARAM_US = 2**40  # transform parameters beyond this (~12.7 days) are refused (no int64 overflow)

# columns of the per-recording table that _frames_batch returns
_ST_STATUS, _ST_BAD_EVENT, _ST_EVENTS, _ST_DENOISED, _ST_FRAMES, _ST_END, _ST_MAX_COUNT = range(7)
_ST_COLUMNS = 7


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


@numba.njit(cache=True, nogil=True, inline="always")
def _event_fields(raw, q):  # pragma: no cover - compiled
    """x, y, polarity and 23-bit timestamp of the event at byte q (tonic.io.read_mnist_file's layout)."""
    b2 = np.int64(raw[q + 2])
    t = ((b2 & _T_HIGH_MASK) << 16) | (np.int64(raw[q + 3]) << 8) | np.int64(raw[q + 4])
    return np.int64(raw[q]), np.int64(raw[q + 1]), b2 >> _P_SHIFT, t


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
    [
        0,
        1,
        48,
        2,
        57,
        49,
        28,
        3,
        61,
        58,
        50,
        42,
        38,
        29,
        17,
        4,
        62,
        55,
        59,
        36,
        53,
        51,
        43,
        22,
        45,
        39,
        33,
        30,
        24,
        18,
        12,
        5,
        63,
        47,
        56,
        27,
        60,
        41,
        37,
        16,
        54,
        35,
        52,
        21,
        44,
        32,
        23,
        11,
        46,
        26,
        40,
        15,
        34,
        20,
        31,
        10,
        25,
        14,
        19,
        9,
        13,
        8,
        7,
        6,
    ],
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
    w = c >> _WORD_SHIFT
    bits[w] |= np.uint64(1) << np.uint64(c & _BIT_MASK)
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
            c = w * _WORD_BITS + bit
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
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < int(value) < _MAX_PARAM_US:
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
