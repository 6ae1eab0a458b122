"""N-MNIST: tonic's download layout, a fast reader, tonic-exact denoise + frames, sparse Parquet.

The package, one concern a module: :mod:`.recordings` (tonic's folder layout, the checked reader),
:mod:`.framing` (the compiled tonic-exact core), :mod:`.batches` (chunks of recordings framed by one
compiled call), :mod:`.schema` and :mod:`.store` (the Parquet pair of a split, written by rule
preprocess_nmnist), :mod:`.loader` (that pair as sparse cells on a device), :mod:`.errors`. The
download is :mod:`spikebench.data.nmnist_download`; the sensor size is in :mod:`spikebench.data.catalog`.

The study turns each N-MNIST recording into frames with tonic::

    tonic.transforms.Compose([
        tonic.transforms.Denoise(filter_time=denoise_filter_us),
        tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=time_window_us),
    ])

applied to the events as ``tonic.datasets.NMNIST`` returns them (``first_saccade_only=False``,
``stabilize=False``). tonic does this with a Python loop over events (Denoise) and one
``np.add.at`` per frame (ToFrame), tens of milliseconds per recording (benchmarks/README.md). This module computes
the *same frames,
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

from spikebench.data.catalog import (
    NMNIST_SENSOR_SIZE,
)
from spikebench.data.nmnist.batches import recording_frames
from spikebench.data.nmnist.errors import NMNISTDownloadError, NMNISTFramesError, NMNISTRecordingError
from spikebench.data.nmnist.framing import RecordingFrames, events_frames
from spikebench.data.nmnist.loader import SparseFrames, load_frames
from spikebench.data.nmnist.recordings import (
    EVENT_DTYPE,
    SPLIT_FOLDERS,
    list_recordings,
    nmnist_split_folder,
    read_recording,
)
from spikebench.data.nmnist.schema import FRAMES_SCHEMA, SAMPLES_SCHEMA
from spikebench.data.nmnist.store import DEFAULT_CHUNK_SIZE, preprocess_split

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EVENT_DTYPE",
    "FRAMES_SCHEMA",
    "NMNIST_SENSOR_SIZE",
    "NMNISTDownloadError",
    "NMNISTFramesError",
    "NMNISTRecordingError",
    "RecordingFrames",
    "SAMPLES_SCHEMA",
    "SPLIT_FOLDERS",
    "SparseFrames",
    "events_frames",
    "list_recordings",
    "load_frames",
    "nmnist_split_folder",
    "preprocess_split",
    "read_recording",
    "recording_frames",
]
# _CELLS, _HEIGHT, _POLARITIES, _WIDTH: the old private names (spikebench.data.catalog's NMNIST_* now),
# kept for the code that imports them from here until it imports the catalog
