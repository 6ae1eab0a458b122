"""Loading a preprocessed N-MNIST split: the Parquet pair checked and packed into sparse cells on a device.

:class:`SparseFrames` keeps a split's non-zero cells (CSR-like, per sample) on the device and
scatters them into padded dense batches there, so the full dense frames never exist.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spikebench.data.catalog import (
    NMNIST_CELLS as _CELLS,
    NMNIST_HEIGHT as _HEIGHT,
    NMNIST_PLANE as _PLANE,
    NMNIST_POLARITIES as _POLARITIES,
    NMNIST_SENSOR_SIZE,
    NMNIST_WIDTH as _WIDTH,
)
from spikebench.data.nmnist.errors import NMNISTFramesError
from spikebench.data.nmnist.schema import FRAMES_SCHEMA, REQUIRED_METADATA, SAMPLES_SCHEMA

if TYPE_CHECKING:  # torch is imported where frames are loaded: the preprocess job never needs it
    import torch

_INT16_MAX = np.iinfo(np.int16).max
# what _pack_cells finds in a row group
_PACKED, _UNSORTED_ROWS, _SAMPLE_OUTSIDE, _CELL_OUTSIDE = 0, 1, 2, 3
_SELECT_STEP = 4096  # samples gathered per step when a subset is selected (bounds the temporaries)
_CELL_COLUMNS = ["sample", "frame", "polarity", "y", "x", "count"]


@numba.njit(cache=True, nogil=True)
def _pack_cells(
    sample, frame, polarity, y, x, count, n_frames, previous, cells, counts, per_sample, pos
):  # pragma: no cover
    """Validate one row group and pack its rows into cells/counts at pos; (status, bad row).

    _UNSORTED_ROWS: sample goes backwards, _SAMPLE_OUTSIDE: sample outside the samples table, _CELL_OUTSIDE: a cell
    outside
    the sample's frames or the sensor, or a count outside 1..32767.
    """
    n = n_frames.size
    for r in range(sample.size):
        s = np.int64(sample[r])
        if s < previous:
            return _UNSORTED_ROWS, r
        if s < 0 or s >= n:
            return _SAMPLE_OUTSIDE, r
        f = np.int64(frame[r])
        pp = np.int64(polarity[r])
        yy = np.int64(y[r])
        xx = np.int64(x[r])
        c = np.int64(count[r])
        outside = f < 0 or f >= n_frames[s] or pp < 0 or pp >= _POLARITIES or yy < 0 or yy >= _HEIGHT or xx < 0
        if outside or xx >= _WIDTH or c < 1 or c > _INT16_MAX:
            return _CELL_OUTSIDE, r
        cells[pos + r] = f * _CELLS + pp * _PLANE + yy * _WIDTH + xx
        counts[pos + r] = c
        per_sample[s] += 1
        previous = s
    return _PACKED, -1


def _parse_metadata(path: Path, schema: pa.Schema) -> dict:
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    missing = [key for key in REQUIRED_METADATA if key not in raw]
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
        out = _zeros(t_max * batch * _CELLS, self.device)
        if total:
            b = torch.repeat_interleave(torch.arange(batch, device=self.device), lengths, output_size=total)
            first = torch.cumsum(lengths, 0) - lengths
            pos = torch.arange(total, device=self.device) + (starts - first)[b]
            cell = self.cells[pos].to(torch.int64)
            flat = ((cell // _CELLS) * batch + b) * _CELLS + cell % _CELLS
            out.index_put_((flat,), self.counts[pos].to(torch.float32))
        return out.view(t_max, batch, _POLARITIES, _HEIGHT, _WIDTH), n_frames.clone()


def _zeros(n: int, device):
    """A zeroed float32 tensor of ``n`` cells for a dense batch; on the CPU the previous batches' buffer is reused
    once nothing holds it (a fresh 100-400 MB tensor per batch was page-faulted in again: issue #22)."""
    import torch

    if torch.device(device).type == "cpu":
        from spikebench.buffers import cpu_zeros

        return cpu_zeros((n,), torch.float32)
    return torch.zeros(n, dtype=torch.float32, device=device)


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
    frames_file, samples_file, meta = _open_pair(frames_path, samples_path)
    labels, n_frames, sources = _read_samples(samples_file, samples_path)
    cells, counts, offsets = _read_cells(frames_file, frames_path, samples_path, n_frames)
    if indices is not None:
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(labels)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices must lie in 0..{n - 1} ({samples_path} has {n} samples)")
        cells, counts, offsets = _select(idx, cells, counts, offsets)
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


@contextlib.contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    """Re-raise pyarrow's errors reading ``path`` (``Parquet magic bytes not found``, ``ZSTD decompression failed``,
    ...) as an :class:`NMNISTFramesError` that names the file, what was expected and the remedy."""
    try:
        yield
    except (pa.ArrowException, OSError) as error:  # pyarrow's IO errors are OSErrors
        raise NMNISTFramesError(
            f"{path}: cannot read it as the Parquet file of preprocessed N-MNIST that rule preprocess_nmnist writes "
            f"({type(error).__name__}: {error}); it is truncated or corrupt (a full disk, a killed copy?). Delete it: "
            "the preprocessing rule makes it again from the recordings."
        ) from error


def _open_pair(frames_path: Path, samples_path: Path) -> tuple[pq.ParquetFile, pq.ParquetFile, dict]:
    """Both files opened, their columns and transform metadata checked (and equal); (frames, samples, metadata)."""
    for path in (frames_path, samples_path):
        if not path.is_file():
            raise FileNotFoundError(f"N-MNIST frames file {path} does not exist (run preprocess_split)")
    with _parquet_errors(samples_path):
        samples_file = pq.ParquetFile(samples_path)
    with _parquet_errors(frames_path):
        frames_file = pq.ParquetFile(frames_path)
    _check_columns(samples_path, samples_file.schema_arrow, SAMPLES_SCHEMA)
    _check_columns(frames_path, frames_file.schema_arrow, FRAMES_SCHEMA)
    meta = _parse_metadata(samples_path, samples_file.schema_arrow)
    frames_meta = _parse_metadata(frames_path, frames_file.schema_arrow)
    for key in REQUIRED_METADATA:
        if meta[key] != frames_meta[key]:
            raise NMNISTFramesError(
                f"{frames_path} has {key} = {frames_meta[key]!r} but {samples_path} has {meta[key]!r}: "
                "they come from different preprocessing runs"
            )
    return frames_file, samples_file, meta


def _read_samples(samples_file: pq.ParquetFile, samples_path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The samples table: labels int64, n_frames int64, sources; its 'sample' column must be 0..n-1."""
    with _parquet_errors(samples_path):
        samples = samples_file.read(columns=["sample", "label", "n_frames", "source"])
    sample_ids = samples.column("sample").to_numpy()
    n = len(sample_ids)
    if not np.array_equal(sample_ids, np.arange(n)):
        raise NMNISTFramesError(f"{samples_path}: column 'sample' must be 0..{n - 1} in order")
    labels = samples.column("label").to_numpy().astype(np.int64)
    n_frames = samples.column("n_frames").to_numpy().astype(np.int64)
    return labels, n_frames, samples.column("source").to_pylist()


def _read_cells(frames_file: pq.ParquetFile, frames_path: Path, samples_path: Path, n_frames: np.ndarray):
    """Every row group packed and checked by :func:`_pack_cells`; (cells int32, counts int16, offsets int64 [n + 1])."""
    total = frames_file.metadata.num_rows
    n = n_frames.size
    cells = np.empty(total, np.int32)
    counts = np.empty(total, np.int16)
    per_sample = np.zeros(n, np.int64)
    pos, previous = 0, -1
    for group in range(frames_file.num_row_groups):
        with _parquet_errors(frames_path):
            table = frames_file.read_row_group(group, columns=_CELL_COLUMNS)
            arrays = [table.column(c).to_numpy() for c in _CELL_COLUMNS]
        rows = len(arrays[0])
        if pos + rows > total:
            raise NMNISTFramesError(f"{frames_path}: row groups hold more rows than the footer's {total}")
        status, bad = _pack_cells(*arrays, n_frames, previous, cells, counts, per_sample, pos)
        if status != _PACKED:
            raise _row_error(status, frames_path, samples_path, pos + bad, [int(a[bad]) for a in arrays], n_frames)
        pos += rows
        if rows:
            previous = int(arrays[0][-1])
    if pos != total:
        raise NMNISTFramesError(f"{frames_path}: read {pos} rows, the footer says {total}")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(per_sample, out=offsets[1:])
    return cells, counts, offsets


def _row_error(
    status: int, frames_path: Path, samples_path: Path, row: int, values: list[int], n_frames
) -> NMNISTFramesError:
    """The error for the bad ``row`` that :func:`_pack_cells` found (``values``: its sample, frame, polarity, y, x,
    count)."""
    if status == _UNSORTED_ROWS:
        return NMNISTFramesError(f"{frames_path}: rows are not sorted by 'sample' (row {row})")
    sample, frame, polarity, y, x, count = values
    if status == _SAMPLE_OUTSIDE:
        return NMNISTFramesError(
            f"{frames_path}: row {row} has sample {sample}, outside 0..{n_frames.size - 1} of {samples_path}"
        )
    return NMNISTFramesError(
        f"{frames_path}: row {row} (sample {sample}, frame {frame}, polarity {polarity}, y {y}, x {x}, "
        f"count {count}) lies outside the sample's {n_frames[sample]} frames or the {NMNIST_SENSOR_SIZE} "
        "sensor, or its count is outside 1..32767"
    )


def _select(idx: np.ndarray, cells: np.ndarray, counts: np.ndarray, offsets: np.ndarray):
    """The cells of the samples ``idx`` (in that order), renumbered 0..k-1; (cells, counts, offsets)."""
    starts, lengths = offsets[idx], offsets[idx + 1] - offsets[idx]
    new_offsets = np.zeros(idx.size + 1, np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    new_cells = np.empty(int(new_offsets[-1]), np.int32)
    new_counts = np.empty(int(new_offsets[-1]), np.int16)
    for lo in range(0, idx.size, _SELECT_STEP):  # bounded temporaries
        hi = min(lo + _SELECT_STEP, idx.size)
        a, z = new_offsets[lo], new_offsets[hi]
        src = np.repeat(starts[lo:hi] - new_offsets[lo:hi], lengths[lo:hi]) + np.arange(a, z)
        new_cells[a:z] = cells[src]
        new_counts[a:z] = counts[src]
    return new_cells, new_counts, new_offsets
