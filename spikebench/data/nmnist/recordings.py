"""N-MNIST recordings on disk: tonic's folder layout and a reader that checks every file.

``read_recording`` equals ``tonic.io.read_mnist_file(path, tonic.datasets.NMNIST.dtype)`` (see the
package doc for the format); it is what the download verifies a sample of recordings with. The fast
path that frames whole splits decodes the same bytes in compiled code (:mod:`.framing`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikebench.data.catalog import NMNIST_HEIGHT as _HEIGHT, NMNIST_WIDTH as _WIDTH
from spikebench.data.nmnist.errors import NMNISTRecordingError

#: ``tonic.datasets.NMNIST.dtype``: x, y, t, p as the platform int (int64).
EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])

#: The split name -> tonic's folder under ``<root>/NMNIST`` (``NMNIST.train_folder``/``test_folder``).
SPLIT_FOLDERS: dict[str, str] = {"train": "Train", "test": "Test"}

# The N-MNIST .bin format: 5 bytes per event (x, y, polarity bit + 23-bit timestamp big-endian).
EVENT_BYTES = 5
P_SHIFT = 7  # the polarity is bit 7 of byte 2
T_HIGH_MASK = 0x7F  # the low 7 bits of byte 2 are the timestamp's bits 22..16
OVERFLOW_Y = 240  # y value of a timestamp-overflow marker in the N-MNIST format
OVERFLOW_US = 2**13  # what one overflow marker adds to the timestamps from it on (µs)

_DIGIT_FOLDERS = frozenset("0123456789")


def nmnist_split_folder(root: str | Path, split: str) -> Path:
    """tonic's folder of one split: ``root/NMNIST/Train`` or ``root/NMNIST/Test``."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown N-MNIST split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
    return Path(root) / "NMNIST" / SPLIT_FOLDERS[split]


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


def size_error(path: str | Path, size: int) -> NMNISTRecordingError | None:
    """The error for a recording of ``size`` bytes that cannot hold whole events (None if it can)."""
    if size == 0:
        return NMNISTRecordingError(f"{path}: empty recording (0 bytes); expected 5 bytes per event")
    if size % EVENT_BYTES:
        return NMNISTRecordingError(
            f"{path}: {size} bytes is not a multiple of 5 (5 bytes per event): the file is truncated"
        )
    return None


def read_bytes(path: str | Path) -> np.ndarray:
    """The bytes of one recording (uint8); raises :class:`NMNISTRecordingError` if it is empty or truncated."""
    with open(path, "rb") as fh:
        raw = np.frombuffer(fh.read(), dtype=np.uint8)
    error = size_error(path, raw.size)
    if error is not None:
        raise error
    return raw


def coordinate_error(path: str | Path, raw: np.ndarray, event: int, axis: str) -> NMNISTRecordingError:
    """The error for event ``event`` of ``raw`` whose ``axis`` ("x" or "y") lies outside the sensor."""
    value = int(raw[EVENT_BYTES * event + (0 if axis == "x" else 1)])
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
    raw = read_bytes(path)
    ev = raw.reshape(-1, EVENT_BYTES).astype(np.int64)
    overflow = ev[:, 1] == OVERFLOW_Y
    keep = ~overflow
    bad_x = np.flatnonzero(keep & (ev[:, 0] >= _WIDTH))
    bad_y = np.flatnonzero(keep & (ev[:, 1] >= _HEIGHT))
    if bad_x.size or bad_y.size:
        first_x = bad_x[0] if bad_x.size else ev.shape[0]
        first_y = bad_y[0] if bad_y.size else ev.shape[0]
        raise coordinate_error(path, raw, min(first_x, first_y), "x" if first_x <= first_y else "y")
    t = ((ev[:, 2] & T_HIGH_MASK) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    if overflow.any():
        t = t + OVERFLOW_US * np.cumsum(overflow)
    events = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    if events.size == 0:
        raise NMNISTRecordingError(f"{path}: no events (only timestamp-overflow markers)")
    events["x"] = ev[keep, 0]
    events["y"] = ev[keep, 1]
    events["t"] = t[keep]
    events["p"] = ev[keep, 2] >> P_SHIFT
    return events
