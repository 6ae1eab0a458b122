"""Event-driven conv + 2x2 max-pool kernels (spikebench.kernels.event_conv) against PyTorch's dense path."""

import numba
import pytest
import torch
import torch.nn.functional as F

from spikebench.kernels.event_conv import event_conv_pool_forward, event_conv_pool_weight_grad


def sparse_input(n, c, h, w, density, seed, values=(1, 2)):
    """Non-negative sparse float32 input: a fraction `density` non-zero, values drawn from range(*values)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, c, h, w, generator=g) < density
    vals = torch.randint(values[0], values[1], (n, c, h, w), generator=g).float()
    return mask.float() * vals


def params(c_in, c_out, seed, k=5):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randn(c_out, c_in, k, k, generator=g) * 0.2, torch.randn(c_out, generator=g) * 0.2


def dense(x, weight, bias, padding):
    return F.max_pool2d_with_indices(F.conv2d(x, weight, bias, padding=padding), 2)


# (density, padding, C_in, C_out, H, W, values): conv maps of odd height and/or width included (floor pooling
# drops the last row/column), values 1 or 2-3.
CASES = [
    (0.005, 0, 2, 12, 34, 34, (1, 2)),
    (0.005, 2, 2, 12, 15, 13, (1, 2)),  # conv map 15x13 (both odd)
    (0.1, 0, 12, 32, 15, 15, (1, 2)),  # 11x11
    (0.1, 2, 12, 16, 14, 15, (2, 4)),  # 14x15
    (0.5, 0, 1, 12, 32, 32, (1, 2)),
    (0.5, 2, 1, 12, 13, 16, (2, 4)),  # 13x16
    (0.1, 0, 1, 12, 17, 20, (2, 4)),  # 13x16
    (0.02, 1, 3, 12, 12, 12, (1, 4)),  # padding 1: 10x10
]


@pytest.mark.parametrize("density,padding,c_in,c_out,h,w,values", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_matches_pytorch(density, padding, c_in, c_out, h, w, values, channels_last):
    x = sparse_input(37, c_in, h, w, density, seed=c_in * 7 + h, values=values)
    x[3] = 0.0  # an all-zero image: every conv value is the bias
    weight, bias = params(c_in, c_out, seed=h + w)
    ref, ref_idx = dense(x, weight, bias, padding)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out, idx = event_conv_pool_forward(x, weight, bias, padding)
    assert out.shape == ref.shape and idx.shape == ref_idx.shape
    assert out.dtype == torch.float32 and idx.dtype == torch.int64
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("padding", [0, 2])
def test_all_zero_input_ties_go_to_first_position(padding):
    """All four values of every window are equal (the bias, or 0 without bias): PyTorch picks the first."""
    x = torch.zeros(3, 2, 14, 15)
    weight, bias = params(2, 12, seed=3)
    for b in (bias, None):
        out, idx = event_conv_pool_forward(x, weight, b, padding)
        ref, ref_idx = dense(x, weight, b, padding)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
        wo = 15 + 2 * padding - 4
        hp, wp = idx.shape[2], idx.shape[3]
        first = (2 * torch.arange(hp)[:, None] * wo + 2 * torch.arange(wp)[None, :]).expand_as(idx)
        assert torch.equal(idx, first)


def test_partial_windows_ties():
    """One event: windows it reaches only in part still hold exact ties between their untouched positions."""
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 7, 9] = 1.0
    weight = -torch.ones(4, 1, 5, 5)  # the event lowers every position it reaches
    weight[1] = 1.0  # ... or raises it
    bias = torch.tensor([0.0, 0.0, 0.5, -0.5])
    out, idx = event_conv_pool_forward(x, weight, bias, 0)
    ref, ref_idx = dense(x, weight, bias, 0)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_matches_conv_pool_function():
    """Same result as the dense autograd function the models use."""
    from spikebench.models import ConvPoolFunction

    x = sparse_input(50, 2, 34, 34, 0.01, seed=5)
    weight, bias = params(2, 12, seed=5)
    ref = ConvPoolFunction.apply(x, weight, bias, 0, 16)
    out, _ = event_conv_pool_forward(x, weight, bias, 0)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def autograd_grads(x, weight, bias, padding, grad_out):
    w = weight.clone().requires_grad_()
    b = bias.clone().requires_grad_()
    y = F.max_pool2d(F.conv2d(x, w, b, padding=padding), 2)
    y.backward(grad_out)
    return w.grad, b.grad


def assert_rel_close(actual, expected, rel):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max() / scale
    assert err <= rel, f"relative error {err:.3g} > {rel}"


@pytest.mark.parametrize("density,padding,c_in,c_out,h,w,values", CASES)
def test_weight_grad_matches_autograd(density, padding, c_in, c_out, h, w, values):
    x = sparse_input(45, c_in, h, w, density, seed=c_in * 11 + w, values=values)
    x[0] = 0.0
    weight, bias = params(c_in, c_out, seed=h * w)
    out, idx = event_conv_pool_forward(x, weight, bias, padding)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(h))
    ref_w, ref_b = autograd_grads(x, weight, bias, padding, grad_out)
    gw, gb = event_conv_pool_weight_grad(x, grad_out, idx, weight.shape, padding)
    assert gw.shape == weight.shape and gb.shape == bias.shape
    assert gw.dtype == torch.float32 and gb.dtype == torch.float32
    assert_rel_close(gw, ref_w, 1e-4)
    assert_rel_close(gb, ref_b, 1e-4)
    # Layout of x, grad_out and argmax changes nothing but the order of a few sums.
    cl = torch.channels_last
    gw2, gb2 = event_conv_pool_weight_grad(
        x.contiguous(memory_format=cl), grad_out.contiguous(memory_format=cl), idx.contiguous(), weight.shape, padding
    )
    assert_rel_close(gw2, ref_w, 1e-4)
    assert torch.equal(gb2, gb)


def test_weight_grad_all_zero_input():
    x = torch.zeros(20, 2, 12, 12)
    weight, bias = params(2, 12, seed=1)
    out, idx = event_conv_pool_forward(x, weight, bias, 0)
    grad_out = torch.randn(out.shape)
    gw, gb = event_conv_pool_weight_grad(x, grad_out, idx, weight.shape, 0)
    assert torch.equal(gw, torch.zeros_like(weight))
    assert_rel_close(gb, grad_out.sum((0, 2, 3)), 1e-5)


def run_both(x, weight, bias, padding, grad_out):
    out, idx = event_conv_pool_forward(x, weight, bias, padding)
    gw, gb = event_conv_pool_weight_grad(x, grad_out, idx, weight.shape, padding)
    return out, idx, gw, gb


def test_results_do_not_depend_on_thread_count():
    """Partials per block of images (block size set by N alone), added in block order: bitwise equal."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has a single thread here")
    x = sparse_input(1203, 2, 20, 20, 0.05, seed=9, values=(1, 3))  # 64 blocks of 19 images (the last short)
    weight, bias = params(2, 12, seed=9)
    grad_out = torch.randn(1203, 12, 8, 8, generator=torch.Generator().manual_seed(9))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run_both(x, weight, bias, 0, grad_out)
        numba.set_num_threads(2)
        two = run_both(x, weight, bias, 0, grad_out)
        again = run_both(x, weight, bias, 0, grad_out)
    finally:
        numba.set_num_threads(before)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)
    ref_w, ref_b = autograd_grads(x, weight, bias, 0, grad_out)
    assert_rel_close(one[2], ref_w, 1e-4)
    assert_rel_close(one[3], ref_b, 1e-4)


