"""The Parquet schemas of the preprocessed N-MNIST files (one frames and one samples table per split)."""

from __future__ import annotations

import pyarrow as pa

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
            "n_events",
            pa.int32(),
            nullable=False,
            metadata={"description": "events in the file before denoising (overflow markers excluded)"},
        ),
        pa.field(
            "n_events_denoised",
            pa.int32(),
            nullable=False,
            metadata={"description": "events kept by Denoise (before ToFrame drops the incomplete tail)"},
        ),
        pa.field("source", pa.string(), nullable=False, metadata={"description": "path relative to the NMNIST folder"}),
    ]
)
#: the transform parameters every frames/samples file carries in its key-value metadata
REQUIRED_METADATA = ("denoise_filter_us", "time_window_us", "sensor_size", "split")
