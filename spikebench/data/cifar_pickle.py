"""CIFAR-10's pickles read without unpickling: only the exact structure CIFAR-10 ships, nothing called.

:class:`_StrictPickle` runs the few pickle opcodes CIFAR-10's files use (dicts, lists, tuples, strings, bytes,
small ints, and NumPy's array reconstruction for uint8 [N, 3072] only) into plain values; :func:`parse` checks the
result's keys and :func:`check_batch` / :func:`check_meta` each part. Every failure is a :class:`CifarFormatError`
(a ``DataIntegrityError``) that names the file and says what was expected; no claim in a file (a shape, a length,
an integer) can allocate more than the file holds, and no global but those in ``_GLOBALS`` is admitted (as a name:
nothing is ever imported or called).
"""

from __future__ import annotations

import io
import pickletools
import reprlib
from pathlib import Path

import numpy as np

from spikebench.data.catalog import CIFAR10_IMAGE_SHAPE, CIFAR10_ROW_BYTES, NUM_CLASSES
from spikebench.data.mnist import DataIntegrityError

_MAX_LABEL = NUM_CLASSES["cifar10"] - 1


class CifarFormatError(DataIntegrityError):
    """A CIFAR-10 file that is not exactly what CIFAR-10 ships; the message names the file and what was expected."""


class UnsafePickleError(CifarFormatError):
    """A CIFAR-10 pickle that asks for a global a CIFAR batch never holds (it could run code when loaded)."""


#: The largest CIFAR-10 pickle read (a real batch is 31 MB, the demo's are smaller): a bigger file is refused unread.
MAX_PICKLE_BYTES = 1 << 30
_EXPECTED = {
    "batch": "a dict with 'data' (a uint8 numpy array [N, 3072], R, G, B planes), 'labels' (a list of N ints "
    f"0..{_MAX_LABEL}) and optionally 'filenames' (N strings) and 'batch_label' (a string)",
    "meta": f"a dict with 'label_names' (a list of {_MAX_LABEL + 1} strings) and optionally 'num_cases_per_batch' "
    "and 'num_vis' (ints)",
}
_KEYS = {
    "batch": ({"data", "labels"}, {"filenames", "batch_label"}),
    "meta": ({"label_names"}, {"num_cases_per_batch", "num_vis"}),
}
REMEDY = "Delete it and download CIFAR-10 again, or make the demo data anew."
_RECONSTRUCT = frozenset({"numpy.core.multiarray _reconstruct", "numpy._core.multiarray _reconstruct"})
_GLOBALS = _RECONSTRUCT | {"numpy ndarray", "numpy dtype", "_codecs encode"}
_UINT8_STATE = (3, "|", None, None, None, -1, -1, 0)  # what NumPy pickles as the state of dtype('uint8')
_MAX_INT = 1 << 62
_MARK = object()
_VALUE_OPS = frozenset(
    "INT BININT BININT1 BININT2 LONG LONG1 LONG4 STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE "
    "SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8".split()
)
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}


class _ShortRepr(reprlib.Repr):
    """``reprlib.Repr`` that also shortens bytes (a batch's raw image bytes would be megabytes long)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = self.maxlong = 40
        self.maxlist = self.maxtuple = self.maxdict = 4

    def repr_bytes(self, value: bytes, level: int) -> str:
        return repr(value[:30]) + (f"...({len(value)} bytes)" if len(value) > 30 else "")


_SHORT = _ShortRepr()


class _Global:
    """A global the pickle named (one of ``_GLOBALS``); never a Python object, only a name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name.replace(" ", ".")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Global) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class _Dtype:
    """``numpy.dtype('u1')`` being rebuilt: ``ready`` once its BUILD carried exactly uint8's state."""

    ready = False

    def __repr__(self) -> str:
        return "dtype('uint8')" if self.ready else "dtype (not built)"


class _Array:
    """``numpy._reconstruct(ndarray, (0,), b'b')``: ``value`` is the uint8 [N, 3072] array once its BUILD checked."""

    value: np.ndarray | None = None

    def __repr__(self) -> str:
        return "numpy array (not built)" if self.value is None else f"uint8 array {self.value.shape}"


