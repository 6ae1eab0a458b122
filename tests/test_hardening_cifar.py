"""Hostile CIFAR-10 pickles (issue 21): each is a CifarFormatError naming the file, never a crash or a huge allocation.

The demo's stand-in is read without torchvision's md5, so its reader must hold against any file. Every payload
is loaded in a child process (a SIGSEGV would kill the test run), under an address-space limit, and the child
reports what it raised and its peak memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spikebench.data.cifar10 import cifar10_folder, cifar_batch_bytes, label_names, load_cifar10
from spikebench.data.demo import CIFAR10_LABEL_NAMES
from spikebench.data.mnist import DataIntegrityError

#: The child's address-space limit: far below the 1-100 GiB the payloads claim, far above what a real read needs.
CHILD_MEMORY = 3 << 30
CHILD = r"""
import json, resource, sys
from pathlib import Path

resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from spikebench.data.cifar10 import label_names, load_cifar10

out = []
for root in sys.argv[3:]:
    try:
        if sys.argv[2] == "meta":
            label_names(Path(root), verify_md5=False)
        else:
            load_cifar10(Path(root), "test", verify_md5=False)
        out.append({"root": root, "error": None})
    except BaseException as error:  # MemoryError, OverflowError, ...: reported, the test decides
        out.append({"root": root, "error": [c.__name__ for c in type(error).__mro__], "message": str(error)})
