"""Conv2d + 2x2 max-pool over all T*B inputs of an SNN layer, in cache-sized chunks (SNN convolutions only).

The full-size convolution output is never kept; on the CPU inputs sparser than ``EVENT_DENSITY`` run through
the event-driven numba kernels of :mod:`spikebench.kernels.event_conv`. Same values as ``max_pool2d(conv2d(x))``
to float rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spikebench.models.lif import use_cpu_kernels
from spikebench.models.tied_conv import tied_conv2d, tied_weights_pay

#: On the CPU, a convolution whose input has fewer non-zeros than this fraction runs event-driven
#: (``spikebench.kernels.event_conv``): N-MNIST frames (~0.5%), their layer-1 spikes (~2%), rate-coded MNIST
#: (~13%): below the forward pass's break-even density (benchmarks/README.md, "The CPU kernels").
EVENT_DENSITY = 0.2

#: ... and the weight gradient of a convolution with at most 3 input channels runs event-driven below this
#: density (experiment 2's first layer on rate-coded CIFAR-10, ~50%, where it pays: benchmarks/README.md).
EVENT_WEIGHT_GRAD_DENSITY = 0.7

#: Target size of one chunk's convolution output on the CPU (bytes): small enough to stay in cache.
CPU_CHUNK_BYTES = 4 * 2**20

POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode


class ConvPoolFunction(torch.autograd.Function):
    """``max_pool2d(conv2d(x, weight, bias, padding), 2)`` over many images in chunks, saving only the arg-max.

    The full-size convolution output is never kept: forward and backward run chunk by chunk (cache-sized on
    the CPU, where channels-last is used because PyTorch's CPU max-pool is several times faster in it; all
    images at once on a GPU) and backward routes each chunk's gradient through the saved arg-max indices.
    The max-pool is PyTorch's own, so ties go to the same (first) position as ``nn.MaxPool2d``.
    On the CPU an input sparser than ``EVENT_DENSITY`` runs through the event-driven numba kernels instead
    (forward and weight gradient; the input gradient, where needed, stays the dense loop's), which give the
    same values to float rounding and resolve max-pool ties the same way; with at most 3 input channels the
    weight gradient is event-driven up to ``EVENT_WEIGHT_GRAD_DENSITY``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, chunk: int):
        fmt = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
        if torch.is_autocast_enabled(x.device.type):  # precision bf16: the convolution in autocast's dtype
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        conv_size = (x.shape[2] + 2 * padding - weight.shape[2] + 1, x.shape[3] + 2 * padding - weight.shape[3] + 1)
        ctx.padding, ctx.chunk, ctx.conv_size, ctx.fmt = padding, chunk, conv_size, fmt
        ctx.has_bias = bias is not None
        density = torch.count_nonzero(x).item() / x.numel() if x.numel() and use_cpu_kernels(x) else 1.0
        ctx.events = density < EVENT_DENSITY
        # oneDNN's weight gradient is slow for few input channels: the event kernel's pays up to ~70% density.
        ctx.event_weight_grad = ctx.events or (x.shape[1] <= 3 and density < EVENT_WEIGHT_GRAD_DENSITY)
        if ctx.events:  # sparse input on the CPU: event-driven kernel, the input's layout as it is
            from spikebench.kernels import event_conv

            out, argmax = event_conv.event_conv_pool_forward(x, weight, bias, padding)
            ctx.save_for_backward(x, weight, argmax)
            return out
        x = x.contiguous(memory_format=fmt)
        n = x.shape[0]
        shape = (n, weight.shape[0], conv_size[0] // 2, conv_size[1] // 2)
        out, argmax = _empty(shape, x.dtype, x.device, fmt), _empty(shape, torch.int64, x.device, fmt)
        for s in range(0, n, chunk):
            z = F.conv2d(x[s : s + chunk], weight, bias, padding=padding)
            if fmt is torch.channels_last:  # a 1-channel input leaves the layout ambiguous: force it
                z = z.contiguous(memory_format=fmt)
            torch.ops.aten.max_pool2d_with_indices.out(z, *POOL, out=out[s : s + chunk], indices=argmax[s : s + chunk])
        ctx.save_for_backward(x, weight, argmax)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        x, weight, argmax = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_out = grad_out.contiguous(memory_format=ctx.fmt)
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = weight.new_zeros(weight.shape[0]) if need_b else None
        if ctx.event_weight_grad and (need_w or need_b):
            from spikebench.kernels import event_conv

            gw, gb = event_conv.event_conv_pool_weight_grad(x, grad_out, argmax, weight.shape, ctx.padding)
            grad_w, grad_b = (gw if need_w else None), (gb if need_b else None)
            need_w = need_b = False  # the dense loop below computes the input gradient only
            if not need_x:
                return None, grad_w, grad_b, None, None
        grad_x = _empty(x.shape, x.dtype, x.device, ctx.fmt) if need_x else None  # every chunk written below
        # One chunk-sized buffer for the conv output's gradient, reused by every chunk. The max-pool backward
        # reads only the shape and layout of its `self` argument, so the buffer is passed as both `self` and
        # the output: no second conv-output-sized tensor just for its shape (on a GPU, where one chunk is the
        # whole batch, that was ~1.7 GB for experiment 3's N-MNIST SNN).
        buffer = torch.empty(
            (min(ctx.chunk, x.shape[0]), grad_out.shape[1], *ctx.conv_size),
            dtype=grad_out.dtype,
            device=grad_out.device,
            memory_format=ctx.fmt,
        )
        for s in range(0, x.shape[0], ctx.chunk):
            g = grad_out[s : s + ctx.chunk]
            grad_z = buffer[: g.shape[0]]
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                g, grad_z, *POOL, argmax[s : s + ctx.chunk], grad_input=grad_z
            )
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_z,
                x[s : s + ctx.chunk],
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                [1, 1],
                [ctx.padding, ctx.padding],
                [1, 1],
                False,
                [0, 0],
                1,
                [need_x, need_w, need_b],
            )
            if need_x:
                grad_x[s : s + ctx.chunk] = gx
            if need_w:
                grad_w += gw
            if need_b:
                grad_b += gb
        return grad_x, grad_w, grad_b, None, None


