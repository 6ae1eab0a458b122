"""Device choice and the per-GPU locks, tested with injected (fake) GPUs: no GPU needed."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest
import torch

from spikebench import gpu_probe
from spikebench.devices import CudaMismatchError, DeviceUnavailableError, select_device

PROJECT = Path(__file__).resolve().parents[1]

FAKE = ["GPU-aaaa-0000", "GPU-bbbb-1111"]

# The header of `nvidia-smi` as driver 550 prints it (two H100s), and as driver 470 did (names cut short).
SMI_550 = """Tue Mar 12 10:15:42 2024
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
| N/A   31C    P0             69W /  700W |       1MiB /  81559MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+
|   1  NVIDIA H100 80GB HBM3          On  |   00000000:3B:00.0 Off |                    0 |
| N/A   30C    P0             70W /  700W |       1MiB /  81559MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|    0   N/A  N/A     41234      C   python                                        512MiB |
+-----------------------------------------------------------------------------------------+
"""
SMI_470 = """+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.182.03   Driver Version: 470.182.03   CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |
|===============================+======================+======================|
|   0  Tesla V100-SXM2...  On   | 00000000:00:1E.0 Off |                    0 |
| N/A   34C    P0    41W / 300W |      0MiB / 16160MiB |      0%      Default |
+-------------------------------+----------------------+----------------------+
"""
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
TOO_OLD = (
    "The NVIDIA driver on your system is too old (found version 12040). Please update your GPU driver by "
    "downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx"
)


class NVMLError_LibraryNotFound(Exception):  # noqa: N801 - pynvml's name
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class FakeNvml(types.ModuleType):
    """The pynvml calls the probe makes, over scripted answers; ``init_error``: what nvmlInit raises; ``gpus`` or
    ``cuda`` an exception: what counting the GPUs or reading the CUDA version raises."""

    def __init__(self, gpus=("NVIDIA H100 80GB HBM3",), driver="550.54.15", cuda=12040, init_error=None) -> None:
        super().__init__("pynvml")
        self.gpus, self.driver, self.cuda, self.init_error, self.calls = gpus, driver, cuda, init_error, []

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        if isinstance(self.cuda, Exception):
            raise self.cuda
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        if isinstance(self.gpus, Exception):
            raise self.gpus
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.gpus[handle]


def fake_machine(
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
    nvml: types.ModuleType | None,
    dev_files: tuple[str, ...] = (),
    smi: tuple[str, int] | None = None,
) -> None:
    """What the GPU probes see: ``nvml`` as pynvml (None: it cannot be imported), ``dev_files`` in the device
    folder, and on PATH (nothing else there) an ``nvidia-smi`` that prints ``smi[0]`` and exits with ``smi[1]``."""
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    dev, bin_dir = root / "dev", root / "bin"
    dev.mkdir(parents=True)
    bin_dir.mkdir()
    for name in dev_files:
        (dev / name).touch()
    monkeypatch.setattr(gpu_probe, "probe_device_files", functools.partial(gpu_probe.probe_device_files, dev))
    if smi is not None:
        (root / "smi.txt").write_text(smi[0])
        script = bin_dir / "nvidia-smi"
        script.write_text(f"#!/bin/sh\n/bin/cat '{root / 'smi.txt'}'\nexit {smi[1]}\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(gpu_probe.ALLOW_CPU_FALLBACK_ENV, raising=False)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without any NVIDIA GPU, whatever this one has."""
    fake_machine(monkeypatch, tmp_path / "machine", FakeNvml(init_error=NVMLError_LibraryNotFound()))


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


def test_cuda_without_gpus_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_gpu: None) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(
        DeviceUnavailableError, match=r"'cuda' requested but no CUDA GPU.*CUDA_VISIBLE_DEVICES=3"
    ) as err:
        select_device("cuda", tmp_path, gpu_ids=[])
    assert not isinstance(err.value, CudaMismatchError)  # no NVIDIA GPU on the machine either: not a mismatch
    assert "nvidia-smi: not on PATH" in str(err.value)  # what the probes looked for
    with pytest.raises(DeviceUnavailableError, match=r"'cuda:2'.*sees 2 GPU"):
        select_device("cuda:2", tmp_path, gpu_ids=FAKE)
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        select_device("gpu", tmp_path, gpu_ids=FAKE)


