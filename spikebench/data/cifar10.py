"""CIFAR-10 in torchvision's own layout (``<root>/cifar-10-batches-py``): md5-verified download, batch loader.

The download uses torchvision's metadata (``CIFAR10.url``/``tgz_md5``/``train_list``/``test_list``/``meta``):
files already there are md5-verified and kept as they are; only missing ones are extracted.

The loader never unpickles: :mod:`spikebench.data.cifar_pickle` reads the few pickle opcodes CIFAR-10's files use
into plain values and admits only their exact structure, after the file's md5 was checked (torchvision's, or the
data manifest's for the demo's stand-in).
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spikebench.atomic import write_bytes
from spikebench.data.catalog import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_IMAGE_SHAPE,
    CIFAR10_META,
    CIFAR10_ROW_BYTES,
    NUM_CLASSES,
)
from spikebench.data.cifar_pickle import (  # noqa: F401 - CifarFormatError, UnsafePickleError: this module's errors
    MAX_PICKLE_BYTES,
    REMEDY,
    CifarFormatError,
    UnsafePickleError,
    check_batch,
    check_meta,
    parse,
)
from spikebench.data.mnist import DEMO_MARKER, DataIntegrityError

SPLITS = ("train", "test")
TRAIN_BATCHES = CIFAR10_FILES["train"]  # data_batch_1 .. data_batch_5
TEST_BATCHES = CIFAR10_FILES["test"]
META_FILE = CIFAR10_META
_MAX_LABEL = NUM_CLASSES["cifar10"] - 1


def cifar10_folder(root: Path) -> Path:
    """The folder torchvision extracts CIFAR-10 to: ``root/cifar-10-batches-py``."""
    return Path(root) / CIFAR10_FOLDER


def _expected_md5() -> dict[str, str]:
    """File name -> md5 of every file torchvision checks (five training batches, test batch, meta)."""
    from torchvision.datasets import CIFAR10

    md5s = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    md5s[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return md5s


def _damaged(folder: Path, md5s: dict[str, str]) -> list[str]:
    """Describe every file in ``folder`` that is there but whose md5 differs from ``md5s`` (missing ones are fine)."""
    from spikebench.data.manifest import md5sum

    bad = []
    for name, md5 in md5s.items():
        path = folder / name
        if path.exists() and (found := md5sum(path)) != md5:
            bad.append(f"{path}: md5 {found}, expected {md5} (torchvision.datasets.CIFAR10)")
    return bad


def _extract_missing(tarball: Path, folder: Path, names: list[str], md5s: dict[str, str]) -> None:
    """Extract the members ``names`` of the verified tarball into ``folder``.

    Each member goes to a partial folder in ``folder`` (``spikebench.data.fetch.partial_folder``), is
    md5-checked and then moved into place.
    """
    import gzip
    import tarfile
    import zlib

    from spikebench.atomic import write_error
    from spikebench.data import fetch
    from spikebench.data.manifest import md5sum

    with fetch.partial_folder(folder, "extract") as stage, tarfile.open(tarball, "r:gz") as archive:
        for name in names:
            member = archive.getmember(f"{folder.name}/{name}")
            if not member.isfile():
                raise DataIntegrityError(f"{tarball}: {member.name} is not a regular file")
            try:
                with archive.extractfile(member) as src, open(stage / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise DataIntegrityError(f"{tarball}: cannot read {member.name} ({type(exc).__name__}: {exc})") from exc
            except OSError as exc:  # writing it: a full disk, ...
                raise write_error(folder / name, exc) from exc
            if (found := md5sum(stage / name)) != md5s[name]:
                raise DataIntegrityError(f"{tarball}: {member.name} has md5 {found}, expected {md5s[name]}")
            fetch.place(stage / name, folder / name)


def download_cifar10(root: Path) -> list[dict]:
    """Verify the CIFAR-10 files under ``root/cifar-10-batches-py`` and fetch only the missing ones.

    Every batch and ``batches.meta`` there must have torchvision's md5; a file that does not is named
    in the :class:`DataIntegrityError` raised before anything is fetched, and left as it is. Missing
    files are extracted from the tarball ``root/cifar-10-python.tar.gz`` (md5-verified; downloaded if it is
    not there), each in a partial folder (``spikebench.data.fetch``) and then moved into place; stale partial
    folders of interrupted runs in ``root`` and the CIFAR-10 folder are removed first (logged). Nothing else
    existing is ever moved, rewritten or deleted. Returns the manifest records.
    """
    from torchvision.datasets import CIFAR10

    from spikebench.data import fetch
    from spikebench.data.manifest import damaged_message, file_record, md5sum

    root = Path(root)
    folder = cifar10_folder(root)
    md5s = _expected_md5()
    if (folder / DEMO_MARKER).exists():
        raise DataIntegrityError(
            f"{folder} holds demo data made by spikebench.data.demo (see {folder / DEMO_MARKER}), not the real "
            "CIFAR-10; use another data root for the download."
        )
    tarball = root / CIFAR10.filename
    for partials in (root, folder):  # where the tarball is downloaded, where its members are extracted
        fetch.remove_stale_partials(partials)
    problems = _damaged(folder, md5s)
    missing = [name for name in md5s if not (folder / name).exists()]
    if missing and tarball.exists() and (found := md5sum(tarball)) != CIFAR10.tgz_md5:
        problems.append(
            f"{tarball}: md5 {found}, expected {CIFAR10.tgz_md5} (torchvision.datasets.CIFAR10.tgz_md5), "
            f"{tarball.stat().st_size} bytes: corrupt or partially downloaded"
        )
    if problems:
        raise DataIntegrityError(damaged_message("CIFAR-10", problems))
    if missing:
        if not tarball.exists():
            fetch.fetch_url(CIFAR10.url, tarball, CIFAR10.tgz_md5)
        _extract_missing(tarball, folder, missing, md5s)
    records = [file_record(folder / name, root, md5) for name, md5 in md5s.items()]
    if tarball.exists():
        records.append(file_record(tarball, root, CIFAR10.tgz_md5))
    return records


def _read_file(path: Path, verify_md5: bool | Mapping[str, str]) -> bytes:
    """The bytes of one CIFAR-10 pickle, md5-checked first when ``verify_md5`` says so (read once, so the bytes
    checked are the bytes parsed)."""
    if not path.exists():
        raise FileNotFoundError(
            f"CIFAR-10 file missing: {path}. Run the download rule (spikebench.data.cifar10.download_cifar10) "
            "or make the demo data first."
        )
    if (size := path.stat().st_size) > MAX_PICKLE_BYTES:
        raise CifarFormatError(
            f"{path}: {size} bytes, more than any CIFAR-10 file ({MAX_PICKLE_BYTES}); not read. {REMEDY}"
        )
    data = path.read_bytes()
    if isinstance(verify_md5, Mapping):
        expected = verify_md5.get(f"{CIFAR10_FOLDER}/{path.name}", verify_md5.get(path.name))
        if expected is None:
            raise DataIntegrityError(
                f"{path}: the data manifest lists no md5 for it, so it is not loaded; rerun the demo (or download) "
                "rule to write the manifest anew."
            )
        source = "recorded in the data manifest, so it is not the file the demo (or download) rule checked"
        remedy = "Delete it and rerun the demo rule to make it again (or the download rule to fetch it)."
    elif verify_md5:
        expected = _expected_md5().get(path.name)
        if expected is None:
            raise DataIntegrityError(f"{path}: not a CIFAR-10 file torchvision lists an md5 for")
        source = "(torchvision.datasets.CIFAR10 train_list/test_list/meta), so it is not the original CIFAR-10 file"
        remedy = (
            "Delete it and run the download again to fetch it anew; if this data root holds the demo's "
            "stand-in, use it with data.source: demo."
        )
    else:
        return data
    if (found := hashlib.md5(data).hexdigest()) != expected:
        raise DataIntegrityError(
            f"{path}: md5 {found} does not match the expected {expected} {source} and is not loaded. {remedy}"
        )
    return data


def _read_pickle(path: Path, verify_md5: bool | Mapping[str, str], kind: str) -> dict[str, object]:
    """One CIFAR-10 pickle (``kind`` batch or meta) as a dict: md5 checked first, then read by
    :func:`spikebench.data.cifar_pickle.parse` only (never unpickled)."""
    return parse(path, _read_file(path, verify_md5), kind)


def load_cifar10(
    root: Path, split: str, *, verify_md5: bool | Mapping[str, str] = True
) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 split: images uint8 [N, 3, 32, 32] (R, G, B planes) and labels int64 [N].

    ``verify_md5``: True checks each file against torchvision's md5 before reading it (the real dataset); a
    mapping checks it against the md5 listed there for ``cifar-10-batches-py/<name>`` (the data manifest's
    ``expected_md5``, :func:`spikebench.data.manifest.expected_md5s`: the demo's stand-in); False reads unchecked.
    Either way a file is read only by :mod:`spikebench.data.cifar_pickle`, and anything but CIFAR-10's exact
    structure is a :class:`CifarFormatError` naming the file.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; expected one of {SPLITS}")
    folder = cifar10_folder(root)
    images, labels = [], []
    for name in TRAIN_BATCHES if split == "train" else TEST_BATCHES:
        batch_images, batch_labels = check_batch(folder / name, _read_pickle(folder / name, verify_md5, "batch"))
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def label_names(root: Path, *, verify_md5: bool | Mapping[str, str] = True) -> list[str]:
    """The class names stored in ``batches.meta`` (airplane ... truck); ``verify_md5`` as in ``load_cifar10``."""
    path = cifar10_folder(root) / META_FILE
    return check_meta(path, _read_pickle(path, verify_md5, "meta"))


def write_cifar_batch(path: Path, data: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    """Write a batch in CIFAR-10's pickle format (keys batch_label, labels, data, filenames), atomically.

    ``data`` is uint8 [N, 3, 32, 32] or [N, 3072] (R, G, B planes); torchvision's CIFAR10 reads the result.
    """
    write_bytes(cifar_batch_bytes(data, labels, batch_label), path)


def cifar_batch_bytes(data: np.ndarray, labels: np.ndarray, batch_label: str) -> bytes:
    """The bytes ``write_cifar_batch`` writes (pickle protocol 2, deterministic for the same arrays)."""
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.shape[1:] not in (CIFAR10_IMAGE_SHAPE, (CIFAR10_ROW_BYTES,)):
        raise ValueError(
            f"{batch_label}: expected data uint8 [N, 3, 32, 32] or [N, 3072], got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),):
        raise ValueError(f"{batch_label}: {labels.shape} labels for {len(data)} images")
    entry = {
        "batch_label": batch_label,
        "labels": [int(label) for label in labels],
        "data": np.ascontiguousarray(data.reshape(len(data), CIFAR10_ROW_BYTES)),
        "filenames": [f"{batch_label.replace(' ', '_')}_{i:05d}.png" for i in range(len(data))],
    }
    return pickle.dumps(entry, protocol=2)


def write_cifar_meta(path: Path, names: list[str], num_cases_per_batch: int) -> None:
    """Write ``batches.meta`` in CIFAR-10's format (label_names, num_cases_per_batch, num_vis), atomically."""
    write_bytes(cifar_meta_bytes(names, num_cases_per_batch), path)


def cifar_meta_bytes(names: list[str], num_cases_per_batch: int) -> bytes:
    entry = {"num_cases_per_batch": int(num_cases_per_batch), "label_names": list(names), "num_vis": CIFAR10_ROW_BYTES}
    return pickle.dumps(entry, protocol=2)
