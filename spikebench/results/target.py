"""The cost of reaching an accuracy: training time, samples and energy until a network first reaches a target
validation accuracy, the cost of the job (an SNN that needs more epochs to get as far costs more than its cost
per epoch says).

The target of an experiment is the config's ``target_accuracy.val_acc_pct`` for it, else the lower of its two
compared networks' best validation accuracies (each the mean over its seeds of the run's highest validation
accuracy) times ``target_accuracy.factor`` (default 0.95): a level both networks reach. The compared networks are
those of the experiment's first pair (:func:`spikebench.results.spiking_pairs`: the SNN and its ANN; experiment
3, the N-MNIST and the MNIST SNN). Every run of the experiment (seeds, sweep variants, snnTorch twins) is measured
against that one target.

Per run: the first epoch whose validation accuracy reaches the target; the training time (train phases only, the
validation passes left out) and the energy of the train phases (null where not measured) summed through that
epoch, and the training samples seen by then. A run that never reaches it has null figures and
``reached_target`` False: it is "not reached", never a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from spikebench.results.networks import spiking_pairs

#: Default ``target_accuracy.factor``: the target is this fraction of the lower best validation accuracy.
FACTOR = 0.95
#: The figures per run, with their units in the names.
TARGET_FIGURES = ("time_to_target_s", "samples_to_target", "energy_to_target_j")


def experiment_targets(
    best_val_pct: Mapping[str, float], networks: Mapping[str, Mapping], settings: Mapping | None = None
) -> dict[int, dict]:
    """Per experiment: ``target_val_acc_pct`` and how it was chosen (``target_source``).

    ``best_val_pct``: each network's best validation accuracy in % (mean over its seeds); ``settings``: the config's
    ``target_accuracy`` (``factor``, ``val_acc_pct`` {experiment: %})."""
    settings = settings or {}
    factor = float(settings.get("factor", FACTOR))
    fixed = {int(k): float(v) for k, v in (settings.get("val_acc_pct") or {}).items()}
    targets: dict[int, dict] = {}
    for pair in spiking_pairs(networks):
        experiment = int(pair["experiment"])
        if experiment in targets:
            continue
        num, den = pair["numerator"], pair["denominator"]
        if experiment in fixed:
            targets[experiment] = {"target_val_acc_pct": fixed[experiment], "target_source": "config"}
            continue
        best = [float(best_val_pct.get(n, math.nan)) for n in (num, den)]
        value = min(best) * factor if not any(math.isnan(b) for b in best) else math.nan
        targets[experiment] = {
            "target_val_acc_pct": value,
            "target_source": f"{factor:g} x the lower best validation accuracy of {num} and {den}",
        }
    return targets


def to_target(epochs: pd.DataFrame, target_pct: float) -> dict:
    """One run's time, samples and energy until its validation accuracy first reaches ``target_pct`` (%)."""
    out = {name: math.nan for name in TARGET_FIGURES} | {"reached_target": False, "epochs_to_target": None}
    if math.isnan(target_pct) or epochs.empty:
        return out
    e = epochs.sort_values("epoch", kind="stable")
    val = pd.to_numeric(e["val_acc"], errors="coerce").to_numpy(dtype=float) * 100
    reached = np.flatnonzero(val >= target_pct - 1e-9)
    if not len(reached):
        return out
    upto = e.iloc[: int(reached[0]) + 1]
    train_s = pd.to_numeric(upto.get("train_time_s", upto["epoch_time_s"]), errors="coerce")
    energy = pd.to_numeric(upto.get("train_energy_j", pd.Series(math.nan, index=upto.index)), errors="coerce")
    return {
        "time_to_target_s": float(train_s.sum()),
        "samples_to_target": float(pd.to_numeric(upto["n_train"], errors="coerce").sum()),
        "energy_to_target_j": float(energy.sum()) if energy.notna().all() else math.nan,
        "reached_target": True,
        "epochs_to_target": int(upto["epoch"].iloc[-1]),
    }
