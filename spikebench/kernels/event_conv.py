"""Numba CPU kernels for an event-driven (sparse-input) Conv2d + 2x2 max-pool, forward and weight gradient.

They compute what :class:`spikebench.models.convpool.ConvPoolFunction` computes with dense PyTorch operations,

    forward   y = max_pool2d(conv2d(x, weight, bias, padding), 2)   (stride-1 conv, 2x2/stride-2 floor pool)
              + the pool arg-max, as ``aten.max_pool2d_with_indices`` gives it
    backward  dL/dweight and dL/dbias, routed through the saved arg-max (dL/dx is not computed here: use
              ``aten.convolution_backward`` for it where the input needs a gradient)

but only touch the non-zero inputs ("events"), found by scanning the dense input inside the kernel (no
event list is built). Forward: each image's conv map is built in a small per-block buffer ``[Ho, Wo, C_out]``
(channels innermost) that starts at the bias; an event ``v`` at ``(c, Y, X)`` adds ``v * weight[:, c, ky, kx]``
to conv position ``(Y + padding - ky, X + padding - kx)`` for every tap in range (the taps of one kernel row
are one contiguous run of the buffer); then the buffer is max-pooled. Weight gradient: each image's
``grad_out`` is routed to the arg-max positions of a zeroed ``[Ho, Wo, C_out]`` grid (only for images with
events), and each event adds ``v * grid[Y + padding - ky, X + padding - kx, :]`` to ``dW[:, c, ky, kx]``.

When it pays: the work is ``events x KH x KW x C_out`` multiply-adds instead of ``H x W x C_in x KH x KW x
C_out``, plus a fixed per-image cost (scan the input; initialise, pool and write the output, which for
N-MNIST layer 1 is most of the time). So it wins on sparse inputs (N-MNIST frames, their layer-1 spikes,
rate-coded MNIST) and loses on dense ones: against ConvPoolFunction the crossover is near 20 % density for
12 -> 32 channels; with one input channel (dense conv is inefficient there) the forward breaks even near
50-70 % and the weight gradient still wins at 70 %. Above that, use the dense path. The measured speed-ups
are in benchmarks/README.md ("The CPU kernels").

How the results compare with the dense path:
- Conv values are the same sums in a different order (bias first, then events in memory order: NCHW and
  channels-last inputs therefore differ in the last bit too), so they agree to float32 rounding (~1e-6
  relative), not bitwise; the pooled outputs likewise.
- The max-pool scans each window row-major and keeps the first maximum (strict ``>``), exactly as PyTorch's
  CPU max-pool, and the arg-max is ``y * Wo + x`` in the conv map, so ties on exactly equal values (e.g.
  windows no event reaches, all equal to the bias, or the positions of a window that no event reaches)
  resolve identically. Only a near-tie that the two summation orders round differently (two different sets
  of products within an ulp of each other) could pick another position; the tests never hit one.
- Weight and bias gradients are float32 sums in a different order, equal to rounding. They are summed per
  block of images (``numba.prange`` over blocks) into a partial, and the partials are added in block order;
  the block size depends only on N (at most MAX_BLOCKS blocks), so the result is bitwise reproducible and
  independent of the number of threads.
- The forward pass has no cross-image sums, so it is bitwise independent of the number of threads too.

Everything is float32 without fast-math. Compiled on first call and cached on disk (``cache=True``), so
later processes load the compiled code instead of compiling again.
The outputs are channels-last (``[N, C_out, Hp, Wp]`` tensors whose memory is ``[N, Hp, Wp, C_out]``), like
ConvPoolFunction's on the CPU.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from spikebench.buffers import POOL
from spikebench.kernels import njit_cached

#: At most this many blocks of images (so per-block partial gradients stay small) ...
MAX_BLOCKS = 64
#: ... and at least this many images per block. Block size depends on N only (never on the thread count).
MIN_BLOCK = 8


def _block_size(n: int) -> int:
    return max(MIN_BLOCK, -(-n // MAX_BLOCKS))


@njit_cached(inline="always")
def _event_taps(i, nhwc, c_in, h, w, pad, ho, wo, kh, kw, n_out):  # pragma: no cover - compiled
    """Where the input value at flat index ``i`` reaches: its channel ``c`` and row ``yq``, the kernel rows
    ``ky0 .. ky1-1`` in range, and per kernel row one contiguous run of ``nk`` values that starts at ``b0`` in a
    conv-map row ``[Wo*C_out]`` and at ``w0`` in a ``wf`` row (taps kx1-1 .. kx0 hit conv columns
    ox0 .. ox0 + (kx1-kx0) - 1)."""
    if nhwc:
        c = i % c_in
        r = i // c_in
        xq = r % w
        yq = r // w
    else:
        xq = i % w
        r = i // w
        yq = r % h
        c = r // h
    ky0, ky1 = max(0, yq + pad - ho + 1), min(kh, yq + pad + 1)
    kx0, kx1 = max(0, xq + pad - wo + 1), min(kw, xq + pad + 1)
    return c, yq, ky0, ky1, (xq + pad - kx1 + 1) * n_out, (kw - kx1) * n_out, (kx1 - kx0) * n_out


@njit_cached(parallel=True)
def _forward(x, nhwc, c_in, h, w, wf, bias, pad, ho, wo, out, am, block):  # pragma: no cover - compiled
    # Blocks of images in parallel. The per-block work is a separate (serial) function: compiled inside the
    # parallel loop, the same code vectorises badly (slower: benchmarks/README.md, "The CPU kernels").
    n_img = x.shape[0]
    for b in numba.prange((n_img + block - 1) // block):
        _forward_block(x, nhwc, c_in, h, w, wf, bias, pad, ho, wo, out, am, b * block, min(n_img, (b + 1) * block))


@njit_cached()
def _forward_block(x, nhwc, c_in, h, w, wf, bias, pad, ho, wo, out, am, lo, hi):  # pragma: no cover
    # Images lo..hi-1.
    # x [N, C_in*H*W] (each image flat, in NHWC or NCHW order); wf [C_in*KH, KW*C_out]: weight[o, c, ky, kx]
    # at wf[c*KH + ky, (KW-1-kx)*C_out + o] (kx reversed, so one event's taps of a kernel row are one run);
    # out/am [N, Hp, Wp, C_out].
    length = x.shape[1]
    n_out = bias.shape[0]
    kh = wf.shape[0] // c_in
    kw = wf.shape[1] // n_out
    hp, wp = ho // 2, wo // 2
    row = wo * n_out
    one, zero = np.int32(1), np.int32(0)
    below, below_right = np.int32(wo), np.int32(wo + 1)
    buf = np.empty((ho, row), np.float32)  # conv map [Ho, Wo, C_out] of one image, flat rows
    buf3 = buf.reshape(ho, wo, n_out)
    bias_row = np.empty(row, np.float32)
    for j in range(wo):
        for o in range(n_out):
            bias_row[j * n_out + o] = bias[o]
    for n in range(lo, hi):
        for yy in range(ho):
            for j in range(row):
                buf[yy, j] = bias_row[j]
        for i in range(length):
            v = x[n, i]
            if v != 0:
                c, yq, ky0, ky1, b0, w0, nk = _event_taps(i, nhwc, c_in, h, w, pad, ho, wo, kh, kw, n_out)
                for ky in range(ky0, ky1):
                    dst = buf[yq + pad - ky, b0 : b0 + nk]
                    src = wf[c * kh + ky, w0 : w0 + nk]
                    for j in range(nk):
                        dst[j] += v * src[j]
        for py in range(hp):
            y0 = 2 * py
            for px in range(wp):
                x0 = 2 * px
                i00 = np.int32(y0 * wo + x0)
                for o in range(n_out):
                    # PyTorch's row-major scan with strict '>' (the first maximum wins), branch-free:
                    # best of the top pair, of the bottom pair, then the bottom one only if strictly greater.
                    t00 = buf3[y0, x0, o]
                    t01 = buf3[y0, x0 + 1, o]
                    t10 = buf3[y0 + 1, x0, o]
                    t11 = buf3[y0 + 1, x0 + 1, o]
                    s1 = t01 > t00
                    m1 = t01 if s1 else t00
                    k1 = one if s1 else zero
                    s2 = t11 > t10
                    m2 = t11 if s2 else t10
                    k2 = below_right if s2 else below
                    s3 = m2 > m1
                    out[n, py, px, o] = m2 if s3 else m1
                    am[n, py, px, o] = i00 + (k2 if s3 else k1)


@njit_cached(parallel=True)
def _weight_grad(x, nhwc, c_in, h, w, g, am, pad, ho, wo, part_w, part_b, bad, block):  # pragma: no cover
    # g/am [N, Hp*Wp, C_out]; part_w [blocks, C_in*KH, KW*C_out] (layout of wf above), part_b [blocks, C_out],
    # both zeroed by the caller; bad[blocks] is set where an arg-max lies outside the conv map (then ignored).
    n_img = x.shape[0]
    for b in numba.prange((n_img + block - 1) // block):
        bad[b] = _weight_grad_block(
            x, nhwc, c_in, h, w, g, am, pad, ho, wo, part_w[b], part_b[b], b * block, min(n_img, (b + 1) * block)
        )


@njit_cached()
def _weight_grad_block(x, nhwc, c_in, h, w, g, am, pad, ho, wo, pw, pb, lo, hi):  # pragma: no cover
    # Images lo..hi-1, summed into pw [C_in*KH, KW*C_out] and pb [C_out]; True if an arg-max was out of range.
    size = ho * wo
    length = x.shape[1]
    n_out = pb.shape[0]
    kh = pw.shape[0] // c_in
    kw = pw.shape[1] // n_out
    n_pool = g.shape[1]
    bad = False
    grid = np.zeros((ho, wo * n_out), np.float32)  # dL/d(conv map) of one image, [Ho, Wo, C_out]
    flat = grid.reshape(ho * wo * n_out)
    events = np.empty(length, np.int64)
    for n in range(lo, hi):
        for p in range(n_pool):
            for o in range(n_out):
                pb[o] += g[n, p, o]
        n_ev = 0
        for i in range(length):
            if x[n, i] != 0:
                events[n_ev] = i
                n_ev += 1
        if n_ev == 0:
            continue
        # Route each pool window's gradient to its arg-max conv position (the others stay 0).
        for p in range(n_pool):
            for o in range(n_out):
                k = am[n, p, o]
                if 0 <= k < size:
                    flat[k * n_out + o] = g[n, p, o]
                else:
                    bad = True
        for e in range(n_ev):
            i = events[e]
            v = x[n, i]
            c, yq, ky0, ky1, b0, w0, nk = _event_taps(i, nhwc, c_in, h, w, pad, ho, wo, kh, kw, n_out)
            for ky in range(ky0, ky1):
                src = grid[yq + pad - ky, b0 : b0 + nk]
                dst = pw[c * kh + ky, w0 : w0 + nk]
                for j in range(nk):
                    dst[j] += v * src[j]
        for p in range(n_pool):
            for o in range(n_out):
                k = am[n, p, o]
                if 0 <= k < size:
                    flat[k * n_out + o] = 0.0
    return bad


def _flat_input(x: torch.Tensor) -> tuple[np.ndarray, bool]:
    """``x [N, C, H, W]`` as a ``[N, C*H*W]`` numpy view in its memory order (channels-last or NCHW)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        raise TypeError(f"expected a 4-d float32 CPU tensor, got {tuple(x.shape)} {x.dtype} on {x.device}")
    x = x.detach()
    n, length = x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return x.permute(0, 2, 3, 1).numpy().reshape(n, length), True
    return x.contiguous().numpy().reshape(n, length), False