class _StrictPickle:
    """Reads the pickle opcodes CIFAR-10's files use into plain values, calling nothing.

    dicts, lists, tuples, str, bytes, small ints, None and bools are built directly; the only globals are
    NumPy's array reconstruction, ``numpy.dtype`` (for 'u1' only, with exactly uint8's state) and latin1
    ``_codecs.encode``; an array is made only from raw bytes that are in the file (shape [N, 3072] with
    N * 3072 == their length), so no claim can allocate more than the file holds. Anything else is an error.
    """

    def __init__(self, path: Path, data: bytes, kind: str) -> None:
        self.path, self.data, self.kind = path, data, kind
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}

    def error(self, detail: str) -> CifarFormatError:
        return CifarFormatError(
            f"{self.path}: not a CIFAR-10 {self.kind} file: {detail}; expected {_EXPECTED[self.kind]}. {REMEDY}"
        )

    def run(self) -> object:
        for op, arg, pos in pickletools.genops(io.BytesIO(self.data)):
            name = op.name
            if name == "STOP":
                if len(self.stack) != 1:
                    raise self.error(f"the pickle ends with {len(self.stack)} values on its stack, not one")
                return self.stack[0]
            if name in _VALUE_OPS:
                if isinstance(arg, int) and not -_MAX_INT < arg < _MAX_INT:
                    raise self.error(f"an integer of {arg.bit_length()} bits at byte {pos}")
                self.stack.append(arg)
            elif name in _CONSTANTS:
                self.stack.append(_CONSTANTS[name])
            elif name not in ("PROTO", "FRAME"):
                handler = getattr(self, f"op_{name.lower()}", None)
                if handler is None:
                    raise self.error(f"pickle opcode {name} at byte {pos}, which CIFAR-10's files never hold")
                handler(arg)
        raise self.error("the pickle has no STOP")  # not reached: genops raises first

    def pop(self) -> object:
        value = self.stack.pop()
        if value is _MARK:
            raise self.error("a MARK where a value was expected")
        return value

    def pop_mark(self) -> list[object]:
        start = len(self.stack) - 1
        while start >= 0 and self.stack[start] is not _MARK:
            start -= 1
        if start < 0:
            raise self.error("a MARK is missing")
        items = self.stack[start + 1 :]
        del self.stack[start:]
        return items

    def top(self, kind: type) -> object:
        if not isinstance(self.stack[-1], kind):
            raise self.error(f"{_SHORT.repr(self.stack[-1])} where a {kind.__name__} was expected")
        return self.stack[-1]

    def op_mark(self, _) -> None:
        self.stack.append(_MARK)

    def op_pop(self, _) -> None:
        self.stack.pop()

    def op_pop_mark(self, _) -> None:
        self.pop_mark()

    def op_dup(self, _) -> None:
        self.stack.append(self.stack[-1])

    def op_empty_dict(self, _) -> None:
        self.stack.append({})

    def op_empty_list(self, _) -> None:
        self.stack.append([])

    def op_list(self, _) -> None:
        self.stack.append(self.pop_mark())

    def op_tuple(self, _) -> None:
        self.stack.append(tuple(self.pop_mark()))

    def op_tuple1(self, _) -> None:
        self.stack.append((self.pop(),))

    def op_tuple2(self, _) -> None:
        b, a = self.pop(), self.pop()
        self.stack.append((a, b))

    def op_tuple3(self, _) -> None:
        c, b, a = self.pop(), self.pop(), self.pop()
        self.stack.append((a, b, c))

    def op_append(self, _) -> None:
        value = self.pop()
        self.top(list).append(value)

    def op_appends(self, _) -> None:
        items = self.pop_mark()
        self.top(list).extend(items)

    def set_items(self, target: dict, items: list[object]) -> None:
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, (str, bytes)):
                raise self.error(f"a dict key {_SHORT.repr(key)} (CIFAR-10's keys are strings)")
            target[key.decode("latin1") if isinstance(key, bytes) else key] = value

    def op_dict(self, _) -> None:
        items = self.pop_mark()
        self.stack.append({})
        self.set_items(self.stack[-1], items)

    def op_setitem(self, _) -> None:
        value, key = self.pop(), self.pop()
        self.set_items(self.top(dict), [key, value])

    def op_setitems(self, _) -> None:
        items = self.pop_mark()
        self.set_items(self.top(dict), items)

    def op_put(self, index: int) -> None:
        self.memo[index] = self.stack[-1]

    op_binput = op_long_binput = op_put

    def op_memoize(self, _) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def op_get(self, index: int) -> None:
        self.stack.append(self.memo[index])

    op_binget = op_long_binget = op_get

    def op_global(self, name: str) -> None:
        if name not in _GLOBALS:
            raise UnsafePickleError(
                f"{self.path}: refused to load the global {name.replace(' ', '.')}: a CIFAR-10 {self.kind} file "
                "holds only dicts, lists, strings, bytes, ints and numpy arrays, so this file is not one (it could "
                f"run code when loaded). {REMEDY}"
            )
        self.stack.append(_Global(name))

    def op_stack_global(self, _) -> None:
        name, module = self.pop(), self.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise self.error("STACK_GLOBAL without two strings")
        self.op_global(f"{module} {name}")

    def op_reduce(self, _) -> None:
        args, func = self.pop(), self.pop()
        name = func.name if isinstance(func, _Global) else None
        if name in _RECONSTRUCT and args in ((_NDARRAY, (0,), b"b"), (_NDARRAY, (0,), "b")):
            self.stack.append(_Array())
        elif name == "numpy dtype" and args in (("u1", 0, 1), (b"u1", 0, 1)):
            self.stack.append(_Dtype())
        elif name == "_codecs encode" and isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
            if args[1] not in ("latin1", "latin-1"):
                raise self.error(f"_codecs.encode with encoding {_SHORT.repr(args[1])} (only latin1 is admitted)")
            self.stack.append(args[0].encode("latin1"))
        else:
            raise self.error(f"a call {_SHORT.repr(func)}{_SHORT.repr(args)}, which CIFAR-10's files never hold")

    def op_build(self, _) -> None:
        state, target = self.pop(), self.stack[-1]
        if isinstance(target, _Dtype) and not target.ready and state == _UINT8_STATE:
            target.ready = True
        elif isinstance(target, _Array) and target.value is None:
            target.value = self.array(state)
        else:
            raise self.error(f"a BUILD of {_SHORT.repr(target)} with state {_SHORT.repr(state)} (only uint8 is read)")

    def array(self, state: object) -> np.ndarray:
        """The uint8 [N, 3072] array of a ``_reconstruct`` BUILD state (1, shape, dtype, fortran, raw bytes)."""
        ok = isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and state[3] in (False, 0)
        if not ok or not (isinstance(state[2], _Dtype) and state[2].ready):
            raise self.error(f"an array state {_SHORT.repr(state)}, not (1, (N, 3072), uint8, False, bytes)")
        shape, raw = state[1], state[4]
        raw = raw.encode("latin1") if isinstance(raw, str) else raw  # a Python 2 str: its bytes
        if not isinstance(shape, tuple) or len(shape) != 2 or any(type(d) is not int or d < 0 for d in shape):
            raise self.error(f"an array of shape {_SHORT.repr(shape)}")
        if shape[1] != CIFAR10_ROW_BYTES or not isinstance(raw, bytes) or shape[0] * shape[1] != len(raw):
            size = len(raw) if isinstance(raw, bytes) else _SHORT.repr(raw)
            raise self.error(f"an array that claims shape {shape} but holds {size} bytes")
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