def test_empty_batch_and_errors():
    weight, bias = params(2, 12, seed=0)
    out, idx = event_conv_pool_forward(torch.zeros(0, 2, 34, 34), weight, bias, 0)
    assert out.shape == (0, 12, 15, 15) and idx.shape == (0, 12, 15, 15)
    gw, gb = event_conv_pool_weight_grad(torch.zeros(0, 2, 34, 34), out, idx, weight.shape, 0)
    assert torch.equal(gw, torch.zeros_like(weight)) and torch.equal(gb, torch.zeros(12))

    x = sparse_input(2, 2, 12, 12, 0.2, seed=0)
    with pytest.raises(TypeError):
        event_conv_pool_forward(x.double(), weight, bias, 0)
    with pytest.raises(ValueError):
        event_conv_pool_forward(x[:, :1], weight, bias, 0)
    with pytest.raises(ValueError):
        event_conv_pool_forward(x[:, :, :3, :3], weight, bias, 0)
    out, idx = event_conv_pool_forward(x, weight, bias, 0)
    g = torch.ones_like(out)
    with pytest.raises(ValueError, match="argmax"):
        event_conv_pool_weight_grad(x, g, idx + 1000, weight.shape, 0)
    with pytest.raises(TypeError):
        event_conv_pool_weight_grad(x, g, idx.int(), weight.shape, 0)
    with pytest.raises(ValueError):
        event_conv_pool_weight_grad(x, g[:, :, :2], idx, weight.shape, 0)
