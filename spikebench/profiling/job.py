"""Rule profile: one run's trained weights and test data through :func:`spikebench.profiling.profile_network`,
written as ``<results>/<run>/profile.parquet`` (its columns: :data:`spikebench.profiling.step.COLUMNS`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from spikebench import atomic, oom
from spikebench.spec import NetworkSpec, as_spec
from spikebench.training import make_optimizer

#: Defaults of config ``profile`` (as in the config schema).
DEFAULTS = {"enabled": True, "repeats": 3, "warmup_steps": 1}


def settings(config_profile: dict | None) -> dict:
    """Config ``profile`` with the schema's defaults filled in."""
    return {**DEFAULTS, **(config_profile or {})}


def _not_measured(network_id: str, spec: NetworkSpec, reason: str) -> pd.DataFrame:
    """The table of a run that could not be profiled: one row, every time null, and why."""
    from spikebench.profiling.step import COLUMNS

    row = dict.fromkeys(COLUMNS)
    row.update(network=network_id, kind=spec.kind, implementation=spec.implementation, null_reason=reason)
    return pd.DataFrame([row], columns=list(COLUMNS))


def profile_job(
    network_id: str,
    spec: NetworkSpec | dict,
    *,
    inputs: dict,
    output: str | Path,
    data_root: str | Path,
    which: str,
    seed: int,
    device: str,
    profile: dict,
    log: logging.Logger,
    data_source: str = "download",
    numerics: dict | None = None,
) -> pd.DataFrame:
    """Rule profile: pick the device, set the numerics, load the ``which`` weights and the test set (as rule
    evaluate does), profile one training batch (the first ``batch_size`` test samples) and write the table. A run
    whose training ran out of memory gets one row with null times and the reason."""
    from spikebench.data.device import load_test_data
    from spikebench.devices import apply_numerics, select_device
    from spikebench.evaluation import load_weights
    from spikebench.jobs import _nmnist_files, verify_md5
    from spikebench.profiling.step import profile_network

    spec, profile = as_spec(spec, network_id), settings(profile)
    trained = oom.trained_status(inputs["weights"])
    if trained is not None:
        reason = f"training ran out of memory ({trained.get('error')}): no weights to profile"
        log.warning("%s: %s", network_id, reason)
        table = _not_measured(network_id, spec, reason)
        atomic.write_parquet(table, output)
        return table
    with select_device(device, log=log) as lease:
        log.info("numerics: %s", json.dumps(apply_numerics(**(numerics or {})), default=str))
        md5 = verify_md5(data_source, inputs.get("manifest"))
        test = load_test_data(spec, Path(data_root), _nmnist_files(inputs), lease.device, verify_md5=md5)
        net, epoch = load_weights(Path(inputs["weights"]), spec, network_id=network_id, which=which)
        net = net.to(lease.device)
        table = profile_network(
            net,
            make_optimizer(net, spec, lease.device),
            spec,
            test,
            seed=seed,
            repeats=int(profile["repeats"]),
            warmup_steps=int(profile["warmup_steps"]),
        )
        table["network"] = network_id
        _log_summary(log, network_id, table)
        meta = {"spikebench.network": network_id, "spikebench.spec": spec.to_dict(), "spikebench.weights_epoch": epoch}
        atomic.write_parquet(table, output, metadata=meta)
    return table


def _log_summary(log: logging.Logger, network_id: str, table: pd.DataFrame) -> None:
    first = table.iloc[0]
    log.info(
        "%s: step %.2f ms (profiled %.2f ms, overhead %+.0f%%), arithmetic floor %.2f ms (step/floor %.2f); "
        "arithmetic %.0f%%, spiking %.0f%% of the profiled step",
        network_id,
        first["step_ms"],
        first["profiled_step_ms"],
        first["profiler_overhead_pct"],
        first["floor_ms"],
        first["step_over_floor"],
        first["arithmetic_pct"],
        first["spiking_pct"],
    )
