"""The settings of one network run, typed: :class:`NetworkSpec`, built once from its validated config entry.

A train or evaluate job gets its run's config entry through ``params.network`` (``rules/common.smk``
``spec()``: the network's ``networks:`` entry, a sweep variant's value replaced, ``repeats`` removed);
``scripts/train.py`` and ``scripts/evaluate.py`` build the spec from it with :meth:`NetworkSpec.from_config`
and everything downstream (data loading, the network builders, losses, training, evaluation, operation counts)
reads its attributes. A setting absent from the entry takes the ``default`` of ``schemas/config.schema.yaml``
(read from the schema, never restated in code) or ``None`` where the schema has none (an ANN's ``beta``).
:meth:`NetworkSpec.to_dict` gives back the entry exactly as it came (no defaults added), which the results
files store (Parquet metadata, test.json, weights) and the checkpoint fingerprint hashes, so those are the
same as before the spec existed.

The builder checks the entry against the schema's network definition once more (the workflow validated the
whole config when it started; a job run by hand or a test may not have): a missing required key, a wrong
type or an unknown key is a :class:`NetworkSpecError` naming the network and the key. Imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from spikebench.data.catalog import DATASET_SHAPES


class NetworkSpecError(ValueError):
    """A network entry of the configuration that cannot be built."""


@dataclass(frozen=True)
class NetworkSpec:
    """One run's network settings (the keys of ``$defs.network`` in the config schema) and its name."""

    name: str  # the run id (network, variant or seed run), as in results/<name>/
    experiment: int
    dataset: str  # mnist, cifar10, nmnist
    kind: str  # ann, snn
    architecture: str  # fc, conv5, conv2
    epochs: int
    optimizer: str
    lr: float
    batch_size: int
    implementation: str  # spikebench, snntorch
    hidden: tuple[int, ...] | None = None  # fc: hidden layer widths
    channels: tuple[int, ...] | None = None  # conv5/conv2: one width per conv layer
    fc: int | None = None  # conv5: width of the fully connected layer
    dropout: float | None = None  # conv5: dropout after that layer
    input_size: int | None = None  # images resized to input_size x input_size
    num_steps: int | None = None  # SNN on images: rate-coding time steps
    beta: float | None = None  # SNN: LIF decay
    threshold: float | None = None  # SNN: LIF threshold
    surrogate: str | None = None  # SNN: surrogate gradient
    correct_rate: float | None = None  # SNN: spike-count target of the true class, per step
    incorrect_rate: float | None = None  # SNN: spike-count target of the other classes, per step
    repeats: int | None = None  # (removed from a run's entry by expand_runs)
    entry: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_config(
        cls, entry: Mapping[str, Any] | NetworkSpec, name: str | None = None, *, strict: bool = True
    ) -> NetworkSpec:
        """The spec of the run ``name`` from its config entry (``params.network``); a spec passes through.

        ``strict=False`` ignores keys that are no network setting (a benchmark's extra keys) instead of
        refusing them; they stay in :meth:`to_dict`. A key ``_name`` names the network when ``name`` is None.
        """
        if isinstance(entry, NetworkSpec):
            return entry if name is None or name == entry.name else dataclasses.replace(entry, name=name)
        if not isinstance(entry, Mapping):
            raise NetworkSpecError(
                f"{name or 'network'}: expected a mapping of network settings, got {type(entry).__name__}"
            )
        source = copy.deepcopy(dict(entry))
        settings = {k: v for k, v in source.items() if k != "_name"}
        name = str(name or source.get("_name") or f"{settings.get('architecture')}_{settings.get('kind')}")
        known = network_schema()["properties"]
        if not strict:
            settings = {k: v for k, v in settings.items() if k in known}
        _check(settings, name)
        values = {key: settings.get(key, known[key].get("default")) for key in known}
        for key, value in values.items():  # JSON numbers as Python floats, arrays as tuples
            if value is not None:
                values[key] = float(value) if key in _FLOATS else tuple(value) if key in _TUPLES else value
        return cls(name=name, entry=source, **values)

    def to_dict(self) -> dict[str, Any]:
        """The config entry this spec was built from, as it came (a copy; no defaults added)."""
        return copy.deepcopy(dict(self.entry))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) the network expects: the dataset's shape (data.catalog), resized to
        ``input_size`` when set."""
        channels, height, width = DATASET_SHAPES[self.dataset]
        if self.input_size is not None:
            if self.dataset == "nmnist" and self.input_size != height:
                raise NetworkSpecError(
                    f"{self.name}: N-MNIST frames are {height}x{width}; input_size {self.input_size} is not supported"
                )
            height = width = self.input_size
        return channels, height, width

    @property
    def rate_coded(self) -> bool:
        """Whether image inputs are rate-coded into ``num_steps`` spike frames (an SNN)."""
        return self.kind == "snn"


_FLOATS = frozenset(f.name for f in dataclasses.fields(NetworkSpec) if f.type == "float | None" or f.type == "float")
_TUPLES = frozenset(f.name for f in dataclasses.fields(NetworkSpec) if f.type.startswith("tuple"))


def as_spec(spec: NetworkSpec | Mapping[str, Any], name: str | None = None) -> NetworkSpec:
    """``spec`` itself, or the spec of a plain config entry (for callers outside the job path: tests,
    benchmarks); keys that are no network setting are ignored there."""
    if isinstance(spec, NetworkSpec):
        return spec if name is None or name == spec.name else dataclasses.replace(spec, name=name)
    return NetworkSpec.from_config(spec, name, strict=False)


@functools.cache
def network_schema() -> dict:
    """The schema's network definition (``$defs.network``), with the ``$defs`` it refers to."""
    from spikebench.config import load_schema

    schema = load_schema()
    return {**schema["$defs"]["network"], "$defs": schema["$defs"]}


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(network_schema())


def _check(settings: dict, name: str) -> None:
    """Raise NetworkSpecError naming the network and key of the first schema violation of ``settings``."""
    errors = sorted(_validator().iter_errors(settings), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    error = errors[0]
    key = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        raise NetworkSpecError(
            f"{name}: missing key {missing!r} (kind {settings.get('kind')!r}, architecture "
            f"{settings.get('architecture')!r}); add it to networks.{name} of the config"
        )
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(network_schema()["properties"]))
        raise NetworkSpecError(
            f"{name}: unknown key {extra[0]!r}; network settings are "
            f"{', '.join(sorted(network_schema()['properties']))}"
        )
    if error.validator == "enum":
        raise NetworkSpecError(
            f"{name}: {key} {error.instance!r}: expected one of {', '.join(map(str, error.validator_value))}"
        )
    raise NetworkSpecError(f"{name}: key {key!r}: {error.message}")
