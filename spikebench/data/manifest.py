"""The verified-data manifest: what a download (or demo) job checked under the data root.

The dataset files themselves are never declared to Snakemake (so Snakemake can never delete
them). Each download/demo job verifies what is there, fetches only what is missing and writes one
small JSON file, ``<results>/data/manifest_<dataset>.json``, that the jobs reading the dataset take
as input. Its content is deterministic for an unchanged data root (sorted keys, no timestamps):
it changes, and so reruns those jobs, only when a file's size or md5 (or an N-MNIST count) changes.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from spikebench.atomic import write_text

#: Packages whose versions a manifest records (the ones that define what "verified" means).
VERSIONED_PACKAGES = ("spikebench", "numpy", "torchvision", "tonic")


def md5sum(path: str | Path) -> str:
    """The md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | Path, root: str | Path, expected_md5: str | None = None, md5: str | None = None) -> dict:
    """One checked file: its path relative to the data root, size, md5 and the published md5 (or null)."""
    path = Path(path)
    return {
        "path": path.relative_to(root).as_posix(),
        "size_bytes": path.stat().st_size,
        "md5": md5 or md5sum(path),
        "expected_md5": expected_md5,
    }


def library_versions() -> dict[str, str | None]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def damaged_message(dataset: str, problems: list[str], recover: str | None = None) -> str:
    """The error for files that failed their check: each named, left as they are, how to recover."""
    recover = recover or "delete each file named above and rerun to download it again (or put an intact copy there)"
    return (
        f"{dataset}: {len(problems)} file(s) failed their check and were left exactly as they are:\n  "
        + "\n  ".join(problems)
        + f"\nTo recover: {recover}. spikebench never moves, rewrites or deletes a dataset file."
    )


def write_manifest(
    path: str | Path, *, dataset: str, root: str | Path, source: str, files: list[dict], extra: dict | None = None
) -> dict:
    """Write the manifest of ``dataset`` atomically (temporary name in the same folder, then rename)."""
    content = {
        "dataset": dataset,
        "source": source,
        "data_root": str(root),
        "files": sorted(files, key=lambda record: record["path"]),
        **(extra or {}),
        "versions": library_versions(),
    }
    write_text(json.dumps(content, indent=1, sort_keys=True) + "\n", path)
    return content


def read_manifest(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def expected_md5s(path: str | Path) -> dict[str, str]:
    """Path under the data root -> the md5 the manifest at ``path`` records as expected for it.

    For a demo manifest these are the md5s of the content the demo configuration makes (``ensure_files``), for
    a download manifest the libraries' published ones; files without one (null) are left out. A loader given
    this mapping (``load_cifar10(..., verify_md5=expected_md5s(manifest))``) checks each file before reading it.
    """
    try:
        files = read_manifest(path)["files"]
        return {str(r["path"]): str(r["expected_md5"]) for r in files if r.get("expected_md5") is not None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path}: not a readable data manifest ({type(error).__name__}: {error}); expected the JSON that a "
            "download or demo rule writes, with 'files' [{path, expected_md5, ...}]. Delete it and rerun that rule."
        ) from error
