"""Telemetry sidecar: summary arithmetic, a deterministic fake NVML, the real CPU path, shutdown."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from spikebench import hardware, telemetry as T

PROJECT = Path(__file__).resolve().parents[1]
NVML_COLUMNS = [
    "power_w",
    "energy_counter_mj",
    "memory_used_mib",
    "memory_total_mib",
    "memory_used_pct",
    "gpu_util_pct",
    "memory_util_pct",
    "temperature_c",
    "sm_clock_mhz",
]
MEASUREMENTS = [c for c in T.SAMPLE_SCHEMA if c not in ("time_s", "timestamp", "phase", "epoch", "source", "error")]


# --------------------------------------------------------------------------- a deterministic fake NVML


class FakeNVMLError(Exception):
    def __init__(self, value: int = 999, message: str = "Unknown Error") -> None:
        super().__init__(message)
        self.value = value
        self.message = message

    def __str__(self) -> str:
        return self.message


class FakeNotSupported(FakeNVMLError):
    def __init__(self) -> None:
        super().__init__(3, "Not Supported")


class FakeNVML:
    """The few pynvml functions the sampler uses, over fake GPUs with scripted readings.

    ``power_w`` is a callable (so a test can tie it to the job's phase); the energy counter
    advances by exactly ``counter_step_mj`` per read; ``fail`` makes every device read raise.
    """

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNotSupported
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, gpus: list[dict[str, Any]], energy_counter: bool = True, counter_step_mj: int = 1000) -> None:
        self.gpus = gpus
        for gpu in gpus:
            gpu.setdefault("counter_mj", 7_000_000_000)
        self.energy_counter = energy_counter
        self.counter_step_mj = counter_step_mj
        self.fail: str | None = None
        self.init_calls = 0
        self.shutdown_calls = 0
        self.uuid_requests: list[str] = []
        self.index_requests: list[int] = []

    # library
    def nvmlInit(self) -> None:
        self.init_calls += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.65.06"

    # handles
    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> dict[str, Any]:
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        self.uuid_requests.append(uuid)
        for gpu in self.gpus:
            if gpu["uuid"] == uuid:
                return gpu
        raise FakeNVMLError(6, "Not Found")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        self.index_requests.append(index)
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(2, "Invalid Argument")
        return self.gpus[index]

    # readings
    def _check(self) -> None:
        if self.fail:
            raise FakeNVMLError(15, self.fail)

    def nvmlDeviceGetName(self, gpu: dict[str, Any]) -> bytes:
        self._check()
        return gpu["name"].encode()

    def nvmlDeviceGetPowerUsage(self, gpu: dict[str, Any]) -> int:
        self._check()
        return round(gpu["power_w"]() * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: dict[str, Any]) -> int:
        self._check()
        if not self.energy_counter:
            raise FakeNotSupported()
        gpu["counter_mj"] += self.counter_step_mj
        return gpu["counter_mj"]

    def nvmlDeviceGetMemoryInfo(self, gpu: dict[str, Any]) -> SimpleNamespace:
        self._check()
        total = gpu["memory_total_mib"] * 2**20
        used = gpu["memory_used_mib"] * 2**20
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, gpu: dict[str, Any]) -> SimpleNamespace:
        self._check()
        return SimpleNamespace(gpu=gpu["gpu_util"], memory=gpu["memory_util"])

    def nvmlDeviceGetTemperature(self, gpu: dict[str, Any], sensor: int) -> int:
        self._check()
        assert sensor == self.NVML_TEMPERATURE_GPU
        return gpu["temperature"]

    def nvmlDeviceGetClockInfo(self, gpu: dict[str, Any], clock: int) -> int:
        self._check()
        assert clock in (self.NVML_CLOCK_SM, self.NVML_CLOCK_MEM)
        return gpu["sm_clock"] if clock == self.NVML_CLOCK_SM else gpu.get("mem_clock", 6251)

    # provenance (hardware_info / gpu_state)
    def nvmlDeviceGetApplicationsClock(self, gpu: dict[str, Any], clock: int) -> int:
        self._check()
        if "app_clocks" not in gpu:
            raise FakeNotSupported()
        return gpu["app_clocks"][clock]

    def nvmlDeviceGetPowerManagementLimit(self, gpu: dict[str, Any]) -> int:
        self._check()
        return gpu.get("power_limit_mw", 72_000)

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu: dict[str, Any]) -> int:
        self._check()
        return gpu.get("enforced_power_limit_mw", 70_000)

    def nvmlDeviceGetPersistenceMode(self, gpu: dict[str, Any]) -> int:
        self._check()
        return gpu.get("persistence", 1)


UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def two_gpus(power_b: Callable[[], float] = lambda: 120.0) -> list[dict[str, Any]]:
    """GPU 0 (busy with another job) and GPU 1 (ours), distinguishable in every reading."""
    return [
        {
            "uuid": f"GPU-{UUID_A}",
            "name": "Fake A100",
            "power_w": lambda: 300.0,
            "memory_used_mib": 20000,
            "memory_total_mib": 40960,
            "gpu_util": 99,
            "memory_util": 80,
            "temperature": 80,
            "sm_clock": 1410,
        },
        {
            "uuid": f"GPU-{UUID_B}",
            "name": "Fake L4",
            "power_w": power_b,
            "memory_used_mib": 6144,
            "memory_total_mib": 24576,
            "gpu_util": 57,
            "memory_util": 31,
            "temperature": 61,
            "sm_clock": 1740,
        },
    ]


@pytest.fixture
def torch_uuid(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """Set what PyTorch reports as the job's GPU UUID (no CUDA on the test machine)."""

    def set_uuid(uuid: str | None) -> None:
        # one patch for both users: the NVML reader calls it through the hardware module too
        monkeypatch.setattr(hardware, "_torch_gpu_uuid", lambda index: uuid)

    return set_uuid


def rapl_files_readable(root: Path = T.RAPL_ROOT) -> bool:
    """Independent check: are all package-domain RAPL counters readable on this machine?"""
    domains = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            name = "package"
        if name.startswith("package"):
            domains.append(d)
    try:
        for d in domains:
            int((d / "energy_uj").read_text())
            int((d / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return False
    return bool(domains)


# --------------------------------------------------------------------------- summarize: exact arithmetic


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A telemetry table from partial rows (missing values null), typed as the sampler's."""
    df = pd.DataFrame(rows).reindex(columns=list(T.SAMPLE_SCHEMA))
    df["timestamp"] = pd.to_datetime(1.8e9 + df["time_s"].astype(float), unit="s", utc=True)
    return df.astype("object").where(df.notna(), None).astype(T.SAMPLE_SCHEMA)


def gpu_rows(phase: str, epoch: int | None, times: list[float], **columns: list[Any]) -> list[dict[str, Any]]:
    return [
        {"time_s": t, "phase": phase, "epoch": epoch, "source": "nvml", **{k: v[i] for k, v in columns.items()}}
        for i, t in enumerate(times)
    ]


def epoch0_train(counter: list[Any] | None = None) -> list[dict[str, Any]]:
    """Train, epoch 0: non-uniform times 0, 1, 2, 4 s and a power ramp 100 -> 300 W."""
    return gpu_rows(
        "train",
        0,
        [0.0, 1.0, 2.0, 4.0],
        power_w=[100.0, 200.0, 300.0, 300.0],
        energy_counter_mj=counter or [None] * 4,
        memory_used_mib=[1000.0, 2000.0, 3000.0, 3000.0],
        memory_total_mib=[8000.0] * 4,
        memory_used_pct=[12.5, 25.0, 37.5, 37.5],
        gpu_util_pct=[0.0, 50.0, 100.0, 100.0],
        cpu_util_pct=[None, 100.0, 100.0, 100.0],
        torch_peak_allocated_mib=[None, None, None, 512.0],
    )


def other_phases() -> list[dict[str, Any]]:
    """Val of epoch 0, train of epoch 1 and an idle stretch, with readings that must not leak in."""
    return (
        gpu_rows(
            "val",
            0,
            [4.0, 5.0],
            power_w=[50.0, 50.0],
            energy_counter_mj=[6_000_000, 6_050_000],
            memory_used_mib=[9000.0, 9000.0],
            memory_used_pct=[90.0, 90.0],
            torch_peak_allocated_mib=[None, 64.0],
        )
        + gpu_rows("idle", None, [5.0, 9.0], power_w=[10.0, 10.0], energy_counter_mj=[6_060_000, 6_100_000])
        + gpu_rows(
            "train",
            1,
            [9.0, 10.0],
            power_w=[999.0, 999.0],
            energy_counter_mj=[6_200_000, 7_200_000],
            memory_used_mib=[7777.0, 7777.0],
            torch_peak_allocated_mib=[None, 4096.0],
        )
    )


def test_summarize_energy_from_counter_and_time_weighted_averages() -> None:
    # The counter says 900 J; integrating the power ramp would give 1000 J: the counter wins.
    counter = [5_000_000, 5_100_000, 5_500_000, 5_900_000]
    df = table(epoch0_train(counter) + other_phases())
    s = T.summarize(df, "train", epoch=0)
    assert s["energy_source"] == "nvml_energy_counter"
    assert s["energy_j"] == pytest.approx(900.0, abs=1e-9)
    assert s["duration_s"] == pytest.approx(4.0)
    assert s["avg_power_w"] == pytest.approx(900.0 / 4.0)
    # Time-weighted (trapezoids over 1, 1, 2 s): (1500 + 2500 + 2 * 3000) / 4.
    assert s["avg_memory_mib"] == pytest.approx(2500.0)
    assert s["peak_memory_mib"] == pytest.approx(3000.0)
    assert s["avg_memory_pct"] == pytest.approx(31.25)
    assert s["peak_memory_pct"] == pytest.approx(37.5)
    assert s["avg_gpu_util_pct"] == pytest.approx((25.0 + 75.0 + 200.0) / 4.0)
    assert s["avg_cpu_util_pct"] == pytest.approx(100.0)  # the null first reading is left out
    assert s["torch_peak_allocated_mib"] == pytest.approx(512.0)
    assert s["telemetry_source"] == "nvml"
    assert s["n_samples"] == 4
    assert set(s) == set(T.SUMMARY_KEYS)


def test_summarize_integrates_power_when_the_counter_is_missing() -> None:
    df = table(epoch0_train(counter=None) + other_phases())
    s = T.summarize(df, "train", epoch=0)
    assert s["energy_source"] == "nvml_power_integrated"
    assert s["energy_j"] == pytest.approx(150.0 + 250.0 + 600.0)  # trapezoids: 1 s, 1 s, 2 s
    assert s["avg_power_w"] == pytest.approx(1000.0 / 4.0)


def test_summarize_train_and_val_sum_intervals_not_the_gap_between_them() -> None:
    rows = (
        gpu_rows("train", 3, [0.0, 2.0], power_w=[100.0, 100.0], energy_counter_mj=[1_000_000, 1_200_000])
        # 0.5 s between the phases (e.g. a checkpoint save) at 400 W: belongs to neither.
        + gpu_rows("idle", None, [2.0, 2.5], power_w=[400.0, 400.0], energy_counter_mj=[1_200_000, 1_400_000])
        + gpu_rows(
            "val", 3, [2.5, 3.0, 3.5], power_w=[50.0, 50.0, 50.0], energy_counter_mj=[1_400_000, 1_425_000, 1_450_000]
        )
        + gpu_rows("train", 4, [3.5, 4.5], power_w=[300.0, 300.0], energy_counter_mj=[1_450_000, 1_750_000])
    )
    df = table(rows)
    s = T.summarize(df, ("train", "val"), epoch=3)
    assert s["energy_source"] == "nvml_energy_counter"
    assert s["energy_j"] == pytest.approx(200.0 + 50.0)
    assert s["duration_s"] == pytest.approx(2.0 + 1.0)
    assert s["n_samples"] == 5
    assert s["avg_power_w"] == pytest.approx(250.0 / 3.0)
    no_counter = table([{**r, "energy_counter_mj": None} for r in rows])
    s2 = T.summarize(no_counter, ("train", "val"), epoch=3)
    assert s2["energy_source"] == "nvml_power_integrated"
    assert s2["energy_j"] == pytest.approx(200.0 + 50.0)
    # Rows out of time order are summarised the same (ties in time_s keep their table order).
    assert T.summarize(df.iloc[[5, 6, 0, 1, 2, 3, 4, 7, 8]], ("train", "val"), epoch=3) == s


def test_summarize_never_invents_energy_across_missing_readings() -> None:
    rows = gpu_rows(
        "test", None, [0.0, 1.0, 2.0, 3.0], power_w=[100.0, None, 300.0, 300.0], energy_counter_mj=[None, 5, 6, 7]
    )
    s = T.summarize(table(rows), "test")
    assert s["energy_j"] is None and s["energy_source"] is None
    assert s["avg_power_w"] == pytest.approx(300.0)  # only the pair (2 s, 3 s) has both readings
    # A counter that goes backwards (driver reload) is not used; integrated power is.
    rows = gpu_rows("test", None, [0.0, 1.0], power_w=[100.0, 100.0], energy_counter_mj=[5_000, 10])
    s = T.summarize(table(rows), "test")
    assert (s["energy_source"], s["energy_j"]) == ("nvml_power_integrated", pytest.approx(100.0))


def test_summarize_cpu_energy_from_rapl_or_nothing() -> None:
    base = {
        "phase": "train",
        "epoch": 0,
        "source": "cpu",
        "rss_mib": 500.0,
        "memory_used_mib": 500.0,
        "memory_total_mib": 16000.0,
        "memory_used_pct": 3.125,
    }
    rows = [{**base, "time_s": t, "cpu_energy_uj": e} for t, e in [(0.0, 10_000_000), (2.0, 70_000_000)]]
    s = T.summarize(table(rows), "train", 0)
    assert s["energy_source"] == "rapl" and s["energy_j"] == pytest.approx(60.0)
    assert s["avg_power_w"] == pytest.approx(30.0) and s["telemetry_source"] == "cpu"
    assert s["avg_gpu_util_pct"] is None
    s = T.summarize(table([{**r, "cpu_energy_uj": None} for r in rows]), "train", 0)
    assert s["energy_j"] is None and s["energy_source"] is None and s["avg_power_w"] is None
    assert s["avg_memory_pct"] == pytest.approx(3.125)


def test_summarize_empty_selection_and_bad_input() -> None:
    df = table(epoch0_train())
    s = T.summarize(df, "test")
    assert s["n_samples"] == 0 and all(v is None for k, v in s.items() if k != "n_samples")
    with pytest.raises(ValueError, match="unknown phase"):
        T.summarize(df, "training")
    with pytest.raises(ValueError, match="lacks columns"):
        T.summarize(df.drop(columns=["power_w"]), "train")


# --------------------------------------------------------------------------- the sampler on a fake NVML


def run_epoch(sampler: T.TelemetrySampler, epoch: int, train_s: float, val_s: float) -> None:
    sampler.phase("train", epoch)
    time.sleep(train_s)
    sampler.phase("val", epoch)
    time.sleep(val_s)
    sampler.phase("idle")


def test_nvml_samples_the_jobs_gpu_by_uuid_with_units(torch_uuid: Callable[[str | None], None]) -> None:
    # As with CUDA_VISIBLE_DEVICES=1: torch's cuda:0 is NVML's GPU 1.
    torch_uuid(UUID_B)
    fake = FakeNVML(two_gpus())
    with T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake) as s:
        run_epoch(s, 0, 0.05, 0.0)
    df = s.samples()
    assert s.info["nvml_mapping"] == "uuid" and s.info["gpu_uuid"] == f"GPU-{UUID_B}"
    assert fake.uuid_requests == [f"GPU-{UUID_B}"] and fake.index_requests == []
    assert (fake.init_calls, fake.shutdown_calls) == (1, 1)
    assert (df["source"] == "nvml").all() and df["error"].isna().all()
    assert (df["power_w"] == 120.0).all()
    assert (df["memory_used_mib"] == 6144.0).all() and (df["memory_total_mib"] == 24576.0).all()
    assert (df["memory_used_pct"] == 25.0).all()
    assert (df["gpu_util_pct"] == 57.0).all() and (df["memory_util_pct"] == 31.0).all()
    assert (df["temperature_c"] == 61.0).all() and (df["sm_clock_mhz"] == 1740.0).all()
    assert df["energy_counter_mj"].notna().all() and df["energy_counter_mj"].is_monotonic_increasing
    assert df["rss_mib"].gt(0).all()  # the job's host side is recorded too
    assert df["cpu_energy_uj"].isna().all() == (not rapl_files_readable())
    assert df["time_s"].is_monotonic_increasing
    assert df["torch_peak_allocated_mib"].isna().all()  # no CUDA context on this machine: unknown, not 0


def test_nvml_falls_back_to_the_index_from_cuda_visible_devices(
    torch_uuid: Callable[[str | None], None], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch_uuid(None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fake = FakeNVML(two_gpus())
    with (
        caplog.at_level(logging.INFO, logger="spikebench.telemetry"),
        T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake) as s,
    ):
        s.phase("test")
    assert fake.index_requests == [1] and s.info["nvml_mapping"] == "index"
    assert (s.samples()["power_w"] == 120.0).all()
    assert any("index 1" in r.getMessage() for r in caplog.records)


def test_phase_attribution_and_energy_from_integrated_power(torch_uuid: Callable[[str | None], None]) -> None:
    """Power depends on the job's phase; the counter is NotSupported, so power is integrated."""
    torch_uuid(UUID_B)
    watts = {"train": 200.0, "val": 80.0, "test": 150.0, "idle": 10.0}
    holder: dict[str, T.TelemetrySampler] = {}
    fake = FakeNVML(two_gpus(power_b=lambda: watts[holder["s"].current_phase[0]]), energy_counter=False)
    s = holder["s"] = T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake)
    with s:
        run_epoch(s, 0, 0.08, 0.0)  # a val phase of ~0 s still gets its samples
        run_epoch(s, 1, 0.03, 0.03)
        summary0 = s.epoch_summary(0)
    df = s.samples()
    assert df["energy_counter_mj"].isna().all() and df["error"].isna().all()  # NotSupported is no error
    for (phase, _), group in df.groupby(["phase", "epoch"], dropna=False):
        assert (group["power_w"] == watts[phase]).all()
    bounds = s.phases().dropna(subset=["epoch"]).set_index(["phase", "epoch"])
    span = {(p, e): bounds.loc[(p, e), "end_s"] - bounds.loc[(p, e), "start_s"] for p, e in bounds.index}
    for epoch in (0, 1):
        assert ((df["phase"] == "val") & (df["epoch"] == epoch)).sum() >= 2
        train = T.summarize(df, "train", epoch)
        assert train["energy_source"] == "nvml_power_integrated"
        assert train["duration_s"] == pytest.approx(span[("train", epoch)], abs=1e-9)
        assert train["energy_j"] == pytest.approx(200.0 * span[("train", epoch)], rel=1e-9)
        assert train["avg_power_w"] == pytest.approx(200.0)
    expected = 200.0 * span[("train", 0)] + 80.0 * span[("val", 0)]
    assert summary0["energy_j"] == pytest.approx(expected, rel=1e-9)
    assert summary0["train_energy_j"] == pytest.approx(200.0 * span[("train", 0)], rel=1e-9)
    assert summary0["val_energy_j"] == pytest.approx(80.0 * span[("val", 0)], rel=1e-9, abs=1e-12)
    assert summary0["avg_power_w"] == pytest.approx(expected / (span[("train", 0)] + span[("val", 0)]))
    assert summary0["avg_memory_pct"] == pytest.approx(25.0) and summary0["avg_gpu_util_pct"] == pytest.approx(57.0)


def test_energy_from_the_counter_per_phase(torch_uuid: Callable[[str | None], None]) -> None:
    """The fake counter advances exactly 1 J per read: a phase's energy is (its samples - 1) J."""
    torch_uuid(UUID_B)
    fake = FakeNVML(two_gpus(), counter_step_mj=1000)
    with T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake) as s:
        run_epoch(s, 0, 0.05, 0.02)
        s.phase("test")
        time.sleep(0.02)
    df = s.samples()
    for phase, epoch in [("train", 0), ("val", 0), ("test", None)]:
        summary = s.phase_summary(phase, epoch)
        n = summary["n_samples"]
        assert n >= 2
        assert summary["energy_source"] == "nvml_energy_counter"
        assert summary["energy_j"] == pytest.approx(n - 1.0)
    assert T.summarize(df, ("train", "val"), 0)["energy_j"] == pytest.approx(
        T.summarize(df, "train", 0)["energy_j"] + T.summarize(df, "val", 0)["energy_j"]
    )


def test_nvml_failure_mid_run_records_nulls_and_the_job_goes_on(
    torch_uuid: Callable[[str | None], None], caplog: pytest.LogCaptureFixture
) -> None:
    torch_uuid(UUID_B)
    fake = FakeNVML(two_gpus())
    s = T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake)
    with caplog.at_level(logging.WARNING, logger="spikebench.telemetry"), s:
        s.phase("train", 0)
        time.sleep(0.03)
        fake.fail = "GPU is lost"
        s.phase("val", 0)  # both boundary samples fail
        time.sleep(0.05)
        fake.fail = None
        s.phase("test")
        time.sleep(0.03)
    df = s.samples()
    failed = df[df["error"].notna()]
    assert len(failed) >= 2
    assert failed["error"].str.contains("nvmlDeviceGetPowerUsage: GPU is lost", regex=False).all()
    assert failed[NVML_COLUMNS].isna().all().all()
    assert failed["rss_mib"].notna().all()  # the host-side readings go on
    after = df[df["phase"] == "test"]
    assert len(after) >= 2 and after["error"].isna().all() and (after["power_w"] == 120.0).all()
    lost = [r for r in caplog.records if "GPU is lost" in r.getMessage()]
    assert len(lost) == 1  # logged once, not once per sample or per NVML function
    val = s.phase_summary("val", 0)
    assert val["energy_j"] is None and val["energy_source"] is None
    assert not s.thread.is_alive()


