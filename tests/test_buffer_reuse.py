"""spikebench.buffers (issue #22): big per-batch CPU buffers are reused from one batch to the next, never while
anything still uses them, and reuse changes no result (bitwise equal to fresh allocations)."""

import numpy as np
import pytest
import torch

from spikebench import buffers
from spikebench.buffers import BufferPool
from spikebench.data.catalog import NMNIST_CELLS as _CELLS
from spikebench.data.nmnist import SparseFrames
from spikebench.models import build_network


@pytest.fixture
def small_pool(monkeypatch):
    """The process pool, emptied and pooling every size (the test tensors are below MIN_BYTES)."""
    monkeypatch.setattr(buffers, "MIN_BYTES", 0)
    monkeypatch.setattr(buffers.POOL, "enabled", True)
    buffers.POOL.clear()
    yield buffers.POOL
    buffers.POOL.clear()


def test_a_released_buffer_is_handed_out_again_and_a_live_one_never():
    pool = BufferPool()
    first = pool.empty((2**21,), np.float32)  # 8 MiB: above MIN_BYTES
    ptr = first.ctypes.data
    tensor = torch.from_numpy(first).view(2, -1).t()  # a tensor view keeps the buffer in use
    del first
    second = pool.empty((2**21,), np.float32)
    assert second.ctypes.data != ptr  # the first is still used by `tensor`
    del tensor
    third = pool.empty((2**21 - 5,), np.float32)  # released: reused, also for a slightly smaller request
    assert third.ctypes.data == ptr
    assert (pool.hits, pool.misses) == (1, 2)
    del second, third
    assert pool.free_flags() == [True, True]


def test_small_requests_and_a_disabled_pool_allocate_fresh_arrays():
    pool = BufferPool()
    small = pool.empty((1000,), np.float32)
    assert small.base is None and pool.held_bytes() == 0
    pool.enabled = False
    a = pool.empty((2**21,), np.float32)
    del a
    assert pool.held_bytes() == 0 and pool.misses == 0


def test_a_buffer_twice_too_large_is_not_used_and_free_buffers_beyond_the_limit_are_dropped():
    pool = BufferPool(max_buffers=2)
    big = pool.empty((2**23,), np.float32)  # 32 MiB
    del big
    small = pool.empty((2**21,), np.float32)  # 8 MiB: not carved from the free 32 MiB buffer
    assert pool.misses == 2
    del small
    pool.empty((2**22,), np.float32)  # a third buffer: the least recently used free one is dropped
    assert len(pool.free_flags()) == 2


def test_zeros_clears_a_reused_buffer():
    pool = BufferPool()
    a = pool.empty((2**21,), np.float32)
    a.fill(7.0)
    del a
    z = pool.zeros((2**21,), np.float32)
    assert pool.hits == 1 and not z.any()


def test_cpu_empty_gives_the_layout_asked_for(small_pool):
    t = buffers.cpu_empty((3, 4, 5, 6), torch.float32, channels_last=True)
    assert t.shape == (3, 4, 5, 6) and t.is_contiguous(memory_format=torch.channels_last)
    assert buffers.cpu_empty((3, 4), torch.int64).dtype == torch.int64


def _frames(n: int = 6, seed: int = 0) -> SparseFrames:
    rng = np.random.default_rng(seed)
    n_frames = rng.integers(3, 7, n)
    cells, counts, offsets = [], [], [0]
    for i in range(n):
        c = np.sort(rng.choice(int(n_frames[i]) * _CELLS, size=300, replace=False))
        cells.append(c.astype(np.int32))
        counts.append(rng.integers(1, 4, 300).astype(np.int16))
        offsets.append(offsets[-1] + 300)
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


def test_dense_nmnist_batches_reuse_their_buffer_and_equal_fresh_ones(small_pool, monkeypatch):
    frames = _frames()
    first, _ = frames.dense_batch([0, 1, 2])
    kept = first.clone()
    ptr = first.data_ptr()
    del first
    again, _ = frames.dense_batch([3, 4, 5])  # the first batch's buffer, zeroed again
    assert again.data_ptr() == ptr
    monkeypatch.setattr(small_pool, "enabled", False)
    fresh, _ = frames.dense_batch([3, 4, 5])
    assert torch.equal(again, fresh)
    assert torch.equal(frames.dense_batch([0, 1, 2])[0], kept)


NMNIST_SPEC = {
    "experiment": 3,
    "dataset": "nmnist",
    "kind": "snn",
    "architecture": "conv2",
    "channels": [12, 32],
    "epochs": 1,
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 4,
    "beta": 0.8,
    "threshold": 1.0,
    "surrogate": "atan",
    "correct_rate": 0.8,
    "incorrect_rate": 0.2,
}


def _train_steps(inputs, monkeypatch, pooled: bool, keep_graphs: bool = False):
    """Two SGD steps of the N-MNIST SNN (numba LIF and event convolution forced on): losses, weights and the
    first layer's data pointers per step. With ``keep_graphs`` both forward passes run before either backward
    (both graphs alive: nothing saved for the first backward may be overwritten by the second forward)."""
    from spikebench.models import lif

    monkeypatch.setattr(lif, "LIF_KERNEL_MIN_SIZE", 0)
    monkeypatch.setattr(buffers.POOL, "enabled", pooled)
    torch.manual_seed(0)
    net = build_network(NMNIST_SPEC)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses, ptrs = [], []
    if keep_graphs:
        outs = [net(x) for x in inputs]
        loss = sum((out.sum(0) ** 2).mean() for out in outs)
        loss.backward()
        return [loss.item()], [p.grad.clone() for p in net.parameters()], []
    for x in inputs:
        spk, mem = net.stages[0](x.reshape(x.shape[0], x.shape[1], 2, 34, 34))
        ptrs.append((spk.data_ptr(), mem.data_ptr()))
        del spk, mem
        out = net(x)
        loss = (out.sum(0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        del out, loss
        ptrs.append(({b.ctypes.data for b in buffers.POOL._buffers}, buffers.POOL.misses))
    return losses, [p.detach().clone() for p in net.parameters()], ptrs


@pytest.mark.parametrize("keep_graphs", [False, True])
def test_snn_training_with_reused_buffers_equals_fresh_buffers_bitwise(small_pool, monkeypatch, keep_graphs):
    gen = torch.Generator().manual_seed(1)
    inputs = [(torch.rand((6, 4, 2, 34, 34), generator=gen) < 0.02).float() * 3 for _ in range(2)]
    losses, params, ptrs = _train_steps(inputs, monkeypatch, pooled=True, keep_graphs=keep_graphs)
    want_losses, want_params, _ = _train_steps(inputs, monkeypatch, pooled=False, keep_graphs=keep_graphs)
    assert losses == want_losses
    for got, want in zip(params, want_params, strict=True):
        assert torch.equal(got, want)
    if not keep_graphs:  # per step: (spikes, membrane) pointers of layer 1, then (pool buffers, misses so far)
        (spk_1, mem_1), (held_1, misses_1), (spk_2, mem_2), (held_2, misses_2) = ptrs
        assert misses_2 == misses_1 and held_2 == held_1  # the second step allocated no new buffer
        assert {spk_2, mem_2} <= held_1 and {spk_1, mem_1} <= held_1  # its layer-1 outputs live in the first's
