"""Why a cell of Table I/II is empty, partial or not the GPU's, and which networks did not learn.

A value that was not measured stays empty; its footnote says why (telemetry disabled, no NVML, no readable
RAPL counter, a reason the job recorded). A measured value that is not the GPU's (a CPU run: the process's
memory, the CPU package's power) says what it is. A network whose test accuracy is within
:data:`LEARNED_FACTOR` x chance is flagged: its costs are not those of a working network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from spikebench.results.cells import distinct_text, is_missing

#: Why a column beyond the study's is empty, as the job recorded it (a context column of Tables I/II).
NULL_REASON_COLUMNS = {
    "energy_above_idle_per_epoch_j": "idle_null_reason",
    "energy_above_idle_per_test_sample_mj": "idle_null_reason",
    "activation_peak_mib": "memory_null_reason",
    "saved_for_backward_mib": "saved_for_backward_null_reason",
}

#: Columns that come from the telemetry sidecar and what they measure ("power" or "memory").
TELEMETRY_QUANTITY = {
    "avg_memory_pct": "memory",
    "avg_power_w": "power",
    "energy_per_epoch_j": "power",
    "energy_per_train_sample_mj": "power",
    "energy_j": "power",
    "energy_per_test_sample_mj": "power",
    "energy_above_idle_per_epoch_j": "power",
    "energy_above_idle_per_test_sample_mj": "power",
    "activation_peak_mib": "memory",
}

#: Chance accuracy (%) of the study's 10-class tasks; a network whose test accuracy is below
#: LEARNED_FACTOR x chance is flagged as not having learned.
CHANCE_PCT = 10.0
LEARNED_FACTOR = 2.0


def not_learned(t2: pd.DataFrame) -> dict[str, float]:
    """Networks of Table II whose test accuracy (%) is within LEARNED_FACTOR x chance: {network: accuracy}."""
    acc = pd.to_numeric(t2["test_acc"], errors="coerce").astype(float)
    low = acc < LEARNED_FACTOR * CHANCE_PCT
    return dict(zip(t2.loc[low, "network"], acc[low]))


def not_learned_note(network: str, accuracy_pct: float) -> str:
    """The footnote of a network that did not learn."""
    return (
        f"did not learn: {network}'s test accuracy {accuracy_pct:.1f}% is within {LEARNED_FACTOR:g}x of chance "
        f"({CHANCE_PCT:g}% for 10 classes), so its costs are not those of a working network"
    )


def learning_notes(table: pd.DataFrame, flagged: Mapping[str, float]) -> dict[tuple[int, str], str]:
    """Footnotes on the ``network`` cell of every flagged network's row of a Table I/II frame."""
    return {(i, "network"): not_learned_note(n, flagged[n]) for i, n in enumerate(table["network"]) if n in flagged}


def source_kind(source: Any) -> str:
    """ "nvml", "cpu" or "none" from a telemetry source (summaries may join several: "nvml+cpu")."""
    if is_missing(source) or str(source) in ("", "none"):
        return "none"
    source = str(source)
    if "nvml" in source:
        return "nvml"
    if "cpu" in source:
        return "cpu"
    return source


def missing_reason(column: str, row: Mapping[str, Any], telemetry_enabled: bool = True) -> str:
    """Why `column` of a table row (Table I/II, with its context columns) has no value."""
    quantity = TELEMETRY_QUANTITY.get(column)
    device = row.get("device") or "an unknown device"
    recorded = row.get(NULL_REASON_COLUMNS.get(column, ""))
    if not is_missing(recorded) and recorded:
        return str(recorded)
    if quantity is None:
        return f"{column} was not recorded for this network"
    what = "power (and so energy)" if quantity == "power" else "device memory"
    if not telemetry_enabled:
        return f"telemetry disabled in the configuration (telemetry.enabled: false): {what} not measured"
    kind = source_kind(row.get("telemetry_source"))
    if kind == "none":
        if str(device).startswith("cuda"):
            return f"no telemetry on {device}: NVML could not be read, so {what} was not measured"
        return f"no telemetry on {device}: {what} not measured"
    if kind == "cpu":
        if quantity == "power":
            return (
                f"no NVIDIA GPU (ran on {device}): power not measured "
                "(no NVML, and the CPU's RAPL energy counter is not readable)"
            )
        return (
            f"no NVIDIA GPU (ran on {device}): memory not measured; "
            "peak_memory_mib is the process's peak resident memory instead"
        )
    if kind == "nvml":
        return f"the GPU reported no {what} reading through NVML"
    return f"{what} not measured (telemetry source {kind!r})"


def measured_note(column: str, row: Mapping[str, Any]) -> str | None:
    """What a measured telemetry value means when it is not the GPU's (a CPU run), else None."""
    quantity = TELEMETRY_QUANTITY.get(column)
    if quantity is None or source_kind(row.get("telemetry_source")) != "cpu":
        return None
    device = row.get("device") or "the CPU"
    if quantity == "memory":
        return (
            f"no NVIDIA GPU (ran on {device}): the process's resident memory in % of the machine's RAM, not GPU memory"
        )
    if str(row.get("energy_source") or "") == "rapl":
        return f"no NVIDIA GPU (ran on {device}): CPU package power from RAPL (the whole package), not GPU power"
    return None


