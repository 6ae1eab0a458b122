"""Fetching one dataset file: into a temporary name in its folder, md5-checked, then renamed.

A failed or interrupted download leaves no partial file; an existing file is never overwritten.
The download itself is torchvision's ``download_url`` (redirects, Google Drive, progress).
"""

from __future__ import annotations

from pathlib import Path

from spikebench.atomic import atomic_output
from spikebench.data.manifest import md5sum


def fetch_url(url: str, dest: str | Path, md5: str | None) -> Path:
    """Download ``url`` to ``dest`` (which must not exist) and check its md5 before renaming it there."""
    from torchvision.datasets.utils import download_url

    from spikebench.data.mnist import DataIntegrityError

    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists; spikebench never overwrites a dataset file")
    with atomic_output(dest) as tmp:
        # download_url skips a file that exists when no md5 is given: hand it the temporary name free
        tmp.unlink()
        download_url(url, str(dest.parent), filename=tmp.name)
        found = md5sum(tmp)
        if md5 is not None and found != md5:
            raise DataIntegrityError(f"{url}: the downloaded file has md5 {found}, expected {md5}; nothing was kept")
    return dest