# VmHWM: this process's peak resident memory (ru_maxrss would include the parent's at fork time)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(json.dumps({"results": out, "maxrss_kb": int(hwm[0]) if hwm else 0}))
"""


# --- a protocol-2 pickle writer, opcode by opcode (as the CIFAR-10 site's Python 2 files are laid out) -------------


def text(b: bytes) -> bytes:
    """A Python 2 str: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def integer(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw if len(raw) < 256 else b"\x8b" + struct.pack("<i", len(raw)) + raw


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    return b"](" + b"".join(items) + b"e"


def dtype(name: bytes = b"u1", flags: int = 0, build: bool = True) -> bytes:
    out = b"cnumpy\ndtype\n" + tup(text(name), integer(0), integer(1)) + b"R"
    state = tup(integer(3), text(b"|"), b"N", b"N", b"N", integer(-1), integer(-1), integer(flags))
    return out + (state + b"b" if build else b"")


def array(shape: tuple[int, ...], raw: bytes, dt: bytes | None = None, reconstruct_shape=(0,), build=True) -> bytes:
    """numpy's protocol-2 array: _reconstruct(ndarray, shape0, 'b') then BUILD (1, shape, dtype, False, raw)."""
    shape0 = tup(*(integer(d) for d in reconstruct_shape))
    out = b"cnumpy.core.multiarray\n_reconstruct\n" + tup(b"cnumpy\nndarray\n", shape0, text(b"b")) + b"R"
    if not build:
        return out
    state = tup(integer(1), tup(*(integer(d) for d in shape)), dtype() if dt is None else dt, b"\x89", text(raw))
    return out + state + b"b"


def batch(data: bytes, labels: bytes, extra: bytes = b"") -> bytes:
    return b"\x80\x02}(" + text(b"data") + data + text(b"labels") + labels + extra + b"u."


def meta(label_names_op: bytes, extra: bytes = b"") -> bytes:
    return b"\x80\x02}(" + text(b"label_names") + label_names_op + extra + b"u."


NAMES = lst(*(text(n.encode()) for n in CIFAR10_LABEL_NAMES))
ONE_IMAGE = array((1, 3072), bytes(3072))
POINTERS = struct.pack("<Q", 0x4141414141414141) * 4


def object_field_labels() -> bytes:
    """Labels whose dtype is re-BUILT after the array exists: a void dtype gains an object field over raw pointer
    bytes, so reading the labels dereferences 0x4141414141414141 (a SIGSEGV with a restricted unpickler)."""

    def state(names: bytes, fields: bytes, elsize: int, align: int, flags: int) -> bytes:
        return tup(integer(3), text(b"|"), b"N", names, fields, integer(elsize), integer(align), integer(flags))

    void = b"cnumpy\ndtype\n" + tup(text(b"V8"), integer(0), integer(1)) + b"Rq\x50" + state(b"N", b"N", 8, 1, 0) + b"b"
    obj = dtype(b"O8", 63)
    out = array((1,), POINTERS[:8], void)
    fields = b"}(" + text(b"a") + tup(obj, integer(0)) + b"u"
    return out + b"h\x50" + state(tup(text(b"a")), fields, 8, 8, 63) + b"b0"  # BINGET the dtype, BUILD it, POP


def good_batch() -> bytes:
    return batch(ONE_IMAGE, lst(integer(3)))


#: name -> (kind, file content): each must be refused, naming the file
PAYLOADS = {
    # an object dtype: numpy would fill it from the raw bytes, reading labels then dereferences planted pointers
    "labels-dtype-rebuilt-with-an-object-field": ("batch", batch(ONE_IMAGE, object_field_labels())),
    "labels-object-dtype": ("batch", batch(ONE_IMAGE, array((4,), POINTERS, dtype(b"O8", 63)))),
    "data-object-dtype": ("batch", batch(array((1, 4), POINTERS, dtype(b"O8", 63)), lst(integer(3)))),
    "uint8-built-with-object-flags": ("batch", batch(ONE_IMAGE, array((4,), POINTERS, dtype(b"u1", 63)))),
    "dtype-built-twice": ("batch", batch(array((1, 3072), bytes(3072), dtype() + tup(integer(3)) + b"b"), lst())),
    "dtype-not-built": ("batch", batch(array((1, 3072), bytes(3072), dtype(build=False)), lst(integer(3)))),
    # shapes the file cannot hold: an unbuilt _reconstruct is an uninitialised array of the claimed shape
    "unbuilt-353200-images": ("batch", batch(array((), b"", reconstruct_shape=(353200, 3072), build=False), lst())),
    "shape-claims-353200-images": ("batch", batch(array((353200, 3072), bytes(3072)), lst(integer(3)))),
    "shape-claims-8-gib": ("batch", batch(array((1 << 33,), b"", reconstruct_shape=(1 << 33,), build=False), lst())),
    "shape-claims-100-gib": ("batch", batch(array((100 << 30, 3072), bytes(3072)), lst(integer(3)))),
    "shape-negative": ("batch", batch(array((-1, 3072), bytes(3072)), lst(integer(3)))),
    "binbytes8-claims-64-gib": ("batch", b"\x80\x04}(" + text(b"data") + b"\x8e" + struct.pack("<Q", 64 << 30) + b"u."),
    "binunicode8-claims-8-gib": ("batch", b"\x80\x04\x8d" + struct.pack("<Q", 8 << 30) + b"abc."),
    "long4-claims-2-gib": ("batch", b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01."),
    # labels: huge ints, strings, dicts, floats, out of range
    "label-2**1000": ("batch", batch(ONE_IMAGE, lst(integer(2**1000)))),
    "label-2**64": ("batch", batch(ONE_IMAGE, lst(integer(2**64)))),
    "label-decimal-10**5000": ("batch", batch(ONE_IMAGE, b"](L" + b"9" * 5000 + b"L\ne")),
    "label-string": ("batch", batch(ONE_IMAGE, lst(text(b"cat")))),
    "label-dict": ("batch", batch(ONE_IMAGE, b"}(" + text(b"a") + integer(1) + b"u")),
    "labels-dict": ("batch", batch(ONE_IMAGE, b"}")),
    "label-list": ("batch", batch(ONE_IMAGE, lst(lst(integer(1))))),
    "label-float": ("batch", batch(ONE_IMAGE, lst(b"G" + struct.pack(">d", 1.0)))),
    "label-11": ("batch", batch(ONE_IMAGE, lst(integer(11)))),
    "label-bool": ("batch", batch(ONE_IMAGE, lst(b"\x88"))),
    "labels-count-differs": ("batch", batch(ONE_IMAGE, lst(integer(1), integer(2)))),
    "data-a-list": ("batch", batch(lst(integer(1)), lst(integer(3)))),
    "data-a-string": ("batch", batch(text(b"x" * 3072), lst(integer(3)))),
    "unknown-key": ("batch", batch(ONE_IMAGE, lst(integer(3)), text(b"fine_labels") + lst(integer(3)))),
    "not-a-dict": ("batch", b"\x80\x02" + lst(integer(1)) + b"."),
    "self-containing-labels": ("batch", batch(ONE_IMAGE, b"]q\x07(h\x07e")),
    "memo-get-missing": ("batch", batch(ONE_IMAGE, b"h\x63")),
    "empty-file": ("batch", b""),
    "nested-tuples": ("batch", b"\x80\x02K\x01" + b"\x85" * 200_000 + b"."),
    "nested-label-lists": ("batch", batch(ONE_IMAGE, b"]" * 200_000 + b"e" * 199_999)),
    "no-stop": ("batch", good_batch()[:-1]),
    "inst-opcode": ("batch", b"\x80\x02(iposix\nsystem\n."),
    "newobj": ("batch", b"\x80\x02cnumpy\nndarray\n)\x81."),
    "persistent-id": ("batch", b"\x80\x02Pabc\n."),
    # the meta file
    "meta-label-names-dict": ("meta", meta(b"}")),
    "meta-nine-names": ("meta", meta(lst(*(text(b"x") for _ in range(9))))),
    "meta-name-int": ("meta", meta(lst(*(integer(1) for _ in range(10))))),
    "meta-num-vis-2**80": ("meta", meta(NAMES, text(b"num_vis") + integer(2**80))),
    "meta-num-vis-string": ("meta", meta(NAMES, text(b"num_vis") + text(b"3072"))),
    "meta-object-array": ("meta", meta(array((4,), POINTERS, dtype(b"O8", 63)))),
}


def _place(tmp_path: Path, name: str, kind: str, content: bytes) -> Path:
    root = tmp_path / name
    folder = cifar10_folder(root)
    folder.mkdir(parents=True)
    (folder / ("batches.meta" if kind == "meta" else "test_batch")).write_bytes(content)
    return root


def _load_in_child(kind: str, roots: list[Path]) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(CHILD_MEMORY), kind, *map(str, roots)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, f"the reader crashed (exit {run.returncode}): {run.stderr[-3000:]}"
    return json.loads(run.stdout)


def _assert_refused(report: dict, kind: str) -> None:
    assert report["maxrss_kb"] < 1 << 20, f"peak memory {report['maxrss_kb']} kB: a claim was allocated"
    for result in report["results"]:
        name = "batches.meta" if kind == "meta" else "test_batch"
        assert result["error"] is not None, f"{result['root']}: loaded"
        assert "CifarFormatError" in result["error"] and "DataIntegrityError" in result["error"], result
        assert str(cifar10_folder(Path(result["root"])) / name) in result["message"], result["message"]
        assert "expected" in result["message"] and "Delete it" in result["message"], result["message"]


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_hostile_pickle_is_a_clear_error_naming_the_file(tmp_path: Path, name: str):
    kind, content = PAYLOADS[name]
    root = _place(tmp_path, name, kind, content)
    before = (cifar10_folder(root) / ("batches.meta" if kind == "meta" else "test_batch")).read_bytes()
    _assert_refused(_load_in_child(kind, [root]), kind)
    assert (cifar10_folder(root) / ("batches.meta" if kind == "meta" else "test_batch")).read_bytes() == before


def test_random_bytes_and_every_truncation_are_clear_errors(tmp_path: Path):
    # the payload builder writes what the reader admits: its well-formed batch and meta load
    root = _place(tmp_path, "good", "batch", good_batch())
    (cifar10_folder(root) / "batches.meta").write_bytes(meta(NAMES, text(b"num_vis") + integer(3072)))
    images, labels = load_cifar10(root, "test", verify_md5=False)
    assert images.shape == (1, 3, 32, 32) and not images.any() and labels.tolist() == [3]
    assert label_names(root, verify_md5=False) == CIFAR10_LABEL_NAMES

    rng = random.Random(21)
    contents = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(60)]
    contents += [b"\x80\x02" + content for content in contents[:30]]  # a pickle header, then noise
    good = cifar_batch_bytes(np.full((2, 3072), 7, np.uint8), np.array([1, 2]), "b")
    contents += [good[:cut] for cut in sorted({*range(0, 260, 3), *range(len(good) - 80, len(good) - 1, 7)})]
    roots = [_place(tmp_path, f"case{i}", "batch", content) for i, content in enumerate(contents)]
    report = _load_in_child("batch", roots)
    assert len(report["results"]) == len(contents)
    _assert_refused(report, "batch")


def test_a_file_larger_than_any_cifar_file_is_refused_unread(tmp_path: Path, monkeypatch):
    import spikebench.data.cifar10 as cifar10

    root = _place(tmp_path, "big", "batch", good_batch() + bytes(2048))
    monkeypatch.setattr(cifar10, "MAX_PICKLE_BYTES", 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} was read"))
    with pytest.raises(DataIntegrityError, match=r"test_batch: \d+ bytes, more than any CIFAR-10 file"):
        load_cifar10(root, "test", verify_md5=False)


# --- the demo's batches are md5-checked against the data manifest ---------------------------------------------------


def test_demo_batches_are_checked_against_the_manifest_md5_before_reading(tmp_path: Path, monkeypatch):
    import spikebench.data.cifar_pickle as cifar_pickle
    from spikebench.data.demo import ensure_demo_cifar10
    from spikebench.data.manifest import expected_md5s, write_manifest

    root = tmp_path / "data"
    records = ensure_demo_cifar10(root, n_train=20, n_test=10, seed=0)
    manifest = tmp_path / "manifest_cifar10.json"
    write_manifest(manifest, dataset="cifar10", root=root, source="demo", files=records)
    md5s = expected_md5s(manifest)
    batch = cifar10_folder(root) / "test_batch"
    assert md5s["cifar-10-batches-py/test_batch"] == hashlib.md5(batch.read_bytes()).hexdigest()
    assert len(load_cifar10(root, "test", verify_md5=md5s)[1]) == 10
    assert label_names(root, verify_md5=md5s) == CIFAR10_LABEL_NAMES

    # a stand-in changed after the demo rule checked it: refused before it is parsed, and left as it is
    tampered = batch.read_bytes().replace(b"testing batch", b"Testing batch")
    batch.write_bytes(tampered)
    parsed: list[object] = []
    monkeypatch.setattr(cifar_pickle._StrictPickle, "run", lambda self: parsed.append(self))
    with pytest.raises(DataIntegrityError) as error:
        load_cifar10(root, "test", verify_md5=md5s)
    message = str(error.value)
    assert str(batch) in message and md5s["cifar-10-batches-py/test_batch"] in message
    assert "data manifest" in message and "rerun the demo rule" in message
    assert parsed == [] and batch.read_bytes() == tampered
    with pytest.raises(DataIntegrityError, match=r"data_batch_1: the data manifest lists no md5 for it"):
        load_cifar10(root, "train", verify_md5={})
