"""The convolution stack of the conv architectures (ANN and SNN): 5x5 convolutions, and on the CPU a convolution
on a small map run as one Linear layer with tied weights (:func:`tied_weights_pay`, the same rule for both kinds)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from spikebench.spec import NetworkSpec, NetworkSpecError

#: The tied-weight matrix may always take this much memory (elements; 16 MiB of float32), see tied_weights_pay.
TIED_MATRIX_FREE_SIZE = 2**22


def tied_weights_pay(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """True when ``conv`` (5x5 'same') on ``x [N, C, H, W]`` is better run as a Linear layer with tied weights.

    On a map with fewer positions than kernel taps (experiment 2's fourth and fifth convolutions: 4x4 and 2x2
    maps, 5x5 kernel, padding 2) most of a direct convolution's multiply-adds hit the zero padding, and
    oneDNN's weight gradient for such shapes runs at a fraction of its usual speed. As a Linear layer
    ``[C_out*H*W, H*W*C_in]`` whose entries are the kernel's weights, it does only the products that count
    (measured in benchmarks/README.md, "The CPU kernels"). The matrix and its gradient take memory, though: used only
    where the matrix is
    no larger than the layer's output for the batch, or than ``TIED_MATRIX_FREE_SIZE`` (exp2_cnn's 128-image
    batches: the fourth convolution's 34 MiB matrix would raise the peak by ~60 MiB, so it stays direct).
    """
    n, _, height, width = x.shape
    kernel, padding = conv.kernel_size[0], conv.padding[0]
    # CPU only. The rule depends on the batch, so on a GPU it would give exp2_snn's conv4 (3200 images) a
    # cuBLAS matrix product and exp2_cnn's (128 images) a cuDNN convolution: different kernels, with different
    # accumulation orders and, unless `precision` pins both, different TF32 defaults. The CNN/SNN cost ratio
    # would then compare kernel choices, not networks. The saving it buys is also a CPU one (oneDNN's weight
    # gradient on tiny maps); so off the CPU both networks always run the direct convolution.
    if x.device.type != "cpu":
        return False
    if padding * 2 + 1 != kernel or height * width >= kernel * kernel:
        return False
    matrix = conv.out_channels * conv.in_channels * (height * width) ** 2
    return matrix <= max(n * conv.out_channels * height * width, TIED_MATRIX_FREE_SIZE)


@functools.lru_cache(maxsize=16)
def _tap_index(height: int, width: int, kernel: int, padding: int, device: str) -> torch.Tensor:
    """``[H*W, H*W]`` int64: the kernel tap ``ky*kernel + kx`` that links output position (y, x) to input position
    (iy, ix), or ``kernel*kernel`` (an extra zero tap) where none does."""
    index = torch.full((height * width, height * width), kernel * kernel, dtype=torch.int64)
    for y in range(height):
        for x in range(width):
            for iy in range(max(0, y - padding), min(height, y - padding + kernel)):
                for ix in range(max(0, x - padding), min(width, x - padding + kernel)):
                    index[y * width + x, iy * width + ix] = (iy - y + padding) * kernel + (ix - x + padding)
    return index.to(device)


def tied_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, 'same' size) computed as one Linear layer.

    The effective matrix ``[C_out*H*W, H*W*C_in]`` is gathered from the kernel's taps (plus a zero tap) in the
    order that needs no further copy; input features are taken in (position, channel) order, a free view of a
    channels-last input. Autograd scatters the matrix's gradient back onto the taps. Equal to the direct
    convolution to float rounding (summation order).
    """
    n, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    if h + 2 * padding - k + 1 != h or w + 2 * padding - k + 1 != w:
        raise ValueError(f"tied_conv2d needs a 'same' convolution; got a {h}x{w} map, kernel {k}, padding {padding}")
    taps = weight.reshape(c_out, c_in, k * k).transpose(1, 2)  # [C_out, taps, C_in]
    taps = torch.cat([taps, taps.new_zeros(c_out, 1, c_in)], 1)  # + the zero tap
    w_eff = taps[:, _tap_index(h, w, k, padding, str(x.device))].reshape(c_out * h * w, h * w * c_in)
    flat = x.permute(0, 2, 3, 1).reshape(n, h * w * c_in)
    out = flat @ w_eff.t() if bias is None else torch.addmm(bias.repeat_interleave(h * w), flat, w_eff.t())
    return out.reshape(n, c_out, h, w)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) that runs as a tied-weight Linear on small maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and tied_weights_pay(x, self):
            return tied_conv2d(x, self.weight, self.bias, int(self.padding[0]))
        return super().forward(x)


def conv_out(size: int, padding: int) -> int:
    return (size + 2 * padding - 5) + 1


def conv_stack(spec: NetworkSpec, name: str, shape: tuple[int, int, int], n_layers: int, padding: int):
    """5x5 convolutions (stride 1), each followed by a 2x2 max-pool; returns (convs, flat features)."""
    channels = list(spec.channels)
    if len(channels) != n_layers:
        raise NetworkSpecError(
            f"{name}: architecture {spec.architecture} needs {n_layers} channel widths, got {channels}"
        )
    h, w = shape[1], shape[2]
    convs = []
    for c_in, c_out in zip([shape[0], *channels[:-1]], channels):
        h, w = conv_out(h, padding) // 2, conv_out(w, padding) // 2
        if h < 1 or w < 1:
            raise NetworkSpecError(f"{name}: input {shape} is too small for {n_layers} conv + 2x2 max-pool layers")
        convs.append(Conv2d(c_in, c_out, 5, stride=1, padding=padding))
    return convs, channels[-1] * h * w
