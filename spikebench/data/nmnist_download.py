"""N-MNIST in tonic's layout (``<root>/NMNIST/{Train,Test}/<digit>/<index>.bin``): verified, fetched only if missing.

An extracted split folder is checked by counting its recordings per class and reading an evenly
spaced sample of them with the real reader (:func:`spikebench.data.nmnist.read_recording`); the
zip archives (``NMNIST/train.zip``, ``test.zip``, tonic's names) are checked against tonic's md5s.
A missing split is extracted from its archive (downloaded from tonic's URL first if it is not
there) into a partial folder (``spikebench.data.fetch.partial_folder``) that is renamed into place once
complete; stale partial folders of interrupted runs in ``NMNIST`` are removed first (logged). Nothing else
existing is ever moved, rewritten or deleted.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from spikebench.data import fetch
from spikebench.data.catalog import NMNIST_RECORDINGS, NUM_CLASSES
from spikebench.data.manifest import damaged_message, file_record
from spikebench.data.mnist import DEMO_MARKER, DataIntegrityError
from spikebench.data.nmnist.errors import NMNISTDownloadError, NMNISTRecordingError
from spikebench.data.nmnist.recordings import nmnist_split_folder, read_recording

#: Recordings read per split to check that the folder holds readable N-MNIST files.
SAMPLE_SIZE = 20
#: Recordings per split in the real N-MNIST (one per MNIST digit; the catalog's NMNIST_RECORDINGS).
OFFICIAL_RECORDINGS = NMNIST_RECORDINGS


def _archive(split: str) -> tuple[str, str, str, str]:
    """tonic's (file name, md5, URL, folder inside the archive) of one split's zip."""
    import tonic

    cls = tonic.datasets.NMNIST
    if split == "train":
        return cls.train_filename, cls.train_md5, cls.train_url, cls.train_folder
    return cls.test_filename, cls.test_md5, cls.test_url, cls.test_folder


def check_split_folder(folder: Path, root: Path) -> tuple[dict, list[str]]:
    """(the manifest entry of an extracted split folder, the problems found in it).

    The entry holds the recordings per class and, for the sample read, each file's size, md5 and
    number of events.
    """
    files = sorted(folder.glob("*/*.bin"), key=lambda f: (f.parent.name, f.name))
    counts = {str(d): sum(1 for f in files if f.parent.name == str(d)) for d in range(NUM_CLASSES["nmnist"])}
    problems = [
        f"{folder}: folder '{name}' is not a digit 0..9"
        for name in sorted({f.parent.name for f in files})
        if name not in counts
    ]
    if not files:
        problems.append(f"{folder}: exists but holds no <digit>/*.bin recordings")
    sample = []
    for i in sorted({int(i) for i in np.linspace(0, len(files) - 1, min(len(files), SAMPLE_SIZE))}):
        try:
            n_events = len(read_recording(files[i]))
        except NMNISTRecordingError as error:
            problems.append(str(error))
            continue
        sample.append({**file_record(files[i], root), "n_events": n_events})
    entry = {
        "folder": folder.relative_to(root).as_posix(),
        "recordings_per_class": counts,
        "n_recordings": len(files),
        "n_recordings_official": OFFICIAL_RECORDINGS[folder.name.lower()],
        "sample": sample,
    }
    return entry, problems


def _extract_split(archive: Path, inner: str, folder: Path) -> None:
    """Extract ``inner/`` of the verified zip into a partial folder beside ``folder``, then rename it there."""
    with fetch.partial_folder(folder.parent, f"extract-{folder.name}") as staging, zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise NMNISTDownloadError(f"{archive}: member {member.filename!r} points outside the archive")
            if name.parts[:1] == (inner,):
                zf.extract(member, staging)
        if next((staging / inner).glob("*/*.bin"), None) is None:
            raise NMNISTDownloadError(f"{archive}: holds no {inner}/<digit>/*.bin recordings")
        (staging / inner).rename(folder)  # fails, changing nothing, if the folder appeared meanwhile


def _verify_or_fetch_archive(archive: Path, md5: str, url: str) -> None:
    if archive.exists():
        return  # verified with the other existing files
    try:
        fetch.fetch_url(url, archive, md5)
    except Exception as error:
        raise NMNISTDownloadError(
            f"could not download {archive.name} from {url} ({type(error).__name__}: {error}); nothing was kept. "
            f"Rerun when the network is back, or put the official {archive.name} (md5 {md5}) at {archive}."
        ) from error


def download_nmnist(root: str | Path, splits: Iterable[str] = ("train", "test")) -> dict:
    """Verify N-MNIST under ``root/NMNIST`` and fetch only the missing splits; return the manifest body.

    Returns ``{"files": [archive records], "splits": {split: check_split_folder entry}}``. Damaged
    files (an archive whose md5 is not tonic's, an unreadable sampled recording) are named in the
    :class:`DataIntegrityError` raised before anything is fetched, and left where they are.
    """
    root = Path(root)
    nm_dir = root / "NMNIST"
    if (nm_dir / DEMO_MARKER).exists():
        raise NMNISTDownloadError(
            f"{nm_dir} holds demo recordings made by spikebench.data.demo (see {nm_dir / DEMO_MARKER}), not the "
            "real N-MNIST; use another data root for the download."
        )
    splits = list(splits)
    fetch.remove_stale_partials(nm_dir)  # the archives' downloads and the splits' extractions
    problems, files, entries = [], [], {}
    for split in splits:
        name, md5, _, _ = _archive(split)
        if (nm_dir / name).exists():
            record = file_record(nm_dir / name, root, md5)
            files.append(record)
            if record["md5"] != md5:
                problems.append(f"{nm_dir / name}: md5 {record['md5']}, expected {md5} (tonic.datasets.NMNIST)")
        folder = nmnist_split_folder(root, split)
        if folder.exists():
            entries[split], found = check_split_folder(folder, root)
            problems += found
    if problems:
        raise DataIntegrityError(damaged_message("N-MNIST", problems))
    for split in splits:
        if split in entries:
            continue
        name, md5, url, inner = _archive(split)
        nm_dir.mkdir(parents=True, exist_ok=True)
        existed = (nm_dir / name).exists()
        _verify_or_fetch_archive(nm_dir / name, md5, url)
        if not existed:
            files.append(file_record(nm_dir / name, root, md5))
        _extract_split(nm_dir / name, inner, nmnist_split_folder(root, split))
        entries[split], found = check_split_folder(nmnist_split_folder(root, split), root)
        if found:
            raise DataIntegrityError(damaged_message("N-MNIST", found, f"delete {nm_dir / name} and its folder, rerun"))
    return {"files": files, "splits": entries}
