"""The Parquet store of preprocessed N-MNIST: one split's recordings -> a frames and a samples table.

:func:`preprocess_split` is rule preprocess_nmnist's job (scripts/preprocess_nmnist.py). Both files
are written through :func:`spikebench.atomic.atomic_output` (temporary names beside the outputs,
renamed only when both are complete); the frames file is streamed, one row group per chunk.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spikebench.atomic import atomic_output
from spikebench.data.catalog import NMNIST_SENSOR_SIZE
from spikebench.data.nmnist.batches import _check_batch, _computed_batches
from spikebench.data.nmnist.framing import _ST_COLUMNS, _ST_DENOISED, _ST_EVENTS, _ST_FRAMES, _check_params
from spikebench.data.nmnist.recordings import list_recordings
from spikebench.data.nmnist.schema import FRAMES_SCHEMA, SAMPLES_SCHEMA

_INT32_MAX = np.iinfo(np.int32).max


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


def _split_metadata(split: str, filter_time: int, time_window: int) -> dict[str, str]:
    return {
        "denoise_filter_us": str(filter_time),
        "time_window_us": str(time_window),
        "sensor_size": json.dumps(list(NMNIST_SENSOR_SIZE)),
        "split": split,
        "equivalent_to": (
            f"tonic.transforms.Compose([Denoise(filter_time={filter_time}), "
            f"ToFrame(sensor_size={NMNIST_SENSOR_SIZE}, time_window={time_window})]) on tonic.datasets.NMNIST"
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
    beside the outputs and renamed at the end (frames first). Returns n_samples, n_cells, n_events,
    n_events_denoised, threads and seconds.
    """
    start = time.perf_counter()
    say, warn = _loggers(log)
    filter_time, time_window = _check_params(denoise_filter_us, time_window_us)
    _check_preprocess_args(chunk_size, threads)
    recordings_dir = Path(recordings_dir)
    split = split or recordings_dir.name.lower()
    files, labels = list_recordings(recordings_dir)
    n = len(files)
    if n > _INT32_MAX:
        raise ValueError(f"{recordings_dir}: {n} recordings do not fit the int32 sample column")
    file_metadata = _split_metadata(split, filter_time, time_window)
    say(
        f"N-MNIST {split}: {n} recordings in {recordings_dir}; denoise {filter_time} us, frames of {time_window} us; "
        f"{threads} thread{'s' if threads > 1 else ''}"
    )

    def progress(done: int, n_cells: int) -> None:
        say(f"N-MNIST {split}: {done}/{n} recordings, {n_cells} cells, {time.perf_counter() - start:.1f} s")

    # samples outside, frames inside: the frames file is renamed first, the samples file once both are whole
    with atomic_output(samples_out) as samples_tmp, atomic_output(frames_out) as frames_tmp:
        frames_schema = FRAMES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_frames"})
        batches = _computed_batches(files, chunk_size, filter_time, time_window, threads)
        stats, n_cells = _write_frames(frames_tmp, frames_schema, batches, warn=warn, progress=progress)
        samples_schema = SAMPLES_SCHEMA.with_metadata({**file_metadata, "table": "nmnist_samples"})
        _write_samples(samples_tmp, samples_schema, stats, labels, files, recordings_dir)
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


def _write_frames(path: Path, schema: pa.Schema, batches, *, warn, progress) -> tuple[np.ndarray, int]:
    """Stream the computed batches into the frames Parquet at ``path``, one row group each; (stats, cells).

    ``stats`` is the per-recording table of the whole split (int64 [n, _ST_COLUMNS], in file order).
    """
    stats = []
    n_cells = 0
    with pq.ParquetWriter(path, schema, **_PARQUET_OPTIONS) as writer:
        for batch in batches:
            for message in _check_batch(batch):
                warn(message)
            stats.append(batch.stats)
            table = pa.Table.from_arrays([pa.array(c) for c in batch.columns], schema=schema)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            n_cells += table.num_rows
            progress(batch.first + len(batch.files), n_cells)
    return (np.concatenate(stats) if stats else np.zeros((0, _ST_COLUMNS), np.int64)), n_cells


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
