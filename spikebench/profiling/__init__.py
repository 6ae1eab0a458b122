"""Where the time of one training step goes (issue #22): per phase, layer and op kind, beside its arithmetic floor.

:func:`profile_network` runs one profiled training step of a trained network (torch.profiler; CPU and, on a GPU,
CUDA activity), times unprofiled steps and the network's matmuls and convolutions alone at the same shapes (the
*arithmetic floor*: what an ANN of those shapes also computes), and returns the table that rule ``profile``
writes as ``<results>/<run>/profile.parquet``. :mod:`.events` turns profiler events into rows (and says what it
cannot attribute), :mod:`.layers` names the layers and times the floor, :mod:`.step` runs the step,
:mod:`.report` draws the figure and writes the summary table of rule ``profile_summary``, :mod:`.job` is the job.
"""

from spikebench.profiling.events import KINDS, PHASES, breakdown
from spikebench.profiling.layers import arithmetic_floor, network_layers
from spikebench.profiling.step import COLUMNS, profile_network, profile_step, training_step

__all__ = [
    "COLUMNS",
    "KINDS",
    "PHASES",
    "arithmetic_floor",
    "breakdown",
    "network_layers",
    "profile_network",
    "profile_step",
    "training_step",
]