def test_nvml_unavailable_falls_back_to_the_cpu_source(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenNVML(FakeNVML):
        def nvmlInit(self) -> None:
            raise FakeNVMLError(9, "Driver Not Loaded")

    broken = BrokenNVML(two_gpus())
    with (
        caplog.at_level(logging.WARNING, logger="spikebench.telemetry"),
        T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=broken) as s,
    ):
        s.phase("train", 0)
    df = s.samples()
    assert s.source == "cpu" and (df["source"] == "cpu").all()
    assert df["power_w"].isna().all() and df["rss_mib"].gt(0).all()
    assert any("Driver Not Loaded" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- the real CPU path


def test_cpu_path_on_this_machine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 10, requires_grad=True)
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
    with T.TelemetrySampler("cpu", interval_s=0.01) as s:
        s.phase("train", 0)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # plain gradient descent: a real CPU load
            torch.nn.functional.cross_entropy(x @ w, y).backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                w.grad = None
        s.phase("idle")
        summary = s.epoch_summary(0)
    df = s.samples()
    train = df[df["phase"] == "train"]
    assert s.source == "cpu" and (df["source"] == "cpu").all()
    assert len(train) >= 3
    assert df["rss_mib"].gt(0).all() and (df["memory_used_mib"] == df["rss_mib"]).all()
    import psutil

    ram_mib = psutil.virtual_memory().total / 2**20
    assert (df["memory_total_mib"] == ram_mib).all()
    assert np.allclose(df["memory_used_pct"].to_numpy(float), (df["rss_mib"] / ram_mib * 100).to_numpy(float))
    util = df["cpu_util_pct"].dropna()
    assert len(util) >= 1 and (util >= 0).all()
    assert df.loc[0, "cpu_util_pct"] is pd.NA  # nothing to measure over yet: null, not 0
    assert df[NVML_COLUMNS[:1] + NVML_COLUMNS[5:]].isna().all().all()
    readable = rapl_files_readable()
    assert df["cpu_energy_uj"].notna().all() == readable and df["cpu_energy_uj"].isna().all() == (not readable)
    assert summary["energy_source"] == ("rapl" if readable else None)
    assert summary["telemetry_source"] == "cpu" and summary["avg_cpu_util_pct"] is not None
    assert summary["torch_peak_allocated_mib"] is None and summary["avg_gpu_util_pct"] is None
    out = s.write(tmp_path / "sub" / "telemetry.parquet")
    pd.testing.assert_frame_equal(T.read_samples(out), df)
    assert T.sidecar_metadata(out)["phases"][1] == {
        "phase": "train",
        "epoch": 0,
        "start_s": pytest.approx(train["time_s"].min()),
        "end_s": pytest.approx(train["time_s"].max()),
    }
    assert sorted(p.name for p in out.parent.iterdir()) == ["telemetry.parquet"]  # no temporary left


