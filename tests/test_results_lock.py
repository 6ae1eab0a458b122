"""One results folder, one run writing it (spikebench.results_lock): two processes contend for the lock, a dead
run's lock is taken over, and the workflow takes it when its jobs are about to run (never in a dry run)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, copy_workflow, snakemake_cmd
from spikebench import results_lock
from spikebench.results_lock import LOCK_NAME, ResultsLockedError

# A run that takes the lock of argv[1], says so, and keeps it until its stdin closes (or it is killed).
# With argv[2], it then rewrites its record to name that host (what a run on another NFS client leaves).
HOLDER = r"""
import json, sys
from spikebench import results_lock
lock = results_lock.acquire(sys.argv[1])
if len(sys.argv) > 2:
    lock._fh.seek(0)
    lock._fh.truncate()
    lock._fh.write(json.dumps({**lock.holder, "host": sys.argv[2]}))
    lock._fh.flush()
print("HELD", flush=True)
sys.stdin.read()
lock.release()
"""

# A second run, from another working directory: exit 3 with the message when the lock is held.
CONTENDER = r"""
import sys
from spikebench import results_lock
try:
    results_lock.acquire(sys.argv[1]).release()
except results_lock.ResultsLockedError as exc:
    print(exc)
    sys.exit(3)
print("ACQUIRED")
"""


def _python(code: str, *args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


@pytest.fixture
def holder(tmp_path):
    """Start a holder process on ``<tmp>/results``; yields a function (extra args) -> the running process."""
    started = []

    def start(*extra: str) -> subprocess.Popen:
        (tmp_path / "checkout1").mkdir(exist_ok=True)
        proc = _python(HOLDER, str(tmp_path / "results"), *extra, cwd=tmp_path / "checkout1", stdin=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout.readline().strip() == "HELD"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _contend(tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "checkout2").mkdir(exist_ok=True)
    proc = _python(CONTENDER, str(tmp_path / "results"), cwd=tmp_path / "checkout2")
    out, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def test_a_second_process_is_refused_with_the_holders_name_until_the_first_lets_go(tmp_path, holder):
    first = holder()
    second = _contend(tmp_path)
    assert second.returncode == 3, second.stdout
    message = " ".join(second.stdout.split())
    assert f"process {first.pid} on host {socket.gethostname()}" in message
    assert f"working directory {tmp_path / 'checkout1'}" in message and "started 20" in message
    assert f"{(tmp_path / 'results').resolve()} is being written by another run" in message
    record = json.loads((tmp_path / "results" / LOCK_NAME).read_text())
    assert record["pid"] == first.pid and record["cwd"] == str(tmp_path / "checkout1")

    first.stdin.close()  # the first run ends and releases: its record is emptied
    assert first.wait(timeout=30) == 0
    assert (tmp_path / "results" / LOCK_NAME).read_text() == ""
    assert _contend(tmp_path).stdout.strip() == "ACQUIRED"


def test_a_dead_runs_lock_is_taken_over_and_logged(tmp_path, holder, caplog):
    dead = holder()
    dead.send_signal(signal.SIGKILL)  # no release: its record stays, the kernel frees the lock
    dead.wait(timeout=30)
    assert json.loads((tmp_path / "results" / LOCK_NAME).read_text())["pid"] == dead.pid
    with caplog.at_level(logging.WARNING, logger="spikebench"):
        lock = results_lock.acquire(tmp_path / "results")
    try:
        assert lock.previous["pid"] == dead.pid
        assert f"took over the lock left by process {dead.pid} on host {socket.gethostname()}" in caplog.text
        assert "ended without releasing it" in caplog.text and "another host" not in caplog.text
        record = json.loads((tmp_path / "results" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["cwd"] == os.getcwd()
    finally:
        lock.release()


def test_a_lock_of_another_host_is_named_as_such(tmp_path, holder, caplog):
    """On a results folder shared between hosts (NFS) the holder may be a process this host cannot see."""
    first = holder("node17")
    second = _contend(tmp_path)
    assert second.returncode == 3
    message = " ".join(second.stdout.split())
    assert f"process {first.pid} on host node17" in message
    assert "another host (node17)" in message and "NFS" in message
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with caplog.at_level(logging.WARNING, logger="spikebench"):
        results_lock.acquire(tmp_path / "results").release()
    assert "names another host (node17)" in caplog.text and "local_lock=flock" in caplog.text


def test_hold_keeps_one_lock_per_folder_until_let_go(tmp_path):
    first = results_lock.hold(tmp_path / "results")
    assert results_lock.hold(tmp_path / "results") is first  # onstart twice: the same lock
    with pytest.raises(ResultsLockedError):  # another open file description is refused, even in this process
        results_lock.acquire(tmp_path / "results")
    results_lock.let_go(tmp_path / "results")
    results_lock.let_go(tmp_path / "results")  # nothing held: nothing happens
    assert not first.held
    results_lock.acquire(tmp_path / "results").release()


@pytest.mark.slow  # runs Snakemake (a dry run and one small job)
def test_the_workflow_stops_before_any_job_while_another_run_holds_its_results(tmp_path):
    workdir = copy_workflow(tmp_path / "checkout2")
    target = "results-demo/data/manifest_mnist.json"
    proc = _python(HOLDER, str(workdir / "results-demo"), cwd=tmp_path, stdin=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        args = (target, "--cores", "1", "--configfile", "config.demo.yaml")
        dry = subprocess.run(snakemake_cmd("-n", *args), cwd=workdir, capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]  # a dry run takes no lock
        run = subprocess.run(snakemake_cmd(*args), cwd=workdir, capture_output=True, text=True, timeout=300)
        out = " ".join((run.stdout + run.stderr).split())
        assert run.returncode != 0 and "ResultsLockedError" in out
        assert f"process {proc.pid} on host {socket.gethostname()} (working directory {tmp_path}" in out
        assert not (workdir / target).exists()  # no job ran
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    run = subprocess.run(snakemake_cmd(*args), cwd=workdir, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (workdir / target).is_file()
    assert (workdir / "results-demo" / LOCK_NAME).read_text() == ""  # released at the end (onsuccess)
