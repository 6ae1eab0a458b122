"""CIFAR-10 in torchvision's own layout (``<root>/cifar-10-batches-py``): md5-verified download, batch loader.

The download uses torchvision's metadata (``CIFAR10.url``/``tgz_md5``/``train_list``/``test_list``/``meta``):
files already there are md5-verified and kept as they are; only missing ones are extracted.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np

from spikebench.atomic import atomic_output, write_bytes
from spikebench.data.catalog import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_IMAGE_SHAPE,
    CIFAR10_META,
    CIFAR10_ROW_BYTES,
    NUM_CLASSES,
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

    Each member goes to a temporary name, is md5-checked and then renamed.
    """
    import tarfile

    from spikebench.data.manifest import md5sum
    from spikebench.data.mnist import DataIntegrityError

    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as archive:
        for name in names:
            member = archive.getmember(f"{folder.name}/{name}")
            if not member.isfile():
                raise DataIntegrityError(f"{tarball}: {member.name} is not a regular file")
            with atomic_output(folder / name) as tmp:
                with archive.extractfile(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if (found := md5sum(tmp)) != md5s[name]:
                    raise DataIntegrityError(f"{tarball}: {member.name} has md5 {found}, expected {md5s[name]}")


def download_cifar10(root: Path) -> list[dict]:
    """Verify the CIFAR-10 files under ``root/cifar-10-batches-py`` and fetch only the missing ones.

    Every batch and ``batches.meta`` there must have torchvision's md5; a file that does not is named
    in the :class:`DataIntegrityError` raised before anything is fetched, and left as it is. Missing
    files are extracted from the tarball ``root/cifar-10-python.tar.gz`` (md5-verified; downloaded
    to a temporary name and renamed if it is not there), each to a temporary name then renamed.
    Nothing existing is ever moved, rewritten or deleted. Returns the manifest records.
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


class UnsafePickleError(DataIntegrityError):
    """A CIFAR-10 pickle that asks for a global a CIFAR batch never holds (it could run code when loaded)."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, restricted to latin1."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin1 is admitted)")
    return text.encode("latin1")


def _admitted_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 pickle may name: numpy's array reconstruction and latin1 bytes.

    The original batches (Python 2) name ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
    ``numpy.dtype``; pickles written by NumPy 2 name ``numpy._core.multiarray._reconstruct``, and protocol-2
    pickles of ``bytes`` written by Python 3 name ``_codecs.encode``. dicts, lists, str, bytes and ints need
    no global. Both module spellings resolve to NumPy's own function, without importing ``numpy.core``.
    """
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a CIFAR-10 batch holds (``_admitted_globals``), nothing callable else."""

    def __init__(self, handle, path: Path) -> None:
        super().__init__(handle, encoding="latin1")  # Python 2 pickles, as torchvision reads them
        self.path = path
        self.admitted = _admitted_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.admitted[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.path}: refused to load the global {module}.{name}: a CIFAR-10 batch holds only dicts, "
                "lists, strings, bytes, ints and numpy arrays, so this file is not one (it could run code when "
                "loaded). Delete it and download CIFAR-10 again, or make the demo data anew."
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"{self.path}: refused a persistent id; a CIFAR-10 batch holds none")


def _verify_md5(path: Path) -> None:
    """Raise ``DataIntegrityError`` unless ``path`` has the md5 torchvision lists for that CIFAR-10 file."""
    from torchvision.datasets.utils import calculate_md5

    expected = _expected_md5().get(path.name)
    if expected is None:
        raise DataIntegrityError(f"{path}: not a CIFAR-10 file torchvision lists an md5 for")
    found = calculate_md5(str(path))
    if found != expected:
        raise DataIntegrityError(
            f"{path}: md5 {found} does not match the expected {expected} (torchvision.datasets.CIFAR10 "
            f"train_list/test_list/meta), so it is not the original CIFAR-10 file and is not loaded. "
            f"Delete it and run the download again to fetch it anew; if this data root holds the demo's "
            f"stand-in, use it with data.source: demo."
        )


def _unpickle(path: Path, *, verify_md5: bool = True) -> dict[str, object]:
    """Load one CIFAR pickle, keys as ``str``: md5-verified first (``verify_md5``), then restricted unpickling.

    With ``verify_md5`` (the real dataset, ``data.source: download``) a file whose md5 is not torchvision's is
    an error and is never unpickled. Without it (the demo's stand-in, which matches no md5 by design) the file
    is still only read by ``_CifarUnpickler``, which refuses every global but numpy's array reconstruction:
    a tampered file cannot run code either way.
    """
    if not path.exists():
        raise FileNotFoundError(
            f"CIFAR-10 file missing: {path}. Run the download rule (spikebench.data.cifar10.download_cifar10) "
            "or make the demo data first."
        )
    if verify_md5:
        _verify_md5(path)
    try:
        with open(path, "rb") as handle:
            entry = _CifarUnpickler(handle, path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataIntegrityError(f"{path}: not a readable CIFAR-10 pickle ({error})") from error
    if not isinstance(entry, dict):
        raise DataIntegrityError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}


def load_cifar10(root: Path, split: str, *, verify_md5: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 split: images uint8 [N, 3, 32, 32] (R, G, B planes) and labels int64 [N].

    ``verify_md5``: check each batch against torchvision's md5 before reading it (the real dataset); pass
    False for the demo's stand-in (``data.source: demo``), which is then read by the restricted unpickler only.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; expected one of {SPLITS}")
    folder = cifar10_folder(root)
    images, labels = [], []
    for name in TRAIN_BATCHES if split == "train" else TEST_BATCHES:
        path = folder / name
        entry = _unpickle(path, verify_md5=verify_md5)
        if "data" not in entry or "labels" not in entry:
            raise DataIntegrityError(f"{path}: expected keys 'data' and 'labels', found {sorted(entry)}")
        data = np.asarray(entry["data"])
        batch_labels = np.asarray(entry["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_ROW_BYTES:
            raise DataIntegrityError(f"{path}: expected data uint8 [N, 3072], got {data.dtype} {data.shape}")
        if batch_labels.shape != (len(data),):
            raise DataIntegrityError(f"{path}: {batch_labels.shape} labels for {len(data)} images")
        if batch_labels.size and (batch_labels.min() < 0 or batch_labels.max() > _MAX_LABEL):
            raise DataIntegrityError(f"{path}: labels outside 0..{_MAX_LABEL}")
        images.append(data.reshape(-1, *CIFAR10_IMAGE_SHAPE))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def label_names(root: Path, *, verify_md5: bool = True) -> list[str]:
    """The class names stored in ``batches.meta`` (airplane ... truck); ``verify_md5`` as in ``load_cifar10``."""
    path = cifar10_folder(root) / META_FILE
    entry = _unpickle(path, verify_md5=verify_md5)
    if "label_names" not in entry:
        raise DataIntegrityError(f"{path}: expected key 'label_names', found {sorted(entry)}")
    return [name.decode() if isinstance(name, bytes) else str(name) for name in entry["label_names"]]


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