def test_rapl_reader_sums_package_domains_and_undoes_wraparound(tmp_path: Path) -> None:
    def domain(name: str, label: str, energy: int, span: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "name").write_text(label + "\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{span}\n")
        return d

    p0 = domain("intel-rapl:0", "package-0", 900, 1000)
    domain("intel-rapl:0:0", "core", 5, 1000)  # a sub-domain of package 0: not added twice
    p1 = domain("intel-rapl:1", "package-1", 100, 2000)
    domain("intel-rapl:2", "psys", 777, 1000)  # platform domain: not a package
    domain("intel-rapl-mmio:0", "package-0", 900, 1000)  # the same package via MMIO
    rapl = T.RaplReader(tmp_path)
    assert rapl.available and rapl.domains == [p0, p1]
    assert rapl.read() == 1000
    (p0 / "energy_uj").write_text("50\n")  # wrapped past 1000: +150
    (p1 / "energy_uj").write_text("400\n")  # +300
    assert rapl.read() == 1450

    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as s:
        s.phase("train", 0)
        (p0 / "energy_uj").write_text("650\n")  # +600 µJ
        s.phase("idle")
    train = s.phase_summary("train", 0)
    assert train["energy_source"] == "rapl" and train["energy_j"] == pytest.approx(600e-6)

    (p1 / "energy_uj").unlink()
    assert not T.RaplReader(tmp_path).available and T.RaplReader(tmp_path).read() is None
    assert not T.RaplReader(tmp_path / "absent").available


