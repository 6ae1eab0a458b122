"""Evaluating a trained network on the official test set, and the classification metrics.

``classification_metrics`` uses the standard (scikit-learn) definitions: per-class precision = TP / predicted,
recall = TP / true, F1 = 2PR / (P + R); 0 where the denominator is 0 (scikit-learn's ``zero_division=0``);
macro averages are the unweighted means of the per-class values (macro F1 is the mean of the per-class F1,
not the F1 of the macro precision and recall). A class absent from both the labels and the predictions has no
defined precision or recall: its per-class values are ``None`` and it is left out of the macro averages, as
scikit-learn does by default (``labels`` = the classes present in either).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from spikebench.data.device import DeviceDataset
from spikebench.implementation import implementation_of
from spikebench.models import backend_record, reset_backend_record
from spikebench.opcounts import OperationCounter
from spikebench.spec import NetworkSpec, as_spec
from spikebench.training import peak_memory, reset_peak_memory, run_batches, synchronize

_LOG = logging.getLogger("spikebench.evaluation")


class WeightsFileError(ValueError):
    """A weights file that cannot be read or does not belong to the network."""


#: The settings of a network entry that change what the trained network computes from an input (its input,
#: architecture and sizes, the LIF neuron and surrogate, the number of time steps). ``load_weights`` stops when
#: one of them differs between the weights file and the config. Not compared, as they only shape training or
#: label the run: experiment, epochs, optimizer, lr, batch_size, dropout (inactive at test time), and the
#: spike-count loss's correct_rate/incorrect_rate.
NETWORK_SETTINGS = (
    "dataset",
    "input_size",
    "kind",
    "architecture",
    "hidden",
    "channels",
    "fc",
    "num_steps",
    "beta",
    "threshold",
    "surrogate",
)


def _check_settings(weights_path: Path, stored: object, spec: NetworkSpec, network_id: str) -> None:
    """Raise ``WeightsFileError`` naming every ``NETWORK_SETTINGS`` key whose stored and configured values differ."""
    if not isinstance(stored, dict):
        raise WeightsFileError(
            f"weights file {weights_path} holds no training settings ('spec'), so it cannot be "
            f"checked against the config; delete it and train {network_id} again"
        )
    configured = spec.to_dict()  # the config entry as stored with the weights (no defaults added)
    differ = [
        f"{key}: {stored.get(key)!r} in the weights file vs {configured.get(key)!r} in the config"
        for key in NETWORK_SETTINGS
        if stored.get(key) != configured.get(key)
    ]
    if differ:
        raise WeightsFileError(
            f"weights file {weights_path} was trained with other settings of {network_id} "
            f"than the config's: "
            + "; ".join(differ)
            + f". Train {network_id} again (delete the weights file) or restore the setting."
        )


def classification_metrics(y_true, y_pred, n_classes: int = 10) -> dict:
    """Accuracy, macro precision/recall/F1, per-class recall and precision, confusion matrix (rows: true)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds classes outside 0..{n_classes - 1}")
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes)
    tp = np.diag(confusion).astype(np.float64)
    n_true, n_pred = confusion.sum(1).astype(np.float64), confusion.sum(0).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros(n_classes), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros(n_classes), where=n_true > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    present = (n_true > 0) | (n_pred > 0)

    def per_class(values: np.ndarray) -> list[float | None]:
        return [float(v) if p else None for v, p in zip(values, present)]

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else math.nan

    return {
        "accuracy": float(tp.sum() / max(y_true.size, 1)) if y_true.size else math.nan,
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
        "f1_macro": macro(f1),
        "per_class_recall": per_class(recall),
        "per_class_precision": per_class(precision),
        "per_class_f1": per_class(f1),
        "confusion_matrix": confusion.tolist(),
    }


def load_weights(
    weights_path: Path, spec: NetworkSpec | dict, *, network_id: str, which: str = "last"
) -> tuple[torch.nn.Module, int | None]:
    """The network of ``spec`` with the ``which`` (last | best_val) weights of ``weights_path``, and their epoch.

    The settings stored with the weights must equal the config's in every key of ``NETWORK_SETTINGS`` (those
    that change the network's computation: dataset, input_size, kind, architecture, hidden, channels, fc,
    num_steps, beta, threshold, surrogate); training-only settings (epochs, lr, batch_size, dropout, ...) may
    differ. A file without stored settings is refused.
    """
    weights_path, spec = Path(weights_path), as_spec(spec, network_id)
    if which not in ("last", "best_val"):
        raise ValueError(f"evaluation weights {which!r}: expected 'last' or 'best_val'")
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights file {weights_path} of {network_id} not found; train the network first")
    try:
        saved = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file is unusable
        # Only the type of torch.load's error: its text advises weights_only=False, i.e. running the file's code.
        raise WeightsFileError(
            f"weights file {weights_path} is unreadable ({type(exc).__name__}); delete it and train {network_id} again"
        ) from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise WeightsFileError(f"weights file {weights_path} is not a spikebench weights file (no state_dict)")
    if saved.get("network") not in (None, network_id):
        raise WeightsFileError(
            f"weights file {weights_path} holds network {saved.get('network')!r}, not {network_id!r}"
        )
    _check_settings(weights_path, saved.get("spec"), spec, network_id)
    if which == "best_val":
        state, epoch = saved.get("best_val_state_dict"), saved.get("best_val_epoch")
        if state is None:
            raise WeightsFileError(
                f"weights file {weights_path} has no best-validation weights "
                f"(trained without a validation set); use evaluation.weights: last"
            )
    else:
        state, epoch = saved["state_dict"], saved.get("epoch")
    net = implementation_of(spec).build(spec)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        diffs = [
            f"{k}: file {got.get(k, 'missing')} vs network {want.get(k, 'missing')}"
            for k in sorted(set(want) | set(got))
            if want.get(k) != got.get(k)
        ]
        raise WeightsFileError(
            f"weights file {weights_path} does not fit {network_id} "
            f"({spec.kind} {spec.architecture}): "
            + "; ".join(diffs[:6])
            + (f"; ... {len(diffs) - 6} more" if len(diffs) > 6 else "")
        )
    net.load_state_dict(state)
    return net, (int(epoch) if epoch is not None else None)


