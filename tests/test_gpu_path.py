"""The GPU code paths, run on the CPU: no host synchronisation in N-MNIST batches, the ConvPool backward's
memory, the tied-weight rule on CUDA, the precision settings (the Triton LIF kernel:
tests/test_kernels_lif_triton.py)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from spikebench import devices, models
from spikebench.data.catalog import NMNIST_CELLS
from spikebench.data.device import DeviceFrames, dense_batch_without_sync
from spikebench.data.nmnist import SparseFrames


def synthetic_frames(n: int = 12, seed: int = 0) -> SparseFrames:
    """Sparse frames of ``n`` samples of 3..8 frames, each cell at most once per sample (as preprocessing gives)."""
    rng = np.random.default_rng(seed)
    n_frames = rng.integers(3, 9, n)
    n_frames[3] = 0  # an empty sample too
    cells, counts, offsets = [], [], [0]
    for i in range(n):
        k = int(rng.integers(0, 40)) if n_frames[i] else 0
        c = np.sort(rng.choice(int(n_frames[i]) * NMNIST_CELLS, size=k, replace=False)) if k else np.zeros(0, int)
        cells.append(c.astype(np.int32))
        counts.append(rng.integers(1, 5, k).astype(np.int16))
        offsets.append(offsets[-1] + k)
    return SparseFrames(
        offsets=torch.tensor(offsets, dtype=torch.int64),
        cells=torch.from_numpy(np.concatenate(cells)),
        counts=torch.from_numpy(np.concatenate(counts)),
        labels=torch.from_numpy(rng.integers(0, 10, n)),
        n_frames=torch.from_numpy(n_frames.astype(np.int64)),
        sources=[f"s{i}" for i in range(n)],
        metadata={},
        device=torch.device("cpu"),
    )


def test_nmnist_batches_on_a_gpu_read_nothing_back_and_equal_the_padded_frames():
    frames = synthetic_frames()
    data = DeviceFrames(frames, name="train", source="synthetic", host_sync=False)  # the GPU path
    idx = torch.tensor([5, 3, 0, 11, 7])
    want, want_n = frames.dense_batch(idx)  # the CPU path: T = the batch's longest sample
    mp = pytest.MonkeyPatch()
    try:
        for name in ("tolist", "item", "__int__", "__float__", "__bool__", "__index__"):
            mp.setattr(
                torch.Tensor,
                name,
                lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("a tensor value was read back to the host")),
            )
        got, got_n = data.batch(idx)
    finally:
        mp.undo()
    assert got.shape == (data.t_max, 5, 2, 34, 34) and data.t_max == int(frames.n_frames.max())
    assert torch.equal(got[: want.shape[0]], want) and not got[want.shape[0] :].any()
    assert torch.equal(got_n, want_n)


def test_the_readback_spy_catches_the_host_synchronising_path():
    frames = synthetic_frames()
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.Tensor, "tolist", lambda self: (_ for _ in ()).throw(AssertionError("read back")))
    try:
        with pytest.raises(AssertionError, match="read back"):
            frames.dense_batch(torch.tensor([0, 1]))  # SparseFrames.dense_batch calls .tolist() per batch
    finally:
        mp.undo()


def test_dense_batch_without_sync_on_every_batch_size():
    frames = synthetic_frames(seed=3)
    data = DeviceFrames(frames, name="train", source="synthetic", host_sync=False)
    order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))
    for batch in (1, 4, len(frames)):
        for idx in order.split(batch):
            want, _ = frames.dense_batch(idx)
            got, _ = dense_batch_without_sync(frames, idx, data.t_max, data.cells_bound[len(idx) - 1])
            assert torch.equal(got[: want.shape[0]], want) and not got[want.shape[0] :].any()


# --------------------------------------------------------------------------------------------------
# ConvPool backward: no conv-output-sized tensor only for its shape
# --------------------------------------------------------------------------------------------------
class _Allocations(TorchDispatchMode):
    """Distinct storages of the op outputs with ``numel`` elements, seen while active."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.storages = numel, set()

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                self.storages.add(t.untyped_storage().data_ptr())
        return out


def _old_backward(x, weight, argmax, grad_out, padding, chunk=None):
    """The previous backward (an empty conv-output-sized tensor passed only for its shape), for reference."""
    chunk = chunk or x.shape[0]
    gxs, gw, gb = [], torch.zeros_like(weight), weight.new_zeros(weight.shape[0])
    for s in range(0, x.shape[0], chunk):
        g = grad_out[s : s + chunk]
        conv = (g.shape[0], weight.shape[0], x.shape[2] + 2 * padding - 4, x.shape[3] + 2 * padding - 4)
        like = torch.empty(conv, memory_format=torch.channels_last)
        grad_z = torch.ops.aten.max_pool2d_with_indices_backward(g, like, *models.convpool.POOL, argmax[s : s + chunk])
        gx, w, b = torch.ops.aten.convolution_backward(
            grad_z,
            x[s : s + chunk],
            weight,
            [weight.shape[0]],
            [1, 1],
            [padding, padding],
            [1, 1],
            False,
            [0, 0],
            1,
            [True, True, True],
        )
        gxs.append(gx)
        gw += w
        gb += b
    return torch.cat(gxs), gw, gb