# --------------------------------------------------------------------------- stopping in every case


@pytest.mark.parametrize("error", [RuntimeError("training failed"), KeyboardInterrupt()])
def test_sampler_stops_when_the_job_raises(error: BaseException) -> None:
    s = T.TelemetrySampler("cpu", interval_s=0.01)
    with pytest.raises(type(error)), s:
        s.phase("train", 0)
        time.sleep(0.02)
        raise error
    assert s.thread is not None and not s.thread.is_alive() and not s.running
    df = s.samples()
    assert df.iloc[-1]["phase"] == "train"  # the closing sample of the interrupted phase
    n = len(df)
    time.sleep(0.03)
    assert len(s.samples()) == n  # nothing samples any more
    with pytest.raises(RuntimeError, match="after stop"):
        s.phase("val", 0)


def test_start_and_stop_are_idempotent() -> None:
    s = T.TelemetrySampler("cpu", interval_s=0.01)
    assert s.start() is s
    thread = s.thread
    s.start()
    assert s.thread is thread and thread.is_alive()
    s.stop()
    s.stop()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="create a new one"):
        s.start()


def test_an_interrupt_while_starting_leaves_nothing_running() -> None:
    class InterruptedNVML(FakeNVML):
        def nvmlInit(self) -> None:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the driver is being opened

    s = T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=InterruptedNVML(two_gpus()))
    with pytest.raises(KeyboardInterrupt), s:
        pytest.fail("the with block must not be entered")
    assert s.thread is None and not s.running
    s.stop()  # still safe
    with pytest.raises(RuntimeError):
        s.start()


