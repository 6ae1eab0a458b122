"""Device choice and the per-GPU locks, tested with injected (fake) GPUs: no GPU needed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from spikebench.devices import DeviceUnavailableError, select_device

PROJECT = Path(__file__).resolve().parents[1]

FAKE = ["GPU-aaaa-0000", "GPU-bbbb-1111"]


def test_cpu_and_auto_without_gpus(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with caplog.at_level(logging.INFO):
        with select_device("auto", tmp_path, gpu_ids=[]) as lease:
            assert lease.device == torch.device("cpu") and lease.gpu_index is None
    assert "no CUDA GPU visible (CUDA_VISIBLE_DEVICES=): running on the CPU" in caplog.text
    assert select_device("cpu", tmp_path, gpu_ids=FAKE).device.type == "cpu"
    assert list(tmp_path.iterdir()) == []  # the CPU takes no lock


def test_cuda_without_gpus_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(DeviceUnavailableError, match=r"'cuda' requested but no CUDA GPU.*CUDA_VISIBLE_DEVICES=3"):
        select_device("cuda", tmp_path, gpu_ids=[])
    with pytest.raises(DeviceUnavailableError, match=r"'cuda:2'.*sees 2 GPU"):
        select_device("cuda:2", tmp_path, gpu_ids=FAKE)
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        select_device("gpu", tmp_path, gpu_ids=FAKE)


def test_explicit_index_and_lock_files(tmp_path: Path) -> None:
    with select_device("cuda:1", tmp_path, gpu_ids=FAKE) as lease:
        assert lease.device == torch.device("cuda:1") and lease.gpu_index == 1
        assert lease.lock_path == tmp_path / "gpu-GPU-bbbb-1111.lock"
        # the same GPU asked for again is busy; any other is free
        with pytest.raises(TimeoutError, match="no free GPU"):
            select_device("cuda:1", tmp_path, gpu_ids=FAKE, poll_s=0.01, timeout_s=0.05)
        with select_device("cuda", tmp_path, gpu_ids=FAKE) as other:
            assert other.gpu_index == 0
    assert not lease.held


def test_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    results: dict[str, object] = {}

    def job(name: str, hold: threading.Event) -> None:
        lease = select_device("cuda", tmp_path, gpu_ids=FAKE, poll_s=0.02, timeout_s=10)
        results[name] = (lease.gpu_index, time.monotonic())
        hold.wait(10)
        lease.release()

    holds = {name: threading.Event() for name in "abc"}
    threads = {name: threading.Thread(target=job, args=(name, holds[name])) for name in "abc"}
    with caplog.at_level(logging.INFO, logger="spikebench.devices"):
        threads["a"].start()
        threads["b"].start()
        deadline = time.monotonic() + 10
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {results["a"][0], results["b"][0]} == {0, 1}
        threads["c"].start()
        time.sleep(0.3)
        assert "c" not in results  # both GPUs taken: the third job waits
        released = time.monotonic()
        holds["a"].set()  # job a finishes: c gets a's GPU
        while "c" not in results and time.monotonic() < deadline:
            time.sleep(0.01)
        assert results["c"][0] == results["a"][0]
        assert results["c"][1] >= released
    for name in "bc":
        holds[name].set()
    for t in threads.values():
        t.join(10)
    assert "in use by other jobs" in caplog.text and "waiting" in caplog.text


def test_lock_is_held_by_another_process_and_freed_when_it_dies(tmp_path: Path) -> None:
    holder = textwrap.dedent(f"""
        import sys, time
        from spikebench.devices import select_device
        lease = select_device("cuda", {str(tmp_path)!r}, gpu_ids={FAKE!r})
        print(lease.gpu_index, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=env)
    try:
        taken = int(proc.stdout.readline())
        with select_device("cuda", tmp_path, gpu_ids=FAKE) as lease:
            assert lease.gpu_index == 1 - taken
        with pytest.raises(TimeoutError):
            select_device(f"cuda:{taken}", tmp_path, gpu_ids=FAKE, poll_s=0.01, timeout_s=0.1)
    finally:
        proc.kill()
        proc.wait()
    with select_device(f"cuda:{taken}", tmp_path, gpu_ids=FAKE, timeout_s=5) as lease:  # the kernel freed it
        assert lease.gpu_index == taken