@pytest.mark.parametrize("chunk", [3, 1000], ids=["cpu-chunks", "one-chunk-as-on-a-gpu"])
def test_convpool_backward_gradients_unchanged_and_one_conv_sized_buffer(monkeypatch, chunk):
    monkeypatch.setattr(models.lif, "CPU_KERNELS", False)  # the dense loop (what runs on a GPU)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, 12, 12, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(8, 3, 5, 5, generator=g, requires_grad=True)
    bias = torch.randn(8, generator=g, requires_grad=True)
    out = models.ConvPoolFunction.apply(x, weight, bias, 2, chunk)
    grad_out = torch.randn(out.shape, generator=g).contiguous(memory_format=torch.channels_last)
    with _Allocations(min(chunk, 10) * 8 * 12 * 12) as seen:
        out.backward(grad_out)
    assert len(seen.storages) == 1  # the gradient buffer itself (reused), nothing beside it
    z = F.conv2d(x.detach(), weight.detach(), bias.detach(), padding=2).contiguous(memory_format=torch.channels_last)
    _, argmax = torch.ops.aten.max_pool2d_with_indices(z, *models.convpool.POOL)
    gx, gw, gb = _old_backward(x.detach(), weight.detach(), argmax, grad_out, 2, chunk)
    assert torch.equal(x.grad, gx) and torch.equal(weight.grad, gw) and torch.equal(bias.grad, gb)  # bitwise


def test_old_convpool_backward_allocated_a_second_conv_sized_tensor():
    """The counter above does see the tensor the previous code allocated only for its shape."""
    x, weight = torch.randn(4, 3, 12, 12), torch.randn(8, 3, 5, 5)
    z = F.conv2d(x, weight, padding=2).contiguous(memory_format=torch.channels_last)
    out, argmax = torch.ops.aten.max_pool2d_with_indices(z, *models.convpool.POOL)
    with _Allocations(z.numel()) as seen:
        _old_backward(x, weight, argmax, torch.ones_like(out), 2)
    assert len(seen.storages) == 2


# --------------------------------------------------------------------------------------------------
# Tied weights: the same kind of kernel for the CNN and the SNN on CUDA
# --------------------------------------------------------------------------------------------------
def test_tied_weight_rule_picks_the_same_for_cnn_and_snn_on_cuda():
    conv4 = models.Conv2d(128, 256, 5, padding=2)  # experiment 2's fourth convolution, 4x4 maps
    batches = {"exp2_cnn": 128, "exp2_snn": 25 * 128}  # the SNN runs T * B images through it
    on = {
        dev: {
            net: models.tied_weights_pay(types.SimpleNamespace(shape=(n, 128, 4, 4), device=torch.device(dev)), conv4)
            for net, n in batches.items()
        }
        for dev in ("cpu", "cuda")
    }
    assert on["cpu"] == {"exp2_cnn": False, "exp2_snn": True}  # the CPU rule does differ by batch
    assert on["cuda"] == {"exp2_cnn": False, "exp2_snn": False}  # on CUDA: direct convolution for both


# --------------------------------------------------------------------------------------------------
# Precision, cudnn.benchmark and the record of them
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def restore_numerics():
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        models.lif.LIF_BACKEND,
    )
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
    torch.set_float32_matmul_precision(saved[2])
    torch.backends.cudnn.benchmark = saved[3]
    devices.apply_numerics("fp32", saved[3], saved[4])


@pytest.mark.parametrize(
    ("precision", "tf32", "matmul"), [("fp32", False, "highest"), ("tf32", True, "high"), ("bf16", False, "highest")]
)
def test_apply_numerics_sets_both_tf32_flags_alike(restore_numerics, precision, tf32, matmul):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (not tf32), (not tf32)
    settings = devices.apply_numerics(precision, cudnn_benchmark=False, lif_backend="eager")
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert torch.get_float32_matmul_precision() == matmul and torch.backends.cudnn.benchmark is False
    assert settings["precision"] == precision and settings["lif_backend"] == "eager"
    assert settings["cuda_matmul_allow_tf32"] is tf32 and settings["cudnn_allow_tf32"] is tf32
    assert settings["torch_threads"] == torch.get_num_threads()
    assert settings["autocast_dtype"] == ("bfloat16" if precision == "bf16" else "none")
    assert isinstance(devices.autocast("cpu"), torch.autocast) == (precision == "bf16")


def test_bad_precision_names_the_key(restore_numerics):
    with pytest.raises(ValueError, match="config key 'precision': 'fp16' is not one of fp32, tf32, bf16"):
        devices.apply_numerics("fp16")


def test_bf16_forward_runs_every_network_in_bfloat16_with_fp32_gradients(restore_numerics):
    from pathlib import Path

    from spikebench.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config.yaml", root / "config.demo.yaml")
    devices.apply_numerics("bf16")
    for name in ("exp2_cnn", "exp3_snn_nmnist"):
        spec = cfg["networks"][name]
        torch.manual_seed(0)
        net = models.build_network(spec, name)
        shape = models.input_shape(spec)
        x = torch.rand(4, *shape) if spec["kind"] == "ann" else (torch.rand(6, 4, *shape) < 0.05).float()
        seen = []
        hook = net.register_forward_hook(lambda m, i, o, seen=seen: seen.append(torch.is_autocast_enabled("cpu")))
        with devices.autocast("cpu"):
            loss = models.network_loss(spec["kind"], net(x), torch.arange(4), None, spec)
        hook.remove()
        loss.backward()
        assert seen == [True]
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())


def test_hardware_line_of_the_tables_names_the_precision(restore_numerics):
    from spikebench.results import describe_hardware

    hardware = {"device": "cpu", "torch_version": "2.x", "numerics": devices.apply_numerics("tf32", False, "eager")}
    line = describe_hardware(hardware)
    assert "precision tf32, cudnn.benchmark False, LIF eager" in line
    assert f"threads torch {torch.get_num_threads()}" in line
    assert "precision" not in describe_hardware({"device": "cpu", "torch_version": "2.x"})  # older results