SIGTERM_JOB = """
import sys, threading, time
from spikebench.telemetry import TelemetrySampler, install_sigterm_handler
install_sigterm_handler()
s = TelemetrySampler("cpu", interval_s=0.01)
try:
    with s:
        s.phase("train", 0)
        time.sleep(0.05)
        print("ready", flush=True)
        while True:  # a job that never ends by itself
            time.sleep(0.01)
finally:
    print("threads", sorted(t.name for t in threading.enumerate()), flush=True)
    s.write(sys.argv[1])
"""


def test_sigterm_stops_the_sampler_and_the_job_writes_its_sidecar(tmp_path: Path) -> None:
    out = tmp_path / "telemetry.parquet"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    job = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_JOB, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "ready"
        job.send_signal(signal.SIGTERM)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 128 + signal.SIGTERM, stderr
    assert "threads ['MainThread']" in stdout  # the sampling thread is gone
    df = T.read_samples(out)
    assert (df["phase"] == "train").sum() >= 3 and df.iloc[-1]["phase"] == "train"


def test_install_sigterm_handler_only_from_the_main_thread() -> None:
    import threading

    errors: list[BaseException] = []
    worker = threading.Thread(
        target=lambda: errors.append(pytest.raises(RuntimeError, T.install_sigterm_handler).value)
    )
    worker.start()
    worker.join()
    assert errors and "main thread" in str(errors[0])