def test_auto_with_a_gpu_torch_cannot_use_is_an_error_naming_versions_and_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue #19: a CUDA 12.4 driver, pip's default torch built for CUDA 13.0: torch sees no GPU
    nvml = FakeNvml(gpus=["NVIDIA H100 80GB HBM3"], driver="550.54.15", cuda=12040)
    fake_machine(monkeypatch, tmp_path / "machine", nvml, dev_files=("nvidia0", "nvidiactl", "nvidia-uvm"))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "init", lambda: (_ for _ in ()).throw(RuntimeError(TOO_OLD)))
    locks = tmp_path / "locks"
    with pytest.raises(CudaMismatchError) as err:
        select_device("auto", locks, gpu_ids=[])
    message = str(err.value)
    assert isinstance(err.value, DeviceUnavailableError)
    assert "device 'auto': this machine has an NVIDIA GPU but torch cannot use CUDA" in message
    assert "NVIDIA driver 550.54.15, supporting CUDA up to 12.4" in message
    assert f"torch {torch.__version__}, built for CUDA 13.0" in message
    assert "NVML: 1 GPU(s): NVIDIA H100 80GB HBM3" in message
    assert f"/dev: {tmp_path / 'machine' / 'dev' / 'nvidia0'};" in message  # not nvidiactl or nvidia-uvm
    assert "too old (found version 12040)" in message  # torch's own reason
    assert "needs a driver that supports CUDA 13.x; this driver supports up to 12.4" in message
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126" in message
    assert "`device: cpu`" in message and "SPIKEBENCH_ALLOW_CPU_FALLBACK=1" in message
    assert nvml.calls == ["init", "shutdown"]
    assert not locks.exists()


def test_cpu_only_torch_on_a_gpu_machine_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no NVML library in the environment, but the device file and nvidia-smi: the versions come from nvidia-smi
    nvml = FakeNvml(init_error=NVMLError_LibraryNotFound())
    fake_machine(monkeypatch, tmp_path / "machine", nvml, dev_files=("nvidia0",), smi=(SMI_550, 0))
    monkeypatch.setattr(torch.version, "cuda", None)
    for requested in ("cuda", "auto"):
        with pytest.raises(CudaMismatchError) as err:
            select_device(requested, tmp_path / "locks", gpu_ids=[])
        message = str(err.value)
        assert f"torch {torch.__version__}, a CPU-only build (torch.version.cuda is None)" in message
        assert "Why: this torch is a CPU-only build, which cannot use any GPU." in message
        assert "NVIDIA driver 550.54.15, supporting CUDA up to 12.4" in message
        assert "lists NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3" in message
        assert "NVML: not available (NVMLError_LibraryNotFound: NVML Shared Library Not Found)" in message
        assert "--index-url https://download.pytorch.org/whl/cu126" in message and "`device: cpu`" in message
        # the fallback switch is offered to auto only: an explicit cuda never runs on the CPU
        assert ("SPIKEBENCH_ALLOW_CPU_FALLBACK" in message) == (requested == "auto")


def test_the_fallback_switch_turns_auto_s_error_into_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_machine(monkeypatch, tmp_path / "machine", FakeNvml(), dev_files=("nvidia0",))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(gpu_probe, "torch_cuda_failure", lambda: TOO_OLD)
    monkeypatch.setenv("SPIKEBENCH_ALLOW_CPU_FALLBACK", "1")
    with caplog.at_level(logging.INFO, logger="spikebench.devices"):
        lease = select_device("auto", tmp_path / "locks", gpu_ids=[])
    assert lease.device == torch.device("cpu") and not lease.held
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    warned = warnings[0].getMessage()
    assert "torch cannot use CUDA" in warned and "supporting CUDA up to 12.4" in warned
    assert "SPIKEBENCH_ALLOW_CPU_FALLBACK is set: running on the CPU" in warned
    with pytest.raises(CudaMismatchError):
        select_device("cuda", tmp_path / "locks", gpu_ids=[])


def test_auto_without_any_nvidia_gpu_runs_on_the_cpu_and_says_what_it_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # no NVML, no /dev/nvidia<N>, and an nvidia-smi (installed without a GPU) that finds no device
    nvml = FakeNvml(init_error=NVMLError_LibraryNotFound())
    fake_machine(monkeypatch, tmp_path / "machine", nvml, dev_files=("nvidiactl",), smi=("No devices were found", 6))
    with caplog.at_level(logging.INFO, logger="spikebench.devices"):
        with select_device("auto", tmp_path / "locks", gpu_ids=[]) as lease:
            assert lease.device == torch.device("cpu") and lease.gpu_index is None
    assert "no CUDA GPU visible (CUDA_VISIBLE_DEVICES=<unset>) and no NVIDIA GPU on this machine" in caplog.text
    assert "NVML Shared Library Not Found" in caplog.text and "reports no devices" in caplog.text
    assert "running on the CPU" in caplog.text
    assert not (tmp_path / "locks").exists()


def test_cpu_and_hidden_gpus_are_never_probed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def probed(*args: object, **kwargs: object) -> None:
        raise AssertionError("a probe ran")

    for name in ("nvidia_gpu_evidence", "probe_nvml", "probe_device_files", "probe_nvidia_smi", "torch_cuda_failure"):
        monkeypatch.setattr(gpu_probe, name, probed)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert select_device("cpu", tmp_path, gpu_ids=[]).device == torch.device("cpu")
    for hidden in ("", "-1", "-1,0"):  # hidden on purpose: CUDA stops at the first invalid entry
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert select_device("auto", tmp_path, gpu_ids=[]).device == torch.device("cpu")
        with pytest.raises(DeviceUnavailableError, match="hides every GPU"):
            select_device("cuda", tmp_path, gpu_ids=[])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # hides nothing by itself: the probes run
    with pytest.raises(AssertionError, match="a probe ran"):
        select_device("auto", tmp_path, gpu_ids=[])