def _empty(shape, dtype: torch.dtype, device: torch.device, fmt: torch.memory_format) -> torch.Tensor:
    """``torch.empty(shape, memory_format=fmt)``; on the CPU from :data:`spikebench.buffers.POOL` (the pooled
    output, arg-max and input-gradient buffers of the previous batch reused once released: issue #22)."""
    if device.type == "cpu" and dtype in (torch.float32, torch.int64):
        from spikebench.buffers import cpu_empty

        return cpu_empty(shape, dtype, channels_last=fmt is torch.channels_last)
    return torch.empty(shape, dtype=dtype, device=device, memory_format=fmt)


def conv_pool(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``max_pool2d(conv(x), 2)`` for ``x [N, C, H, W]``: ``ConvPoolFunction`` (cache-sized chunks on the CPU),
    or the tied-weight Linear followed by PyTorch's max-pool on maps where that pays."""
    padding = int(conv.padding[0])
    if tied_weights_pay(x, conv):
        return F.max_pool2d(tied_conv2d(x, conv.weight, conv.bias, padding), 2)
    if x.device.type == "cpu":
        h = x.shape[2] + 2 * padding - conv.kernel_size[0] + 1
        w = x.shape[3] + 2 * padding - conv.kernel_size[1] + 1
        chunk = max(1, CPU_CHUNK_BYTES // (conv.out_channels * h * w * x.element_size()))
    else:
        chunk = max(1, x.shape[0])
    return ConvPoolFunction.apply(x, conv.weight, conv.bias, padding, chunk)