# --------------------------------------------------------------------------- disabled, empty, validation


def test_disabled_sampler_has_no_thread_and_null_columns(tmp_path: Path) -> None:
    fake = FakeNVML(two_gpus())
    with T.TelemetrySampler("cuda:0", interval_s=0.01, enabled=False, nvml=fake) as s:
        run_epoch(s, 0, 0.03, 0.01)
        summary = s.epoch_summary(0)
    assert s.thread is None and fake.init_calls == 0
    df = s.samples()
    assert (df["source"] == "none").all() and df[MEASUREMENTS].isna().all().all() and df["error"].isna().all()
    assert (df.dtypes == T.empty_samples().dtypes).all()
    assert set(summary) == set(T.SUMMARY_KEYS) | {
        "train_energy_j",
        "val_energy_j",
        "train_energy_above_idle_j",
        "val_energy_above_idle_j",
    }
    nulls = {k for k, v in summary.items() if v is None}
    assert nulls == set(summary) - {"telemetry_source", "n_samples", "duration_s"}
    assert summary["telemetry_source"] == "none"
    pd.testing.assert_frame_equal(T.read_samples(s.write(tmp_path / "t.parquet")), df)


def test_write_an_empty_table_with_the_schema(tmp_path: Path) -> None:
    s = T.TelemetrySampler("cpu")
    out = s.write(tmp_path / "telemetry.parquet")
    back = T.read_samples(out)
    assert back.empty and list(back.columns) == list(T.SAMPLE_SCHEMA)
    assert {c: str(t) for c, t in back.dtypes.items()} == T.SAMPLE_SCHEMA
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        T.read_samples(tmp_path / "absent.parquet")


def test_one_reader_of_the_sidecar_for_telemetry_and_results(tmp_path: Path) -> None:
    """results.read_telemetry reads through read_samples: the columns the tables need are required, a schema
    column they do not need may be absent (a sidecar of an older spikebench: all NA), a needed one names the file."""
    from spikebench.results import ResultsInputError, read_telemetry

    df = table(epoch0_train())
    old = tmp_path / "old.parquet"
    df.drop(columns=["torch_peak_allocated_mib"]).iloc[::-1].to_parquet(old)
    with pytest.raises(ValueError, match=r"old\.parquet.*torch_peak_allocated_mib"):
        T.read_samples(old)
    back = T.read_samples(old, required=["time_s", "power_w"])
    assert list(back.columns) == list(T.SAMPLE_SCHEMA) and back["torch_peak_allocated_mib"].isna().all()
    assert str(back["torch_peak_allocated_mib"].dtype) == "Float64"
    tables = read_telemetry(old)  # sorted by time, numeric columns as float with NaN
    assert tables["time_s"].tolist() == sorted(df["time_s"].tolist())
    assert tables["power_w"].tolist() == df.sort_values("time_s")["power_w"].astype(float).tolist()
    broken = tmp_path / "broken.parquet"
    df.drop(columns=["power_w"]).to_parquet(broken)
    with pytest.raises(ResultsInputError, match=r"broken\.parquet.*power_w"):
        read_telemetry(broken)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        T.TelemetrySampler("cpu", interval_s=0)
    with pytest.raises(ValueError, match="device must look like"):
        T.TelemetrySampler("gpu 0")
    assert T.TelemetrySampler(torch.device("cuda", 1)).device == "cuda:1"
    with T.TelemetrySampler("cpu", interval_s=0.01) as s:
        with pytest.raises(ValueError, match="phase must be one of"):
            s.phase("training", 0)
        with pytest.raises(ValueError, match="epoch must be an int"):
            s.phase("train", 1.5)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="before start"):
        T.TelemetrySampler("cpu").phase("train", 0)