def _timed_predictions(
    net: torch.nn.Module, spec: NetworkSpec, test: DeviceDataset, device: torch.device, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """The predictions of one pass over ``test`` and its wall time in seconds (the device synchronized before
    and after). No operation counting runs in it: its hooks would add their cost to the test time and energy."""
    synchronize(device)
    t0 = time.perf_counter()
    _, _, preds = run_batches(net, spec, test, spec.batch_size, generator, want_predictions=True)
    synchronize(device)
    return preds, time.perf_counter() - t0


def _count_operations(
    net: torch.nn.Module, spec: NetworkSpec, test: DeviceDataset, device: torch.device, seed: int
) -> OperationCounter:
    """The operation counts of the test set in a pass of their own, after the timed one and outside every timed
    or telemetry phase: the same inputs (the rate-coding generator seeded as for the timed pass, so the same
    spikes), the counting hooks installed only here and removed afterwards even when the pass fails."""
    generator = torch.Generator(device=device).manual_seed(int(seed))
    torch.manual_seed(int(seed))  # implementation snntorch: spikegen.rate draws from the global RNG
    counter = OperationCounter(net)
    try:
        run_batches(net, spec, test, spec.batch_size, generator, counter=counter)
    finally:
        counter.close()
    return counter


def _log_result(log: logging.Logger, network_id: str, which: str, epoch: int | None, result: dict) -> None:
    """One line: the test accuracy, macro F1 and throughput of ``network_id``."""
    log.info(
        "%s on the test set (%s weights, epoch %s): accuracy %.4f, macro F1 %.4f, %.0f samples/s",
        network_id,
        which,
        epoch,
        result["accuracy"],
        result["f1_macro"],
        result["test_samples_per_s"],
    )


def evaluate_network(
    weights_path: Path,
    spec: NetworkSpec | dict,
    test: DeviceDataset,
    *,
    network_id: str,
    device: torch.device,
    which: str = "last",
    seed: int = 0,
    telemetry=None,
    log: logging.Logger | None = None,
    count_operations: bool = True,
) -> dict:
    """Test-set metrics, time and memory of the trained network (the dict that ``test.json`` holds).

    With ``count_operations`` the dict also holds ``operations`` (network totals per sample,
    :mod:`spikebench.opcounts`) and ``layer_operations`` (one dict per layer, for ``layers.parquet``), counted in
    a second, untimed pass over the same inputs after the timed one. ``lif_backend_used`` (and
    ``lif_backend_fallback_reason``) say which LIF recurrence ran (:func:`spikebench.models.backend_record`). The
    test set fits the network (checked when loaded, ``spikebench.data.device``)."""
    spec, log = as_spec(spec, network_id), log or _LOG
    device = torch.device(device)
    net, epoch = load_weights(weights_path, spec, network_id=network_id, which=which)
    net = net.to(device)
    reset_backend_record()  # lif_backend_used: what this evaluation's passes ran
    generator = torch.Generator(device=device).manual_seed(int(seed))
    torch.manual_seed(int(seed))  # implementation snntorch: spikegen.rate draws from the global RNG
    reset_peak_memory(device)
    if telemetry is not None:
        telemetry.phase("test", None)
    preds, elapsed = _timed_predictions(net, spec, test, device, generator)
    memory_mib, memory_source = peak_memory(device)  # before telemetry.phase, which resets CUDA's peak
    if telemetry is not None:
        telemetry.phase("idle", None)
    counter = _count_operations(net, spec, test, device, seed) if count_operations else None
    metrics = classification_metrics(test.labels.cpu().numpy(), preds.cpu().numpy())
    result = {
        "network": network_id,
        "experiment": spec.experiment,
        "dataset": spec.dataset,
        "kind": spec.kind,
        "weights": which,
        "epoch_of_weights": epoch,
        "n_test": len(test),
        **metrics,
        "test_time_s": elapsed,
        "test_samples_per_s": len(test) / elapsed if elapsed > 0 else math.nan,
        "peak_memory_mib": memory_mib,
        "memory_source": memory_source,
        "device": str(device),
        **{key: value for key, value in backend_record().items() if key != "lif_backend"},
    }
    if telemetry is not None:
        result["telemetry"] = telemetry.phase_summary("test")
    if counter is not None:
        result["layer_operations"] = counter.layer_rows()
        result["operations"] = counter.summary(result["layer_operations"])
    _log_result(log, network_id, which, epoch, result)
    return result