def test_parse_nvidia_smi_headers() -> None:
    assert gpu_probe.parse_nvidia_smi(SMI_550) == {
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"],  # not the processes table's row
    }
    assert gpu_probe.parse_nvidia_smi(SMI_470) == {
        "driver_version": "470.182.03",
        "cuda_version": "11.4",
        "gpus": ["Tesla V100-SXM2..."],
    }
    assert gpu_probe.parse_nvidia_smi(SMI_NO_DRIVER) == {"driver_version": None, "cuda_version": None, "gpus": []}


@pytest.mark.parametrize(
    ("nvml", "text"), [(12040, "12.4"), (12090, "12.9"), (11080, "11.8"), (13000, "13.0"), (13010, "13.1")]
)
def test_nvml_cuda_version_as_text(nvml: int, text: str) -> None:
    assert gpu_probe.cuda_version_text(nvml) == text


def test_suggested_wheel_and_a_driver_too_old_for_any() -> None:
    assert [gpu_probe.suggested_wheel(v) for v in ("12.4", "12.0", "11.8", "13.0", "14.2", "10.2", None)] == [
        "cu126",
        "cu126",
        "cu118",
        "cu130",
        "cu130",
        None,
        None,
    ]
    evidence = gpu_probe.GpuEvidence((gpu_probe.GpuProbe("NVML", True, "1 GPU(s): Tesla K80", "440.33.01", "10.2"),))
    message = gpu_probe.cuda_mismatch_message("cuda", evidence, "<unset>", None)
    assert "Remedy: update the NVIDIA driver (its CUDA 10.2 is older than any current torch wheel)" in message
    assert "--index-url" not in message and "`device: cpu`" in message


def test_a_driver_that_suits_torch_points_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's CUDA 12.8 on a CUDA 12.4 driver runs (minor-version compatibility): no wheel to change
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    files = gpu_probe.GpuProbe("/dev", True, "/dev/nvidia0, /dev/nvidia1")
    evidence = gpu_probe.GpuEvidence(
        (files, gpu_probe.GpuProbe("nvidia-smi", True, "lists 2 GPUs", "550.54.15", "12.4"))
    )
    message = gpu_probe.cuda_mismatch_message("auto", evidence, "3", "CUDA error: invalid device ordinal")
    assert "NVIDIA driver 550.54.15, supporting CUDA up to 12.4" in message  # from the probe that read them
    assert "CUDA_VISIBLE_DEVICES=3." in message and "invalid device ordinal" in message
    assert "the driver's CUDA 12.4 can run torch's CUDA 12.8, so the cause is elsewhere" in message
    assert "Remedy: remove that cause" in message and "--index-url" not in message
    assert "`device: cpu`" in message and "SPIKEBENCH_ALLOW_CPU_FALLBACK=1" in message


def test_the_probes_never_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py missing
    probe = gpu_probe.probe_nvml()
    assert not probe.found and "pynvml (PyPI nvidia-ml-py) cannot be imported" in probe.detail
    nvml = FakeNvml(init_error=NVMLError_LibraryNotFound())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert gpu_probe.probe_nvml() == gpu_probe.GpuProbe(
        "NVML", False, "not available (NVMLError_LibraryNotFound: NVML Shared Library Not Found)"
    )
    nvml = FakeNvml(gpus=RuntimeError("NVML_ERROR_UNKNOWN"), driver=b"470.182.03")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = gpu_probe.probe_nvml()  # the driver is read, the GPUs cannot be counted; NVML is shut either way
    assert (probe.found, probe.driver_version, probe.cuda_version) == (False, "470.182.03", "12.4")
    assert "cannot count the GPUs (RuntimeError: NVML_ERROR_UNKNOWN)" in probe.detail
    assert nvml.calls == ["init", "shutdown"]
    nvml = FakeNvml(gpus=["Tesla V100"], cuda=RuntimeError("Function Not Found"))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = gpu_probe.probe_nvml()
    assert (probe.found, probe.driver_version, probe.cuda_version) == (True, "550.54.15", None)
    assert not gpu_probe.probe_device_files(tmp_path / "no such folder").found
    # an nvidia-smi that cannot talk to the driver: a GPU machine with a broken driver, reported with its words
    fake_machine(monkeypatch, tmp_path / "broken", None, smi=(SMI_NO_DRIVER, 9))
    probe = gpu_probe.probe_nvidia_smi()
    assert probe.found and "exited with status 9: NVIDIA-SMI has failed because it couldn't" in probe.detail
    # one that hangs
    (tmp_path / "broken" / "bin" / "nvidia-smi").write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    monkeypatch.setattr(gpu_probe, "_NVIDIA_SMI_TIMEOUT_S", 0.3)
    probe = gpu_probe.probe_nvidia_smi()
    assert probe.found and "did not run (TimeoutExpired" in probe.detail
    monkeypatch.setenv("PATH", str(tmp_path / "no such folder"))
    assert gpu_probe.probe_nvidia_smi() == gpu_probe.GpuProbe("nvidia-smi", False, "not on PATH")


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