# --------------------------------------------------------------------------- hardware


def test_hardware_info_cpu_and_fake_gpu(torch_uuid: Callable[[str | None], None]) -> None:
    info = hardware.hardware_info("cpu")
    assert info["torch_version"] == torch.__version__ and info["host_name"] == socket.gethostname()
    assert info["device_name"] == info["cpu_model"] and info["memory_total_mib"] == info["ram_total_mib"] > 0
    assert info["gpu_uuid"] is None and info["driver_version"] is None
    torch_uuid(UUID_B)
    fake = FakeNVML(two_gpus())
    gpu = hardware.hardware_info("cuda:0", nvml=fake)
    assert gpu["gpu_uuid"] == f"GPU-{UUID_B}" and gpu["driver_version"] == "580.65.06"
    if not torch.cuda.is_available():  # otherwise the name and memory come from PyTorch
        assert gpu["device_name"] == "Fake L4" and gpu["memory_total_mib"] == 24576.0
    assert (fake.init_calls, fake.shutdown_calls) == (1, 1)
    assert math.isfinite(info["ram_total_mib"])


# --------------------------------------------------------------------------- idle power, energy above idle, provenance


def test_energy_above_idle_per_phase_and_epoch_with_fake_nvml(torch_uuid: Callable[[str | None], None]) -> None:
    """Idle 10 W, training 200 W, validation 80 W (integrated power, exact): the energy above idle of a phase
    is its energy minus 10 W times its duration; phases far shorter than 1 s are flagged unreliable."""
    torch_uuid(UUID_B)
    watts = {"train": 200.0, "val": 80.0, "test": 150.0, "idle": 10.0}
    holder: dict[str, T.TelemetrySampler] = {}
    fake = FakeNVML(two_gpus(power_b=lambda: watts[holder["s"].current_phase[0]]), energy_counter=False)
    s = holder["s"] = T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=fake)
    with s:
        idle = s.measure_idle(0.05)
        run_epoch(s, 1, 0.05, 0.03)
        summary = s.epoch_summary(1)
        train = s.phase_summary("train", 1)
    assert idle["idle_power_w"] == pytest.approx(10.0) and idle["idle_null_reason"] is None
    assert idle["idle_energy_source"] == "nvml_power_integrated" and idle["idle_s"] >= 0.05
    assert train["idle_power_w"] == pytest.approx(10.0)
    assert train["energy_above_idle_j"] == pytest.approx(190.0 * train["duration_s"], rel=1e-9)
    assert summary["train_energy_above_idle_j"] == pytest.approx(train["energy_above_idle_j"], rel=1e-12)
    val = s.phase_summary("val", 1)
    assert summary["val_energy_above_idle_j"] == pytest.approx(70.0 * val["duration_s"], rel=1e-9)
    assert summary["energy_above_idle_j"] == pytest.approx(summary["energy_j"] - 10.0 * summary["duration_s"])
    assert summary["energy_reliable"] is False and "shorter than 1 s" in summary["energy_unreliable_reason"]
    assert s.info["idle"]["idle_power_w"] == pytest.approx(10.0)


def test_energy_reliability_and_above_idle_arithmetic() -> None:
    """On exact tables: a 4 s phase is reliable; a 0.5 s one is not; no idle power, no energy above idle."""
    counter = [1_000_000, 1_100_000, 1_200_000, 1_400_000]
    df = table(epoch0_train(counter))
    summary = T.summarize(df, "train", 0, idle_power_w=20.0)
    assert summary["energy_j"] == pytest.approx(400.0) and summary["duration_s"] == pytest.approx(4.0)
    assert summary["energy_above_idle_j"] == pytest.approx(400.0 - 20.0 * 4.0)
    assert summary["energy_reliable"] is True and summary["energy_unreliable_reason"] is None
    assert T.summarize(df, "train", 0)["energy_above_idle_j"] is None
    short = table(gpu_rows("val", 0, [0.0, 0.5], power_w=[50.0, 50.0], energy_counter_mj=[0, 25_000]))
    flagged = T.summarize(short, "val", 0, idle_power_w=10.0)
    assert flagged["energy_j"] == pytest.approx(25.0) and flagged["energy_above_idle_j"] == pytest.approx(20.0)
    assert flagged["energy_reliable"] is False and "0.5 s" in flagged["energy_unreliable_reason"]
    nothing = T.summarize(table(gpu_rows("val", 0, [0.0, 0.5])), "val", 0, idle_power_w=10.0)
    assert nothing["energy_j"] is None and nothing["energy_above_idle_j"] is None and nothing["energy_reliable"] is None


def test_idle_power_is_null_with_the_reason_without_a_reading(tmp_path: Path) -> None:
    """The CPU path without RAPL has no power reading: no idle window is sampled, the reason is recorded."""
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as s:
        n_before = len(s.samples())
        idle = s.measure_idle(5.0)
        assert len(s.samples()) == n_before  # nothing was sampled: it returned at once
        s.phase("test")
        summary = s.phase_summary("test")
    assert idle["idle_power_w"] is None and "RAPL" in idle["idle_null_reason"]
    assert summary["idle_power_w"] is None and summary["energy_above_idle_j"] is None
    with T.TelemetrySampler("cpu", enabled=False) as off:
        assert off.measure_idle(5.0)["idle_null_reason"] == "telemetry disabled"