_NDARRAY = _Global("numpy ndarray")


def parse(path: Path, data: bytes, kind: str) -> dict[str, object]:
    """The dict (str keys) pickled in ``data``, the bytes of ``path`` (``kind``: batch or meta), read by
    :class:`_StrictPickle`; its keys must be CIFAR-10's (``_KEYS``)."""
    reader = _StrictPickle(path, data, kind)
    try:
        entry = reader.run()
    except CifarFormatError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, EOFError, OverflowError, RecursionError) as error:
        raise reader.error(f"an unreadable pickle ({type(error).__name__}: {_SHORT.repr(str(error))})") from error
    if not isinstance(entry, dict):
        raise reader.error(f"a pickled {type(entry).__name__}, not a dict")
    required, optional = _KEYS[kind]
    if not required <= entry.keys() <= required | optional:
        raise reader.error(f"the keys {sorted(entry)}")
    return entry


def _strings(value: object, n: int | None = None) -> bool:
    ok = isinstance(value, list) and all(isinstance(s, (str, bytes)) for s in value)
    return ok and (n is None or len(value) == n)


def check_batch(path: Path, entry: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of a batch's dict, each part checked."""
    error = _StrictPickle(path, b"", "batch").error
    data, labels = entry["data"], entry["labels"]
    if not isinstance(data, _Array) or data.value is None:
        raise error(f"'data' is {_SHORT.repr(data)}")
    n = len(data.value)
    if not isinstance(labels, list) or len(labels) != n:
        raise error(f"'labels' is {_SHORT.repr(labels)}, for {n} images")
    bad = [label for label in labels if type(label) is not int or not 0 <= label <= _MAX_LABEL]
    if bad:
        raise error(f"{len(bad)} labels are not ints 0..{_MAX_LABEL}, such as {_SHORT.repr(bad[0])}")
    if "filenames" in entry and not _strings(entry["filenames"], n):
        raise error(f"'filenames' is {_SHORT.repr(entry['filenames'])}, for {n} images")
    if not isinstance(entry.get("batch_label", ""), (str, bytes)):
        raise error(f"'batch_label' is {_SHORT.repr(entry['batch_label'])}")
    return data.value.reshape(-1, *CIFAR10_IMAGE_SHAPE), np.array(labels, dtype=np.int64)


def check_meta(path: Path, entry: dict[str, object]) -> list[str]:
    """The class names of a ``batches.meta`` dict, each part checked."""
    error = _StrictPickle(path, b"", "meta").error
    names = entry["label_names"]
    if not _strings(names, _MAX_LABEL + 1):
        raise error(f"'label_names' is {_SHORT.repr(names)}")
    for key in ("num_cases_per_batch", "num_vis"):
        if key in entry and (type(entry[key]) is not int or entry[key] < 0):
            raise error(f"{key!r} is {_SHORT.repr(entry[key])}")
    return [name.decode("latin1") if isinstance(name, bytes) else name for name in names]
