"""MNIST in torchvision's own layout (``<root>/MNIST/raw``): verified download, one-read IDX loader.

The download uses torchvision's metadata (``MNIST.mirrors``/``MNIST.resources``): a root that already
holds a torchvision download is verified and used as it is, and only missing files are fetched.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from spikebench.atomic import write_bytes
from spikebench.data.catalog import MNIST_COUNTS, MNIST_FILES, MNIST_IMAGE_SHAPE, MNIST_RAW, NUM_CLASSES

# MNIST_FILES: split -> (images file, labels file), torchvision's uncompressed names (the ``.gz`` adds
# the suffix); MNIST_COUNTS: images (= labels) per split in the real files (both in the catalog).
_MAX_LABEL = NUM_CLASSES["mnist"] - 1

#: IDX magic numbers: 0x0803 (unsigned byte, 3 dimensions) and 0x0801 (unsigned byte, 1 dimension).
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

#: Name of the marker file that ``spikebench.data.demo`` writes next to demo data.
DEMO_MARKER = "DEMO_DATA.txt"


class DataIntegrityError(ValueError):
    """A dataset file is corrupt, truncated or not what the loader expects."""


def mnist_raw_folder(root: Path) -> Path:
    """The folder torchvision keeps the MNIST files in: ``root/MNIST/raw``."""
    return Path(root) / MNIST_RAW


def _check_split(split: str) -> None:
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(MNIST_FILES)}")


def _resource_md5() -> dict[str, str]:
    from torchvision.datasets import MNIST

    return dict(MNIST.resources)


def _check_uncompressed(path: Path, split: str, gz: Path | None) -> str | None:
    """Why an uncompressed MNIST file is not the real one (None if it is).

    torchvision publishes md5s for the ``.gz`` files only: the uncompressed file must have MNIST's
    IDX header, shape and size (labels 0..9), and equal the decompressed ``.gz`` when that is there.
    """
    try:
        array = read_idx(path)
    except DataIntegrityError as error:
        return str(error)
    n = MNIST_COUNTS[split]
    is_images = path.name == MNIST_FILES[split][0]
    expected = (n, *MNIST_IMAGE_SHAPE) if is_images else (n,)
    if array.shape != expected:
        return f"{path}: shape {array.shape}, expected MNIST's {expected}"
    if not is_images and array.size and int(array.max()) > _MAX_LABEL:
        return f"{path}: label {int(array.max())} is outside 0..{_MAX_LABEL}"
    if gz is not None:
        from spikebench.data.manifest import md5sum

        content = hashlib.md5(gzip.decompress(gz.read_bytes())).hexdigest()
        if md5sum(path) != content:
            return f"{path}: differs from the decompressed {gz.name} (md5 {content})"
    return None


def _mnist_problems(raw: Path, names: list[tuple[str, str]], md5s: dict[str, str]) -> list[str]:
    """Every existing MNIST file (``.gz`` and uncompressed) that fails its check, described."""
    from spikebench.data.manifest import md5sum

    problems = []
    for split, name in names:
        gz = raw / f"{name}.gz"
        gz_ok = gz.exists()
        if gz_ok and (found := md5sum(gz)) != md5s[gz.name]:
            problems.append(f"{gz}: md5 {found}, expected {md5s[gz.name]} (torchvision.datasets.MNIST.resources)")
            gz_ok = False
        if (raw / name).exists():
            problem = _check_uncompressed(raw / name, split, gz if gz_ok else None)
            problems += [problem] if problem else []
    return problems


def _fetch_gz(raw: Path, gz_name: str, md5: str) -> None:
    """Download ``gz_name`` from the first torchvision mirror that serves it (temp name, md5, rename)."""
    from torchvision.datasets import MNIST

    from spikebench.data import fetch

    errors: list[str] = []
    for mirror in MNIST.mirrors:
        try:
            fetch.fetch_url(f"{mirror}{gz_name}", raw / gz_name, md5)
            return
        except Exception as error:  # noqa: BLE001 - every mirror failure is reported together below
            errors.append(f"{mirror}{gz_name}: {type(error).__name__}: {error}")
    raise RuntimeError(f"could not download {gz_name} into {raw} from any mirror:\n  " + "\n  ".join(errors))


def download_mnist(root: Path, splits: Iterable[str] = ("train", "test")) -> list[dict]:
    """Verify the MNIST files of ``splits`` under ``root/MNIST/raw``, fetch only what is missing.

    Each ``.gz`` there must have torchvision's md5; each uncompressed file must be MNIST's (see
    ``_check_uncompressed``). A file that fails is named in the :class:`DataIntegrityError` raised
    before anything is fetched, and left as it is. For a missing uncompressed file the ``.gz`` is
    downloaded if it is not there (torchvision's mirrors, md5-verified) and extracted, each in a partial
    folder (``spikebench.data.fetch``) and then moved into place; stale partial folders of interrupted runs
    in ``MNIST/raw`` are removed first (logged). Nothing else existing is ever moved, rewritten or deleted.
    Returns the manifest records (``spikebench.data.manifest.file_record``) of the files now there.
    """
    from spikebench.data import fetch
    from spikebench.data.manifest import damaged_message, file_record

    root = Path(root)
    marker = root / "MNIST" / DEMO_MARKER
    if marker.exists():
        raise DataIntegrityError(
            f"{root / 'MNIST'} holds demo data made by spikebench.data.demo (see {marker}), not the real MNIST; "
            "use another data root for the download."
        )
    md5s = _resource_md5()
    for split in splits:
        _check_split(split)
    names = [(split, name) for split in splits for name in MNIST_FILES[split]]
    raw = mnist_raw_folder(root)
    fetch.remove_stale_partials(raw)
    problems = _mnist_problems(raw, names, md5s) if raw.is_dir() else []
    if problems:
        raise DataIntegrityError(damaged_message("MNIST", problems))
    for split, name in names:
        if (raw / name).exists():
            continue
        gz = raw / f"{name}.gz"
        if not gz.exists():
            raw.mkdir(parents=True, exist_ok=True)
            _fetch_gz(raw, gz.name, md5s[gz.name])
        fetch.write_new(gzip.decompress(gz.read_bytes()), raw / name)
        problem = _check_uncompressed(raw / name, split, None)
        if problem:  # the verified .gz holds something else: report, keep both files
            raise DataIntegrityError(damaged_message("MNIST", [problem], f"delete {raw / name} and {gz}, and rerun"))
    records = []
    for _, name in names:
        for path, expected in ((raw / f"{name}.gz", md5s[f"{name}.gz"]), (raw / name, None)):
            if path.exists():
                records.append(file_record(path, root, expected))
    return records


#: The most bytes a ``.gz`` IDX file may claim (MNIST's largest file holds 47 MB): a bigger claim is refused unread.
MAX_IDX_BYTES = 1 << 30
_READ_STEP = 1 << 24


def _idx_header(path: Path, head: bytes) -> tuple[int, tuple[int, ...]]:
    """(header length, shape) of the IDX header at the start of ``head``, checked; dimensions as Python ints."""
    if len(head) < 4:
        raise DataIntegrityError(f"{path}: {len(head)} bytes is too short for an IDX header (expected 4 + 4 * ndim)")
    magic = int.from_bytes(head[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise DataIntegrityError(
            f"{path}: IDX magic {magic} is neither {IDX_IMAGES_MAGIC} (images) nor {IDX_LABELS_MAGIC} (labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(head) < header:
        raise DataIntegrityError(f"{path}: {len(head)} bytes is too short for an IDX header of {ndim} dimensions")
    return header, tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def _size_error(path: Path, shape: tuple[int, ...], header: int, expected: int, found: str) -> DataIntegrityError:
    return DataIntegrityError(
        f"{path}: the IDX header (shape {shape}, unsigned bytes) implies {expected} bytes after its {header}-byte "
        f"header, but the file holds {found}; it is corrupt or truncated. Delete it and run the download again "
        "to fetch it anew (its md5 is checked then)."
    )


def _read_gz(path: Path) -> bytes:
    """The decompressed bytes of an IDX ``.gz``: the header first, then exactly the payload it implies (bounded)."""
    with gzip.open(path, "rb") as handle:
        head = handle.read(4)
        head += handle.read(4 * (int.from_bytes(head[:4], "big") & 0xFF)) if len(head) == 4 else b""
        header, shape = _idx_header(path, head)
        expected = math.prod(shape)
        if expected > MAX_IDX_BYTES:
            raise _size_error(path, shape, header, expected, f"at most {MAX_IDX_BYTES} (more than any MNIST file)")
        parts, size = [head], 0
        while size <= expected and (block := handle.read(min(_READ_STEP, expected + 1 - size))):
            parts.append(block)
            size += len(block)
    if size != expected:
        raise _size_error(path, shape, header, expected, f"{'more' if size > expected else size} decompressed")
    return b"".join(parts)


def _read_plain(path: Path) -> bytes:
    """The bytes of an uncompressed IDX file, its size checked against the header before it is read whole."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        head += handle.read(4 * (int.from_bytes(head[:4], "big") & 0xFF)) if len(head) == 4 else b""
        header, shape = _idx_header(path, head)
        expected, found = math.prod(shape), os.fstat(handle.fileno()).st_size - header
        if found != expected:
            raise _size_error(path, shape, header, expected, str(found))
        data = head + handle.read(expected + 1)
    if len(data) != header + expected:  # it changed while read
        raise _size_error(path, shape, header, expected, str(len(data) - header))
    return data


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or uncompressed) of unsigned bytes.

    Accepts MNIST's images (magic 2051, [N, rows, cols]) and labels (magic 2049, [N]). The header's dimensions
    are checked as Python ints before any arithmetic: their product must equal the bytes after the header (a
    ``.gz`` is decompressed only that far, and may claim at most ``MAX_IDX_BYTES``); every mismatch is a
    :class:`DataIntegrityError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        data = _read_gz(path) if path.suffix == ".gz" else _read_plain(path)
    except (zlib.error, EOFError, OSError) as error:  # gzip.BadGzipFile is an OSError
        what = "cannot decompress" if path.suffix == ".gz" else "cannot read"
        raise DataIntegrityError(
            f"{path}: {what} it ({type(error).__name__}: {error}); the file is corrupt or truncated. "
            "Delete it and run the download again to fetch it anew (its md5 is checked then)."
        ) from error
    header, shape = _idx_header(path, data)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array (1 or 3 dimensions) as an uncompressed IDX file, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"{path}: IDX writer expects uint8 with 1 or 3 dimensions, got {array.dtype} {array.shape}")
    write_bytes(idx_bytes(array), path)


def idx_bytes(array: np.ndarray) -> bytes:
    """The bytes of a uint8 array (1 or 3 dimensions) as an uncompressed IDX file."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(f"IDX writer expects uint8 with 1 or 3 dimensions, got {array.dtype} {array.shape}")
    magic = IDX_LABELS_MAGIC if array.ndim == 1 else IDX_IMAGES_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


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
    if images.ndim != 3 or images.shape[1:] != MNIST_IMAGE_SHAPE:
        raise DataIntegrityError(f"{found[0]}: expected images [N, 28, 28], got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataIntegrityError(
            f"{found[1]}: {labels.shape} labels do not match the {len(images)} images in {found[0]}"
        )
    if labels.size and labels.max() > _MAX_LABEL:
        raise DataIntegrityError(f"{found[1]}: label {int(labels.max())} is outside 0..{_MAX_LABEL}")
    return images, labels.astype(np.int64)
