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

The LIF semantics and equations: :mod:`spikebench.models.lif`.

Some layers do fewer multiply-adds than a direct implementation and give the same values to float rounding:
a 'same' 5x5 convolution on a map with fewer positions than kernel taps (experiment 2's 4x4 and 2x2 maps) runs
as one Linear layer with tied weights where that matrix is small next to the batch (:func:`tied_weights_pay`;
ANN and SNN by the same rule, on the CPU only: on a GPU both always run cuDNN's convolution); on the CPU a
Linear layer whose input needs no gradient skips the input features that are zero in every row
(:func:`active_input_linear`: experiment 1's never-firing pixels); and on the CPU the numba kernels of
:mod:`spikebench.kernels` run the LIF recurrence of large layers (bitwise the same as the PyTorch loop below)
and convolutions of sparse inputs event by event (``ConvPoolFunction``). ``CPU_KERNELS = False`` switches the
numba kernels off. On CUDA the LIF recurrence runs in a hand-written Triton kernel (``LIF_BACKEND``, config
``lif_backend``; :mod:`spikebench.kernels.lif_triton`): one launch per layer and direction instead of ~5 per time
step, spikes bitwise equal to the PyTorch loop, gradients to float rounding. Under precision bf16
(``torch.autocast``) the synapses run in bfloat16 and the LIF membrane in float32.

Layout (``spikebench.provenance`` hashes these files per network; editing one reruns only the jobs of the
networks that run it): :mod:`.base` (input shape, common checks, errors, Kaiming init; every network),
:mod:`.build` (``build_network``; every network), :mod:`.losses` (every network), :mod:`.ann` (ANNs),
:mod:`.snn` and :mod:`.lif` (spikebench's SNNs: layers and the fused LIF with its equations),
:mod:`.convpool` (SNN convolutions: conv + max-pool in chunks, event-driven on the CPU), :mod:`.tied_conv`
(the convolution stack of both kinds), :mod:`.fc` / :mod:`.conv5` / :mod:`.conv2` (one builder per
architecture), :mod:`.snntorch_twin` (``implementation: snntorch``).

Losses: ANN cross-entropy; SNN ``spike_count_loss`` = ``snntorch.functional.mse_count_loss(correct_rate,
incorrect_rate)``. Prediction: the output neuron with the most spikes (ANN: the largest logit); ties go to
the lowest class index (``torch.argmax``). For variable-length inputs (N-MNIST, padded at the end of each
batch) the output spikes at steps t >= n_steps[b] are masked out, so padding changes neither a prediction
nor a loss; each sample's spike-count targets use its own number of steps (``int(n_steps * rate)``) and its
squared error is divided by its own n_steps. This is the one deliberate difference from a padded snnTorch
run, where all targets would scale with the longest sample in the batch.
"""

from spikebench.data.catalog import DATASET_SHAPES, N_CLASSES
from spikebench.models.ann import ANN
from spikebench.models.base import (
    InputShapeError,
    Network,
    NetworkSpecError,
    count_parameters,
    input_shape,
    kaiming_init_,
)
from spikebench.models.build import ARCHITECTURES, build_network
from spikebench.models.conv2 import build_conv2
from spikebench.models.conv5 import build_conv5
from spikebench.models.convpool import ConvPoolFunction, conv_pool
from spikebench.models.fc import build_fc
from spikebench.models.lif import Leaky, LeakyFunction, backend_record, reset_backend_record, set_lif_backend
from spikebench.models.losses import network_loss, predict, spike_count_loss, spike_counts, step_mask
from spikebench.models.snn import SNN, SpikingStage, active_input_linear
from spikebench.models.tied_conv import Conv2d, tied_conv2d, tied_weights_pay

# The speed switches (CPU_KERNELS, LIF_KERNEL_MIN_SIZE, LIF_BACKEND in .lif; EVENT_DENSITY in .convpool) are
# read from their own modules at call time: set them there (``spikebench.models.lif.CPU_KERNELS = False``).

__all__ = [
    "ANN",
    "ARCHITECTURES",
    "Conv2d",
    "ConvPoolFunction",
    "DATASET_SHAPES",
    "InputShapeError",
    "Leaky",
    "LeakyFunction",
    "N_CLASSES",
    "Network",
    "NetworkSpecError",
    "SNN",
    "SpikingStage",
    "active_input_linear",
    "build_conv2",
    "build_conv5",
    "build_fc",
    "build_network",
    "conv_pool",
    "count_parameters",
    "input_shape",
    "kaiming_init_",
    "backend_record",
    "reset_backend_record",
    "network_loss",
    "predict",
    "set_lif_backend",
    "spike_count_loss",
    "spike_counts",
    "step_mask",
    "tied_conv2d",
    "tied_weights_pay",
]
