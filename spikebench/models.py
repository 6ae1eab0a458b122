"""The study's six networks, a fused leaky integrate-and-fire (LIF) layer, the losses and predictions.

Networks (``build_network(spec)``, one ``networks:`` entry of config.yaml):

- ``fc``    Linear in-256-256-10; ANN: ReLU after the hidden Linears; SNN: LIF after every Linear.
- ``conv5`` five Conv2d 5x5 (stride 1, padding 2), each followed by 2x2 max-pool (stride 2) and ReLU/LIF,
            flatten, Linear to ``fc`` (512), ReLU/LIF, dropout ``dropout`` (0.2), Linear to 10 (SNN: + LIF).
            Dropout sits after the 512-unit layer's non-linearity in both kinds; in the SNN it acts on that
            layer's spikes with an independent mask per time step (as ``nn.Dropout`` called inside a
            snnTorch-tutorial time loop does), scaling kept spikes by 1/(1-p) during training only.
- ``conv2`` Conv2d 12 and 32 (5x5, no padding), each + 2x2 max-pool + LIF, flatten (800 features for a 32x32
            or 34x34 input), Linear 10 + LIF (SNN only, as the study).

The input shape derives from the dataset: MNIST 1x28x28 (1x``input_size``^2 when ``input_size`` is set:
resized on the device), CIFAR-10 3x32x32, N-MNIST 2x34x34. Weights use Kaiming-normal initialisation
(fan-in, ReLU gain) and zero biases.

ANN forward: ``x [B, C, H, W] -> logits [B, 10]``. SNN forward: ``x [T, B, C, H, W] -> spikes [T, B, 10]``
(and the output layer's membrane potential with ``return_membrane=True``). Each SNN layer runs its Linear or
Conv2d (and max-pool) once over all T*B inputs, then the LIF recurrence over time in one fused autograd
function (:class:`LeakyFunction`): a forward loop over T on whole tensors that builds one autograd node,
and a hand-written reverse-time backward.

LIF semantics are those of ``snntorch.Leaky(beta, threshold, reset_mechanism="subtract",
spike_grad=snntorch.surrogate.atan(), reset_delay=True)`` with a zero initial membrane::

    U[t] = beta * U[t-1] + I[t] - S[t-1] * threshold     (U[-1] = 0, S[-1] = 0; reset term detached)
    S[t] = H(U[t] - threshold)                           (strictly greater than the threshold)
    dS/dU ~ (alpha/2) / (1 + (pi/2 * alpha * (U - threshold))^2),  alpha = 2  (arctan surrogate)

The LIF forward pass performs the same float32 operations in the same order as snnTorch, so for the same
input currents spikes and membrane potentials are bitwise equal; gradients agree to float rounding.
Convolution layers (``ConvPoolFunction``: conv + 2x2 max-pool in cache-sized chunks, channels-last on the
CPU, only the max-pool arg-max saved) sum in a different order than an NCHW ``nn.Conv2d``, so their currents
agree with snnTorch's to float rounding.

Some layers do fewer multiply-adds than a direct implementation and give the same values to float rounding:
a 'same' 5x5 convolution on a map with fewer positions than kernel taps (experiment 2's 4x4 and 2x2 maps) runs
as one Linear layer with tied weights where that matrix is small next to the batch (:func:`tied_weights_pay`;
ANN and SNN by the same rule, on the CPU only: on a GPU both always run cuDNN's convolution); on the CPU a
Linear layer whose input needs no gradient skips the input features that are zero in every row
(:func:`active_input_linear`: experiment 1's never-firing pixels); and on the CPU the numba kernels of
:mod:`spikebench.kernels` run the LIF recurrence of large layers (bitwise the same as the PyTorch loop below)
and convolutions of sparse inputs event by event (``ConvPoolFunction``). ``CPU_KERNELS = False`` switches the
numba kernels off. On CUDA the LIF recurrence runs ``torch.compile``'d (``LIF_BACKEND``, config ``lif_backend``):
one fused kernel per layer forward and one backward instead of ~5 launches per time step; the same values to
float rounding (the compiler may contract multiply-adds). Under precision bf16 (``torch.autocast``) the synapses
run in bfloat16 and the LIF membrane in float32.

Losses: ANN cross-entropy; SNN ``spike_count_loss`` = ``snntorch.functional.mse_count_loss(correct_rate,
incorrect_rate)``. Prediction: the output neuron with the most spikes (ANN: the largest logit); ties go to
the lowest class index (``torch.argmax``). For variable-length inputs (N-MNIST, padded at the end of each
batch) the output spikes at steps t >= n_steps[b] are masked out, so padding changes neither a prediction
nor a loss; each sample's spike-count targets use its own number of steps (``int(n_steps * rate)``) and its
squared error is divided by its own n_steps. This is the one deliberate difference from a padded snnTorch
run, where all targets would scale with the longest sample in the batch.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 10

#: Input shape (channels, height, width) of each dataset as stored, before any resizing.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "nmnist": (2, 34, 34),
}


class NetworkSpecError(ValueError):
    """A network entry of the configuration that cannot be built."""


class InputShapeError(ValueError):
    """An input whose shape does not fit the network."""


# --------------------------------------------------------------------------------------------------
# Fused LIF
# --------------------------------------------------------------------------------------------------
def _use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether the numba kernels of :mod:`spikebench.kernels` run this float32 CPU tensor's layer (then on as
    many threads as PyTorch uses)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not CPU_KERNELS:
        return False
    from spikebench.kernels import match_torch_threads
    match_torch_threads()
    return True


#: Use the numba CPU kernels (fused LIF, event-driven convolution) for CPU tensors; False: PyTorch ops only.
CPU_KERNELS = True
#: On the CPU, a convolution whose input has fewer non-zeros than this fraction runs event-driven
#: (``spikebench.kernels.event_conv``): N-MNIST frames (~0.5%), their layer-1 spikes (~2%), rate-coded MNIST
#: (~13%). Measured break-even of the forward pass: ~20% for 12 -> 32 channels.
EVENT_DENSITY = 0.2
#: ... and the weight gradient of a convolution with at most 3 input channels runs event-driven below this
#: density (experiment 2's first layer on rate-coded CIFAR-10, ~50%: 1.13 s -> 0.64 s per 3200 images).
EVENT_WEIGHT_GRAD_DENSITY = 0.7
#: The numba LIF kernel runs layers of at least this many neuron-steps (T x neurons). Below, PyTorch's ops are as
#: fast (experiment 1, [25, 128, 256]: 120 vs 125 ms per training batch) and loading numba would cost ~120 MiB
#: of resident memory and ~1 s per job for nothing.
LIF_KERNEL_MIN_SIZE = 2**20


#: How the LIF recurrence runs outside the numba CPU kernels: ``auto`` (compiled on CUDA, the eager loop
#: elsewhere), ``eager`` (the PyTorch loop below: ~5 kernel launches per time step on a GPU) or ``compiled``
#: (``torch.compile`` of :func:`lif_recurrence` / :func:`lif_recurrence_backward`: one fused kernel per layer
#: and direction on CUDA). Set from the config key ``lif_backend`` by the jobs (:func:`set_lif_backend`).
LIF_BACKEND = "auto"
LIF_BACKENDS = ("auto", "eager", "compiled")


def set_lif_backend(name: str) -> None:
    """Choose ``LIF_BACKEND`` (config key ``lif_backend``)."""
    global LIF_BACKEND
    if name not in LIF_BACKENDS:
        raise ValueError(f"lif_backend {name!r}: expected one of {', '.join(LIF_BACKENDS)}")
    LIF_BACKEND = name


def _lif_compiled(x: torch.Tensor) -> bool:
    """Whether this layer's recurrence runs compiled (``LIF_BACKEND``; the numba kernels take precedence)."""
    return LIF_BACKEND == "compiled" or (LIF_BACKEND == "auto" and x.device.type == "cuda")