def _weight_runs(weight: np.ndarray) -> np.ndarray:
    """``weight [C_out, C_in, KH, KW]`` as ``[C_in*KH, KW*C_out]`` with kx reversed (the kernels' layout)."""
    n_out, c_in, kh, kw = weight.shape
    return np.ascontiguousarray(weight.transpose(1, 2, 3, 0)[:, :, ::-1, :]).reshape(c_in * kh, kw * n_out)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous ``[N, H, W, C]`` numpy array of ``t [N, C, H, W]`` (a view when ``t`` is channels-last)."""
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def _conv_size(x: torch.Tensor, kh: int, kw: int, padding: int) -> tuple[int, int]:
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    ho, wo = x.shape[2] + 2 * padding - kh + 1, x.shape[3] + 2 * padding - kw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} larger than the padded input {tuple(x.shape[2:])} (padding {padding})")
    return ho, wo


def event_conv_pool_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool2d(conv2d(x, weight, bias, padding=padding), 2)`` and its arg-max, event-driven.

    ``x [N, C_in, H, W]`` float32 CPU (NCHW or channels-last), ``weight [C_out, C_in, KH, KW]``, ``bias [C_out]``
    or None. Returns ``out [N, C_out, Ho//2, Wo//2]`` float32 and ``argmax`` (same shape, int64, index
    ``y * Wo + x`` into the ``Ho x Wo`` conv map, as ``aten.max_pool2d_with_indices``), both channels-last.
    """
    padding = int(padding)
    xf, nhwc = _flat_input(x)
    n, c_in, h, w = x.shape
    n_out, wc, kh, kw = weight.shape
    if wc != c_in:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {c_in}")
    ho, wo = _conv_size(x, kh, kw, padding)
    wf = _weight_runs(weight.detach().to(torch.float32).numpy())
    b = bias.detach().to(torch.float32).contiguous().numpy() if bias is not None else np.zeros(n_out, np.float32)
    # Pooled (reused once the previous batch's are released, issue #22); _forward writes every element.
    out = POOL.empty((n, ho // 2, wo // 2, n_out), np.float32)
    am = POOL.empty((n, ho // 2, wo // 2, n_out), np.int64)
    if n and out.size:
        _forward(xf, nhwc, c_in, h, w, wf, b, padding, ho, wo, out, am, _block_size(n))
    return torch.from_numpy(out).permute(0, 3, 1, 2), torch.from_numpy(am).permute(0, 3, 1, 2)


def event_conv_pool_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, argmax: torch.Tensor, weight_shape, padding: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/dweight ``[C_out, C_in, KH, KW]`` and dL/dbias ``[C_out]`` of ``event_conv_pool_forward``.

    ``grad_out`` is dL/d(out) and ``argmax`` the forward's arg-max (``[N, C_out, Hp, Wp]``; channels-last
    avoids a copy). Only each pool window's arg-max conv position receives its gradient. The result is
    bitwise reproducible and does not depend on the number of threads.
    """
    padding = int(padding)
    xf, nhwc = _flat_input(x)
    n, c_in, h, w = x.shape
    n_out, wc, kh, kw = (int(s) for s in weight_shape)
    if wc != c_in:
        raise ValueError(f"weight shape {tuple(weight_shape)} does not fit input channels {c_in}")
    ho, wo = _conv_size(x, kh, kw, padding)
    shape = (n, n_out, ho // 2, wo // 2)
    if tuple(grad_out.shape) != shape or tuple(argmax.shape) != shape:
        raise ValueError(f"grad_out {tuple(grad_out.shape)} / argmax {tuple(argmax.shape)} should be {shape}")
    if argmax.dtype != torch.int64:
        raise TypeError(f"argmax must be int64, got {argmax.dtype}")
    g = _nhwc(grad_out.to(torch.float32)).reshape(n, shape[2] * shape[3], n_out)
    am = _nhwc(argmax).reshape(n, shape[2] * shape[3], n_out)
    block = _block_size(n)
    n_blocks = -(-n // block) if n else 0
    part_w = np.zeros((n_blocks, c_in * kh, kw * n_out), np.float32)
    part_b = np.zeros((n_blocks, n_out), np.float32)
    bad = np.zeros(n_blocks, np.bool_)
    if n_blocks and g.size:
        _weight_grad(xf, nhwc, c_in, h, w, g, am, padding, ho, wo, part_w, part_b, bad, block)
    if bad.any():
        raise ValueError(f"argmax has indices outside the {ho}x{wo} conv map")
    # Partials added in block order (numpy reduces the leading axis row by row): a fixed order.
    dw = part_w.sum(axis=0).reshape(c_in, kh, kw, n_out)[:, :, ::-1, :]
    grad_w = torch.from_numpy(np.ascontiguousarray(dw.transpose(3, 0, 1, 2)))
    grad_b = torch.from_numpy(part_b.sum(axis=0))
    return grad_w, grad_b