def test_restore_refuses_a_partial_sidecar_of_another_checkpoint(tmp_path: Path) -> None:
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as first:
        run_epoch(first, 1, 0.02, 0.01)
        first.write(tmp_path / "partial.parquet", through_epoch=1, checkpoint_key="abc")
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as other:
        assert other.restore(tmp_path / "partial.parquet", 1, key="xyz") == []
        assert other.restore(tmp_path / "missing.parquet", 1, key="abc") == []
        assert "resumed_epochs" not in other.info
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as same:
        assert same.restore(tmp_path / "partial.parquet", 1, key="abc") == [1]
        run_epoch(same, 2, 0.02, 0.01)
    df = same.samples()
    assert df["time_s"].is_monotonic_increasing and sorted(df["epoch"].dropna().unique()) == [1, 2]
    assert T.summarize(df, "train", 1)["n_samples"] == T.summarize(first.samples(), "train", 1)["n_samples"]


def test_gpu_provenance_with_fake_nvml(torch_uuid: Callable[[str | None], None]) -> None:
    """Clocks, power limits, persistence mode and temperature of the job's GPU; NotSupported is null with the reason."""
    torch_uuid(UUID_B)
    gpus = two_gpus()
    gpus[1]["app_clocks"] = {1: 1590, 2: 6250}
    fake = FakeNVML(gpus)
    info = hardware.hardware_info("cuda:0", nvml=fake, extra={"precision": "fp32", "torch_threads": 1})
    assert info["sm_clock_mhz"] == 1740.0 and info["memory_clock_mhz"] == 6251.0
    assert (info["applications_sm_clock_mhz"], info["applications_memory_clock_mhz"]) == (1590.0, 6250.0)
    assert info["power_limit_w"] == 72.0 and info["enforced_power_limit_w"] == 70.0
    assert info["persistence_mode"] is True and info["temperature_start_c"] == 61.0
    assert info["null_reasons"] == {} and info["driver_version"] == "580.65.06"
    assert info["precision"] == "fp32" and info["torch_threads"] == 1  # extra merged in
    assert info["cudnn_benchmark"] is torch.backends.cudnn.benchmark and info["torch_version"] == torch.__version__
    assert fake.init_calls == fake.shutdown_calls == 1
    del gpus[1]["app_clocks"]
    state = hardware.gpu_state("cuda:0", nvml=fake)
    assert (
        state["applications_sm_clock_mhz"] is None
        and "Not Supported" in state["null_reasons"]["applications_sm_clock_mhz"]
    )
    assert state["temperature_c"] == 61.0 and fake.init_calls == fake.shutdown_calls == 2
    cpu = hardware.hardware_info("cpu")
    assert all(cpu[k] is None for k in ("sm_clock_mhz", "power_limit_w", "temperature_start_c"))
    assert cpu["null_reasons"]["power_limit_w"] == "no GPU: the job runs on cpu"


def test_memory_pct_has_the_mib_figure_beside_it_as_numerator(
    torch_uuid: Callable[[str | None], None], tmp_path: Path
) -> None:
    """device_memory_*_pct = device_memory_*_mib / the device's total: NVML's used memory on a GPU, RSS on the CPU."""
    from spikebench.jobs import telemetry_columns

    torch_uuid(UUID_B)
    with T.TelemetrySampler("cuda:0", interval_s=0.01, nvml=FakeNVML(two_gpus())) as s:
        run_epoch(s, 1, 0.03, 0.01)
        gpu = telemetry_columns(s.epoch_summary(1))
    assert gpu["device_memory_peak_pct"] == pytest.approx(gpu["device_memory_peak_mib"] / 24576 * 100, rel=1e-12)
    assert gpu["device_memory_avg_pct"] == pytest.approx(gpu["device_memory_avg_mib"] / 24576 * 100, rel=1e-12)
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as c:
        run_epoch(c, 1, 0.03, 0.01)
        cpu = telemetry_columns(c.epoch_summary(1))
        ram = c._cpu.ram_total_mib
    assert cpu["device_memory_peak_pct"] == pytest.approx(cpu["device_memory_peak_mib"] / ram * 100, rel=1e-12)


def test_restore_keeps_only_the_epochs_of_the_checkpoint(tmp_path: Path) -> None:
    """Killed between the partial sidecar (through epoch 2) and checkpoint 2: the resume from checkpoint 1 reruns
    epoch 2, so the first run's epoch-2 samples are dropped and epoch 2 appears once."""
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as first:
        run_epoch(first, 1, 0.02, 0.01)
        run_epoch(first, 2, 0.02, 0.01)
        first.write(tmp_path / "partial.parquet", through_epoch=2, checkpoint_key="k")
    with T.TelemetrySampler("cpu", interval_s=0.01, rapl_root=tmp_path) as resumed:
        assert resumed.restore(tmp_path / "partial.parquet", 1, key="k") == [1]
        run_epoch(resumed, 2, 0.02, 0.01)
    df, phases = resumed.samples(), resumed.phases()
    assert df["time_s"].is_monotonic_increasing
    assert phases.dropna(subset=["epoch"])["epoch"].tolist() == [1, 1, 2, 2]
    old_epoch2 = first.samples().query("epoch == 2")["timestamp"]
    assert not df["timestamp"].isin(old_epoch2).any()
    assert resumed.info["resumed_epochs"] == [1] and resumed.info["resumes"][0]["after_epoch"] == 1