def lif_recurrence(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF forward of ``current [T, N]`` written functionally, the eager loop's operations in its order, for
    ``torch.compile``: the loop over T unrolls into one graph that inductor fuses into one kernel over N."""
    mem = [current[0]]                                        # U[0] = I[0]
    spk = [(current[0] > threshold).to(current.dtype)]
    for t in range(1, current.shape[0]):
        u = (mem[-1] * beta + current[t]) - spk[-1] * threshold
        mem.append(u)
        spk.append((u > threshold).to(current.dtype))
    return torch.stack(spk), torch.stack(mem)


def lif_recurrence_backward(mem: torch.Tensor, grad_spk: torch.Tensor | None, grad_mem: torch.Tensor | None,
                            beta: float, threshold: float, alpha: float) -> torch.Tensor:
    """dL/d(current) ``[T, N]`` of :func:`lif_recurrence` (the eager backward's formula), for ``torch.compile``."""
    if grad_spk is not None:
        x = (mem - threshold) * (math.pi / 2 * alpha)
        local = (1.0 / (x * x + 1.0)) * (alpha / 2) * grad_spk
        if grad_mem is not None:
            local = local + grad_mem
    else:
        local = grad_mem
    grads = [local[-1]]
    for t in range(mem.shape[0] - 2, -1, -1):
        grads.append(local[t] + beta * grads[-1])
    return torch.stack(grads[::-1])


@functools.cache
def _compiled(fn):
    # dynamic=None: the first call specialises on its shape; a layer of another size recompiles once with a
    # dynamic neuron count. T stays static (the loop is unrolled over it).
    return torch.compile(fn, fullgraph=True, dynamic=None)


class LeakyFunction(torch.autograd.Function):
    """LIF recurrence over all time steps at once: ``current [T, ...] -> (spikes, membrane) [T, ...]``."""

    @staticmethod
    def forward(ctx: Any, current: torch.Tensor, beta: float, threshold: float, alpha: float):
        ctx.beta, ctx.threshold, ctx.alpha = beta, threshold, alpha
        ctx.set_materialize_grads(False)
        if current.numel() >= LIF_KERNEL_MIN_SIZE and _use_cpu_kernels(current):
            from spikebench.kernels import lif
            spk, mem = lif.lif_forward(current, beta, threshold)
            ctx.save_for_backward(mem)
            return spk, mem
        n_steps = current.shape[0]
        if _lif_compiled(current) and current.numel():
            spk, mem = _compiled(lif_recurrence)(current.reshape(n_steps, -1), beta, threshold)
            ctx.save_for_backward(mem)
            ctx.shape = current.shape
            return spk.view(current.shape), mem.view(current.shape)
        mem = torch.empty_like(current)
        spk = torch.empty_like(current)
        # t = 0: U[-1] = 0 and S[-1] = 0, so U[0] = 0 * beta + I[0] - 0 = I[0] exactly.
        mem[0].copy_(current[0])
        torch.gt(mem[0], threshold, out=spk[0])
        for t in range(1, n_steps):
            m = mem[t]
            torch.mul(mem[t - 1], beta, out=m)            # beta * U[t-1]
            m.add_(current[t])                            # + I[t]
            m.sub_(spk[t - 1], alpha=threshold)           # - S[t-1] * threshold (exact: S is 0 or 1)
            torch.gt(m, threshold, out=spk[t])            # H(U[t] - threshold)
        ctx.save_for_backward(mem)
        return spk, mem

    @staticmethod
    def backward(ctx: Any, grad_spk: torch.Tensor | None, grad_mem: torch.Tensor | None):
        (mem,) = ctx.saved_tensors
        if grad_spk is None and grad_mem is None:
            return None, None, None, None
        if getattr(ctx, "shape", None) is not None:       # the compiled forward saved mem as [T, N]
            flat = [g.reshape(mem.shape) if g is not None else None for g in (grad_spk, grad_mem)]
            grad = _compiled(lif_recurrence_backward)(mem, *flat, ctx.beta, ctx.threshold, ctx.alpha)
            return grad.view(ctx.shape), None, None, None
        if mem.numel() >= LIF_KERNEL_MIN_SIZE and _use_cpu_kernels(mem):
            from spikebench.kernels import lif
            return lif.lif_backward(mem, grad_spk, grad_mem, ctx.beta, ctx.threshold, ctx.alpha), None, None, None
        if grad_spk is not None:
            # dS/dU of the arctan surrogate, as snntorch.surrogate.ATan.backward computes it.
            grad = (mem - ctx.threshold).mul_(math.pi / 2 * ctx.alpha).pow_(2).add_(1.0)
            grad = torch.reciprocal_(grad).mul_(ctx.alpha / 2).mul_(grad_spk)
            if grad_mem is not None:
                grad.add_(grad_mem)
        else:
            grad = grad_mem.clone()
        # dL/dU[t] = (local) + beta * dL/dU[t+1]; the reset term is detached, as in snnTorch.
        for t in range(grad.shape[0] - 2, -1, -1):
            grad[t].add_(grad[t + 1], alpha=ctx.beta)
        return grad, None, None, None


class Leaky(nn.Module):
    """Fused LIF layer over a whole spike train: ``forward(current [T, ...]) -> (spikes, membrane)``."""

    def __init__(self, beta: float, threshold: float = 1.0, alpha: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= float(beta) <= 1.0:
            raise NetworkSpecError(f"LIF beta must be in [0, 1], got {beta}")
        if float(threshold) <= 0.0:
            raise NetworkSpecError(f"LIF threshold must be > 0, got {threshold}")
        # Stored as float32-rounded Python floats: snnTorch keeps beta/threshold as float32 buffers.
        self.beta = float(torch.tensor(float(beta), dtype=torch.float32))
        self.threshold = float(torch.tensor(float(threshold), dtype=torch.float32))
        self.alpha = float(alpha)

    def forward(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if current.dtype in (torch.bfloat16, torch.float16):
            current = current.float()     # under autocast (precision bf16) the membrane still integrates in fp32
        return LeakyFunction.apply(current, self.beta, self.threshold, self.alpha)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}, threshold={self.threshold:.4g}, surrogate=atan(alpha={self.alpha:g})"


# --------------------------------------------------------------------------------------------------
# Conv2d + 2x2 max-pool over many images, chunked
# --------------------------------------------------------------------------------------------------
#: Target size of one chunk's convolution output on the CPU (bytes): small enough to stay in cache.
CPU_CHUNK_BYTES = 4 * 2**20

_POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)   # kernel, stride, padding, dilation, ceil_mode


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
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                chunk: int):
        fmt = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
        if torch.is_autocast_enabled(x.device.type):    # precision bf16: the convolution in autocast's dtype
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        conv_size = (x.shape[2] + 2 * padding - weight.shape[2] + 1, x.shape[3] + 2 * padding - weight.shape[3] + 1)
        ctx.padding, ctx.chunk, ctx.conv_size, ctx.fmt = padding, chunk, conv_size, fmt
        ctx.has_bias = bias is not None
        density = torch.count_nonzero(x).item() / x.numel() if x.numel() and _use_cpu_kernels(x) else 1.0
        ctx.events = density < EVENT_DENSITY
        # oneDNN's weight gradient is slow for few input channels: the event kernel's pays up to ~70% density.
        ctx.event_weight_grad = ctx.events or (x.shape[1] <= 3 and density < EVENT_WEIGHT_GRAD_DENSITY)
        if ctx.events:     # sparse input on the CPU: event-driven kernel, the input's layout as it is
            from spikebench.kernels import event_conv
            out, argmax = event_conv.event_conv_pool_forward(x, weight, bias, padding)
            ctx.save_for_backward(x, weight, argmax)
            return out
        x = x.contiguous(memory_format=fmt)
        n = x.shape[0]
        shape = (n, weight.shape[0], conv_size[0] // 2, conv_size[1] // 2)
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        argmax = torch.empty(shape, dtype=torch.int64, device=x.device, memory_format=fmt)
        for s in range(0, n, chunk):
            z = F.conv2d(x[s:s + chunk], weight, bias, padding=padding)
            if fmt is torch.channels_last:   # a 1-channel input leaves the layout ambiguous: force it
                z = z.contiguous(memory_format=fmt)
            torch.ops.aten.max_pool2d_with_indices.out(z, *_POOL, out=out[s:s + chunk], indices=argmax[s:s + chunk])
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
            need_w = need_b = False       # the dense loop below computes the input gradient only
            if not need_x:
                return None, grad_w, grad_b, None, None
        grad_x = torch.empty_like(x, memory_format=ctx.fmt) if need_x else None
        # One chunk-sized buffer for the conv output's gradient, reused by every chunk. The max-pool backward
        # reads only the shape and layout of its `self` argument, so the buffer is passed as both `self` and
        # the output: no second conv-output-sized tensor just for its shape (on a GPU, where one chunk is the
        # whole batch, that was ~1.7 GB for experiment 3's N-MNIST SNN).
        buffer = torch.empty((min(ctx.chunk, x.shape[0]), grad_out.shape[1], *ctx.conv_size), dtype=grad_out.dtype,
                             device=grad_out.device, memory_format=ctx.fmt)
        for s in range(0, x.shape[0], ctx.chunk):
            g = grad_out[s:s + ctx.chunk]
            grad_z = buffer[:g.shape[0]]
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(g, grad_z, *_POOL, argmax[s:s + ctx.chunk],
                                                                       grad_input=grad_z)
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad_z, x[s:s + ctx.chunk], weight, [weight.shape[0]] if ctx.has_bias else None,
                [1, 1], [ctx.padding, ctx.padding], [1, 1], False, [0, 0], 1, [need_x, need_w, need_b])
            if need_x:
                grad_x[s:s + ctx.chunk] = gx
            if need_w:
                grad_w += gw
            if need_b:
                grad_b += gb
        return grad_x, grad_w, grad_b, None, None


# --------------------------------------------------------------------------------------------------
# Convolution on a small map as a Linear layer with tied weights
# --------------------------------------------------------------------------------------------------
#: The tied-weight matrix may always take this much memory (elements; 16 MiB of float32), see tied_weights_pay.
TIED_MATRIX_FREE_SIZE = 2**22


def tied_weights_pay(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """True when ``conv`` (5x5 'same') on ``x [N, C, H, W]`` is better run as a Linear layer with tied weights.

    On a map with fewer positions than kernel taps (experiment 2's fourth and fifth convolutions: 4x4 and 2x2
    maps, 5x5 kernel, padding 2) most of a direct convolution's multiply-adds hit the zero padding, and
    oneDNN's weight gradient for such shapes runs at a fraction of its usual speed. As a Linear layer
    ``[C_out*H*W, H*W*C_in]`` whose entries are the kernel's weights, it does only the products that count:
    12.3 s -> 0.75 s forward + backward for the fifth convolution of a 3200-image exp2_snn batch on one core
    (fourth: 4.3 s -> 2.5 s). The matrix and its gradient take memory, though: used only where the matrix is
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
    taps = weight.reshape(c_out, c_in, k * k).transpose(1, 2)                     # [C_out, taps, C_in]
    taps = torch.cat([taps, taps.new_zeros(c_out, 1, c_in)], 1)                   # + the zero tap
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


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------
def input_shape(spec: dict) -> tuple[int, int, int]:
    """(channels, height, width) that the network built from ``spec`` expects."""
    name = spec.get("_name", "network")
    dataset = spec.get("dataset")
    if dataset not in DATASET_SHAPES:
        raise NetworkSpecError(f"{name}: unknown dataset {dataset!r}; expected one of {sorted(DATASET_SHAPES)}")
    channels, height, width = DATASET_SHAPES[dataset]
    size = spec.get("input_size")
    if size is not None:
        if dataset == "nmnist" and int(size) != height:
            raise NetworkSpecError(f"{name}: N-MNIST frames are {height}x{width}; input_size {size} is not supported")
        height = width = int(size)
    return channels, height, width


class _Network(nn.Module):
    """Common checks of ANN and SNN."""

    name: str
    kind: str
    input_shape: tuple[int, int, int]

    def _check_input(self, x: torch.Tensor, n_lead: int) -> None:
        want = self.input_shape
        flat = (want[0] * want[1] * want[2],)
        got = tuple(x.shape[n_lead:])
        if x.dim() < n_lead + 1 or (got != want and got != flat):
            lead = "[T, B, ...]" if n_lead == 2 else "[B, ...]"
            raise InputShapeError(
                f"{self.name}: input of shape {tuple(x.shape)} does not fit; expected {lead} with sample shape "
                f"{want} (or flattened {flat[0]})")


class ANN(_Network):
    """A conventional network: ``forward(x [B, C, H, W]) -> logits [B, 10]``."""

    kind = "ann"

    def __init__(self, name: str, shape: tuple[int, int, int], layers: nn.Sequential) -> None:
        super().__init__()
        self.name, self.input_shape, self.layers = name, shape, layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, 1)
        return self.layers(x.reshape(x.shape[0], *self.input_shape))


def active_input_linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear(x)`` for an input that needs no gradient, skipping the input features that are zero in every row.

    Experiment 1's first layer sees rate-coded MNIST: a third of the 784 pixels is zero in every image of a
    batch, so those columns of the [T*B, 784] x [784, 256] products (forward and weight gradient) only add
    zeros. The weight gradient of the skipped columns is exactly zero, as it would be with them included.
    """
    rows = x.reshape(-1, x.shape[-1])
    # Column sums as one matrix-vector product (~5x faster than rows.any(0) on the CPU); of |x| unless x >= 0
    # (spikes), where no sum of non-zeros can cancel to zero.
    ones = rows.new_ones(1, rows.shape[0])
    sums = ones @ (rows if rows.min() >= 0 else rows.abs())
    active = sums.squeeze(0).nonzero().squeeze(1)
    if active.numel() > 0.9 * x.shape[-1]:
        return linear(x)
    return F.linear(x.index_select(-1, active), linear.weight.index_select(1, active), linear.bias)


class SpikingStage(nn.Module):
    """One SNN layer: synapses (Linear or Conv2d [+ max-pool]) over all T*B inputs, then the fused LIF."""

    def __init__(self, synapse: nn.Module, lif: Leaky, pool: bool = False, flatten: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.synapse, self.lif = synapse, lif
        self.pool, self.flatten, self.dropout = pool, flatten, float(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_steps, batch = x.shape[0], x.shape[1]
        z = x.reshape(n_steps * batch, *x.shape[2:])
        if self.flatten:
            z = z.reshape(z.shape[0], -1)
        if self.dropout > 0.0:
            z = F.dropout(z, self.dropout, self.training)
        if self.pool:
            z = conv_pool(z, self.synapse)
        elif z.device.type == "cpu" and not z.requires_grad:
            z = active_input_linear(z, self.synapse)
        else:
            z = self.synapse(z)
        spk, mem = self.lif(z.reshape(n_steps, batch, *z.shape[1:]))
        return spk, mem


class SNN(_Network):
    """A spiking network: ``forward(x [T, B, C, H, W]) -> spikes [T, B, 10]`` (``, membrane`` on request)."""

    kind = "snn"

    def __init__(self, name: str, shape: tuple[int, int, int], stages: list[SpikingStage]) -> None:
        super().__init__()
        self.name, self.input_shape = name, shape
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, return_membrane: bool = False):
        self._check_input(x, 2)
        z = x.reshape(x.shape[0], x.shape[1], *self.input_shape)
        mem = z
        for stage in self.stages:
            z, mem = stage(z)
        return (z, mem) if return_membrane else z


def _conv_out(size: int, padding: int) -> int:
    return (size + 2 * padding - 5) + 1


def _require(spec: dict, key: str, name: str):
    if key not in spec:
        raise NetworkSpecError(f"{name}: missing key {key!r} for architecture {spec.get('architecture')!r}")
    return spec[key]


def _conv_stack(spec: dict, name: str, shape: tuple[int, int, int], n_layers: int, padding: int):
    """5x5 convolutions (stride 1), each followed by a 2x2 max-pool; returns (convs, flat features)."""
    channels = [int(c) for c in _require(spec, "channels", name)]
    if len(channels) != n_layers:
        raise NetworkSpecError(
            f"{name}: architecture {spec['architecture']} needs {n_layers} channel widths, got {channels}")
    h, w = shape[1], shape[2]
    convs = []
    for c_in, c_out in zip([shape[0], *channels[:-1]], channels):
        h, w = _conv_out(h, padding) // 2, _conv_out(w, padding) // 2
        if h < 1 or w < 1:
            raise NetworkSpecError(f"{name}: input {shape} is too small for {n_layers} conv + 2x2 max-pool layers")
        convs.append(Conv2d(c_in, c_out, 5, stride=1, padding=padding))
    return convs, channels[-1] * h * w


def build_fc(spec: dict, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 1: Linear 784-256-256-10 with ReLU (ANN) or LIF after each Linear (SNN)."""
    hidden = [int(h) for h in _require(spec, "hidden", name)]
    sizes = [shape[0] * shape[1] * shape[2], *hidden, N_CLASSES]
    if lif is not None:
        return [SpikingStage(nn.Linear(a, b), lif(), flatten=(i == 0))
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    mods: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return mods


def build_conv5(spec: dict, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 2: five conv 5x5 (padding 2) + 2x2 max-pool + ReLU/LIF, FC 512 (dropout 0.2), FC 10."""
    convs, flat = _conv_stack(spec, name, shape, 5, padding=2)
    fc, dropout = int(_require(spec, "fc", name)), float(spec.get("dropout", 0.0))
    if lif is not None:
        stages = [SpikingStage(conv, lif(), pool=True) for conv in convs]
        stages.append(SpikingStage(nn.Linear(flat, fc), lif(), flatten=True))
        stages.append(SpikingStage(nn.Linear(fc, N_CLASSES), lif(), dropout=dropout))
        return stages
    mods: list[nn.Module] = []
    for conv in convs:
        mods += [conv, nn.MaxPool2d(2, 2), nn.ReLU()]
    return mods + [nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, N_CLASSES)]


def build_conv2(spec: dict, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 3: 12C5-MP2-32C5-MP2-800-10 (no padding), LIF after each layer."""
    convs, flat = _conv_stack(spec, name, shape, 2, padding=0)
    if lif is not None:
        stages = [SpikingStage(conv, lif(), pool=True) for conv in convs]
        return stages + [SpikingStage(nn.Linear(flat, N_CLASSES), lif(), flatten=True)]
    mods: list[nn.Module] = []
    for conv in convs:
        mods += [conv, nn.MaxPool2d(2, 2), nn.ReLU()]
    return mods + [nn.Flatten(), nn.Linear(flat, N_CLASSES)]


# One builder per architecture: spikebench.provenance hashes a network's builder (not the others),
# so editing one architecture reruns only the jobs of the networks that use it.
ARCHITECTURES = {"fc": build_fc, "conv5": build_conv5, "conv2": build_conv2}


def build_network(spec: dict, name: str | None = None) -> ANN | SNN:
    """Build the network that one ``networks:`` entry of config.yaml describes (Kaiming-initialised)."""
    name = name or spec.get("_name") or f"{spec.get('architecture')}_{spec.get('kind')}"
    kind, arch = spec.get("kind"), spec.get("architecture")
    if kind not in ("ann", "snn"):
        raise NetworkSpecError(f"{name}: unknown kind {kind!r}; expected 'ann' or 'snn'")
    if arch not in ARCHITECTURES:
        raise NetworkSpecError(f"{name}: unknown architecture {arch!r}; expected 'fc', 'conv5' or 'conv2'")
    shape = input_shape({**spec, "_name": name})
    lif = None
    if kind == "snn":
        if spec.get("surrogate", "atan") != "atan":
            raise NetworkSpecError(f"{name}: only the 'atan' surrogate is implemented, got {spec.get('surrogate')!r}")
        beta, threshold = float(_require(spec, "beta", name)), float(_require(spec, "threshold", name))

        def lif() -> Leaky:
            return Leaky(beta, threshold)

    layers = ARCHITECTURES[arch](spec, name, shape, lif)
    net: ANN | SNN = SNN(name, shape, layers) if lif is not None else ANN(name, shape, nn.Sequential(*layers))
    kaiming_init_(net)
    return net


def kaiming_init_(net: nn.Module) -> None:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases for every Linear and Conv2d."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------------
# Loss and prediction
# --------------------------------------------------------------------------------------------------
def step_mask(n_steps: torch.Tensor, total_steps: int) -> torch.Tensor:
    """Boolean [T, B]: True where time step t < n_steps[b]."""
    steps = torch.arange(total_steps, device=n_steps.device)
    return steps[:, None] < n_steps.to(steps.device)[None, :]


def spike_counts(spikes: torch.Tensor, n_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Spikes per output neuron [B, C] of ``spikes [T, B, C]``, counting only steps t < n_steps[b]."""
    if n_steps is None:
        return spikes.sum(0)
    mask = step_mask(n_steps, spikes.shape[0]).to(spikes.dtype)
    return (spikes * mask[..., None]).sum(0)


def spike_count_loss(spikes: torch.Tensor, targets: torch.Tensor, n_steps: torch.Tensor | None = None,
                     correct_rate: float = 0.8, incorrect_rate: float = 0.2) -> torch.Tensor:
    """MSE spike-count loss, ``snntorch.functional.mse_count_loss(correct_rate, incorrect_rate)``.

    With ``n_steps`` (per-sample steps of a padded batch) each sample's counts, targets and scaling use its
    own number of steps; with equal lengths this equals snnTorch's value.
    """
    n_total, n_out = spikes.shape[0], spikes.shape[-1]
    if n_steps is None:
        on, off = int(n_total * correct_rate), int(n_total * incorrect_rate)
        target = torch.full((spikes.shape[1], n_out), float(off), device=spikes.device, dtype=spikes.dtype)
        target.scatter_(1, targets.view(-1, 1).to(spikes.device), float(on))
        return F.mse_loss(spikes.sum(0), target) / n_total
    steps = n_steps.to(spikes.device, torch.float64)
    on = torch.floor(steps * correct_rate).to(spikes.dtype)   # int() of a positive float, as snnTorch
    off = torch.floor(steps * incorrect_rate).to(spikes.dtype)
    onehot = F.one_hot(targets.to(spikes.device), n_out).to(torch.bool)
    target = torch.where(onehot, on[:, None], off[:, None])
    per_sample = (spike_counts(spikes, n_steps) - target).pow(2).mean(1) / steps.to(spikes.dtype)
    return per_sample.mean()


def network_loss(kind: str, output: torch.Tensor, targets: torch.Tensor, n_steps: torch.Tensor | None = None,
                 spec: dict | None = None) -> torch.Tensor:
    """Training loss: cross-entropy for an ANN, ``spike_count_loss`` for an SNN (rates from ``spec``)."""
    if kind == "ann":
        return F.cross_entropy(output, targets)
    spec = spec or {}
    return spike_count_loss(output, targets, n_steps, float(spec.get("correct_rate", 0.8)),
                            float(spec.get("incorrect_rate", 0.2)))


def predict(kind: str, output: torch.Tensor, n_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted class [B]: largest logit (ANN) or most output spikes (SNN); ties -> lowest index."""
    if kind == "ann":
        return output.argmax(-1)
    return spike_counts(output, n_steps).argmax(-1)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
