"""The errors of the N-MNIST reader, store and download (each message names the file)."""

from __future__ import annotations


class NMNISTRecordingError(ValueError):
    """An N-MNIST recording file is truncated, empty or has impossible coordinates."""


class NMNISTFramesError(ValueError):
    """A preprocessed N-MNIST Parquet file lacks a column or metadata, or is inconsistent."""


class NMNISTDownloadError(RuntimeError):
    """The N-MNIST archive could not be fetched, verified or extracted."""
