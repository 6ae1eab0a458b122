"""MNIST in torchvision's own layout (``<root>/MNIST/raw``): md5-verified download, one-read IDX loader.

The download reuses torchvision's machinery (``MNIST.mirrors``/``MNIST.resources``,
``download_and_extract_archive``, ``check_integrity``), so a root that already holds a torchvision
download is used as it is and nothing is fetched again.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

#: split -> (images file, labels file), torchvision's uncompressed names (the ``.gz`` adds the suffix).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: IDX magic numbers: 0x0803 (unsigned byte, 3 dimensions) and 0x0801 (unsigned byte, 1 dimension).
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

#: Name of the marker file that ``spikebench.data.demo`` writes next to demo data.
DEMO_MARKER = "DEMO_DATA.txt"


class DataIntegrityError(ValueError):
    """A dataset file is corrupt, truncated or not what the loader expects."""


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def mnist_raw_folder(root: Path) -> Path:
    """The folder torchvision keeps the MNIST files in: ``root/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def _check_split(split: str) -> None:
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(MNIST_FILES)}")


def _resource_md5() -> dict[str, str]:
    from torchvision.datasets import MNIST

    return dict(MNIST.resources)


def _verified_gz_or_error(gz: Path, md5: str) -> None:
    """Raise a clear error when an existing ``.gz`` does not have torchvision's md5."""
    from torchvision.datasets.utils import calculate_md5, check_integrity

    if check_integrity(str(gz), md5):
        return
    found = calculate_md5(str(gz))
    raise DataIntegrityError(
        f"{gz}: md5 {found} does not match the expected {md5} (torchvision.datasets.MNIST.resources); "
        f"the file is corrupt or partially downloaded ({gz.stat().st_size} bytes). "
        f"Delete it and rerun the download to fetch it again."
    )


def _fetch_and_extract(raw: Path, gz_name: str, md5: str, out: Path) -> None:
    """Download ``gz_name`` (unless present and verified) and extract it atomically to ``out``."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_and_extract_archive

    gz = raw / gz_name
    existed = gz.exists()
    errors: list[str] = []
    for mirror in MNIST.mirrors:
        tmp_dir = Path(tempfile.mkdtemp(dir=raw, prefix=".extract-"))
        try:
            # Verifies the md5 of an existing .gz and fetches nothing when it matches.
            download_and_extract_archive(
                f"{mirror}{gz_name}", download_root=str(raw), extract_root=str(tmp_dir), filename=gz_name, md5=md5
            )
            os.replace(tmp_dir / out.name, out)
            return
        except Exception as error:  # noqa: BLE001 - every mirror failure is reported together below
            errors.append(f"{mirror}{gz_name}: {type(error).__name__}: {error}")
            if not existed:
                gz.unlink(missing_ok=True)  # never leave a partial download behind
            else:
                raise
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    raise RuntimeError(f"could not download {gz_name} into {raw} from any mirror:\n  " + "\n  ".join(errors))


def download_mnist(root: Path, splits: Iterable[str] = ("train", "test")) -> list[Path]:
    """Make sure the uncompressed MNIST files of ``splits`` exist under ``root/MNIST/raw``.

    Uncompressed files already there are used as they are; a ``.gz`` already there is md5-verified
    and only extracted; anything missing is downloaded (md5-verified) from torchvision's mirrors.
    Returns the uncompressed paths (images, labels for each split).
    """
    root = Path(root)
    marker = root / "MNIST" / DEMO_MARKER
    if marker.exists():
        raise DataIntegrityError(
            f"{root / 'MNIST'} holds demo data made by spikebench.data.demo (see {marker}), not the real MNIST; "
            "use another data root for the download or delete that folder."
        )
    raw = mnist_raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    md5s = _resource_md5()
    outputs: list[Path] = []
    for split in splits:
        _check_split(split)
        for name in MNIST_FILES[split]:
            out = raw / name
            outputs.append(out)
            if out.exists():
                continue
            gz_name = f"{name}.gz"
            if (raw / gz_name).exists():
                _verified_gz_or_error(raw / gz_name, md5s[gz_name])
            _fetch_and_extract(raw, gz_name, md5s[gz_name], out)
    return outputs


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or uncompressed) of unsigned bytes in one read.

    Accepts MNIST's images (magic 2051, [N, rows, cols]) and labels (magic 2049, [N]).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (zlib.error, EOFError, OSError) as error:   # gzip.BadGzipFile is an OSError
        what = "cannot decompress" if path.suffix == ".gz" else "cannot read"
        raise DataIntegrityError(
            f"{path}: {what} it ({type(error).__name__}: {error}); the file is corrupt or truncated. "
            "Delete it and run the download again to fetch it anew (its md5 is checked then)."
        ) from error
    if len(data) < 8:
        raise DataIntegrityError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise DataIntegrityError(
            f"{path}: IDX magic {magic} is neither {IDX_IMAGES_MAGIC} (images) nor {IDX_LABELS_MAGIC} (labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataIntegrityError(f"{path}: {len(data)} bytes is too short for an IDX header of {ndim} dimensions")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataIntegrityError(
            f"{path}: {len(data)} bytes, but the IDX header (shape {shape}) implies {expected} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array (1 or 3 dimensions) as an uncompressed IDX file, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"{path}: IDX writer expects uint8 with 1 or 3 dimensions, got {array.dtype} {array.shape}")
    magic = IDX_LABELS_MAGIC if array.ndim == 1 else IDX_IMAGES_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(header + np.ascontiguousarray(array).tobytes())


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def load_mnist(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split: images uint8 [N, 28, 28] and labels int64 [N].

    Reads the uncompressed files under ``root/MNIST/raw`` (or their ``.gz``, if only those exist).
    """
    _check_split(split)
    raw = mnist_raw_folder(root)
    names = MNIST_FILES[split]
    found = [_find(raw, name) for name in names]
    missing = [raw / name for name, path in zip(names, found) if path is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST {split} files missing: {', '.join(map(str, missing))}. "
            "Run the download rule (spikebench.data.mnist.download_mnist) or make the demo data first."
        )
    images = read_idx(found[0])
    labels = read_idx(found[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataIntegrityError(f"{found[0]}: expected images [N, 28, 28], got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataIntegrityError(
            f"{found[1]}: {labels.shape} labels do not match the {len(images)} images in {found[0]}"
        )
    if labels.size and labels.max() > 9:
        raise DataIntegrityError(f"{found[1]}: label {int(labels.max())} is outside 0..9")
    return images, labels.astype(np.int64)