def explain_missing(
    table: pd.DataFrame, telemetry_enabled: bool = True, columns: Iterable[str] | None = None
) -> dict[tuple[int, str], str]:
    """Footnotes for a Table I/II frame: {(row position, column): why it is empty, partial or not the GPU's}."""
    columns = list(columns) if columns is not None else [c for c in table.columns if c in TELEMETRY_QUANTITY]
    notes: dict[tuple[int, str], str] = {}
    records = table.to_dict("records")
    for i, row in enumerate(records):
        for column in columns:
            if column not in row:
                continue
            if is_missing(row[column]):
                notes[(i, column)] = missing_reason(column, row, telemetry_enabled)
                continue
            parts = [measured_note(column, row)]
            if "telemetry_epochs" in row and 0 < row["telemetry_epochs"] < row["epochs"]:
                parts.append(
                    f"telemetry for {row['telemetry_epochs']} of {row['epochs']} epochs only; "
                    "the average is over those epochs"
                )
            text = "; ".join(p for p in parts if p)
            if text:
                notes[(i, column)] = text
    return notes


def notes_column(table: pd.DataFrame, notes: Mapping[tuple[int, str], str]) -> pd.Series:
    """The footnotes of each row as one text cell ("column: why; ..."), for the CSV."""
    per_row: dict[int, list[str]] = {}
    for (i, column), text in notes.items():
        per_row.setdefault(i, []).append(f"{column}: {text}")
    return pd.Series([" | ".join(per_row.get(i, [])) for i in range(len(table))], index=table.index, dtype=object)


def missing_context(epochs: pd.DataFrame) -> dict[str, Any]:
    """Device and telemetry source of a network's epochs table, as :func:`missing_reason` needs them."""
    return {"device": distinct_text(epochs["device"]), "telemetry_source": distinct_text(epochs["telemetry_source"])}


def _energy_source_notes(table: pd.DataFrame) -> dict[tuple[int, str], str]:
    """A footnote on every empty ``energy_source`` cell: there was no energy to name a source for."""
    return (
        {
            (i, "energy_source"): "no energy measured (no NVML energy counter or power readings, no readable RAPL "
            "counter), so there is no energy source"
            for i, value in enumerate(table["energy_source"])
            if is_missing(value) or value == ""
        }
        if "energy_source" in table
        else {}
    )


def _lif_notes(table: pd.DataFrame) -> dict[tuple[int, str], str]:
    """A footnote on ``lif_backend_used`` where the Triton kernel fell back to the eager loop (and why), or where
    nothing is recorded (an ANN runs no LIF layer; older results)."""
    if "lif_backend_used" not in table or "lif_backend_note" not in table:
        return {}
    return {
        (i, "lif_backend_used"): str(note)
        for i, note in enumerate(table["lif_backend_note"])
        if not is_missing(note) and note != ""
    }


#: The timing columns a busy machine inflates (footnoted where the load exceeded the job's CPUs).
TIME_COLUMNS = ("avg_epoch_time_s", "median_epoch_time_s", "train_time_per_sample_ms", "test_time_s")


def _load_notes(table: pd.DataFrame) -> dict[tuple[int, str], str]:
    """A footnote on the time columns of a job that ran while the machine's 1-minute load average exceeded the
    CPUs it had: other work shared them, so its times (and their ratios) are inflated."""
    if "load_1min_max" not in table or "cpus_available" not in table:
        return {}
    notes = {}
    for i, (load, cpus) in enumerate(zip(table["load_1min_max"], table["cpus_available"])):
        if is_missing(load) or is_missing(cpus) or not float(load) > float(cpus):
            continue
        text = (
            f"the machine's 1-minute load average reached {float(load):.1f} with {int(cpus)} CPUs for this job: "
            "other work shared them, so its times are inflated"
        )
        notes.update({(i, column): text for column in TIME_COLUMNS if column in table})
    return notes


#: What ``saved_for_backward_mib`` counts (its footnote on every measured cell; spikebench.saved_memory).
SAVED_FOR_BACKWARD = (
    "tensors saved for backward by autograd in one training batch of the run's batch size, each storage counted "
    "once; excludes the weights and their gradients, optimiser state, the dataset and allocator overhead"
)


def _saved_notes(table: pd.DataFrame) -> dict[tuple[int, str], str]:
    """A footnote on every ``saved_for_backward_mib`` cell: what it counts, the model's prediction, and on CUDA
    that the allocator's ``activation_peak_mib`` is another quantity; where empty, why."""
    if "saved_for_backward_mib" not in table:
        return {}
    notes = {}
    for i, row in enumerate(table.to_dict("records")):
        value, reason = row["saved_for_backward_mib"], row.get("saved_for_backward_null_reason")
        if is_missing(value):
            recorded = not is_missing(reason) and reason
            notes[(i, "saved_for_backward_mib")] = (
                str(reason) if recorded else "not recorded (results from before saved_for_backward_mib existed)"
            )
            continue
        parts = [SAVED_FOR_BACKWARD]
        predicted = row.get("saved_for_backward_predicted_mib")
        if not is_missing(predicted):
            parts.append(f"the model of BPTT's saved tensors predicts {float(predicted):.4g} MiB")
        if not is_missing(row.get("activation_peak_mib")):
            parts.append(
                "not activation_peak_mib's quantity: that is the allocator's peak over the training phase, "
                "which also holds temporaries and gradients"
            )
        notes[(i, "saved_for_backward_mib")] = "; ".join(parts)
    return notes


def table_notes(table: pd.DataFrame, telemetry_enabled: bool, flagged: Mapping[str, float]) -> dict:
    """All footnotes of a Table I/II frame: missing telemetry, empty energy source, the LIF backend where it fell
    back, what the memory saved for backward counts, networks that did not learn."""
    return {
        **explain_missing(table, telemetry_enabled),
        **_energy_source_notes(table),
        **_lif_notes(table),
        **_saved_notes(table),
        **_load_notes(table),
        **learning_notes(table, flagged),
    }
