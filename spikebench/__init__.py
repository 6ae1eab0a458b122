"""spikebench: the cost of spiking neural networks on ordinary GPUs, measured.

The package mirrors the pipeline's stages: ``data`` (downloads, demo data, N-MNIST frames,
splits), ``models``, ``training``, ``evaluation``, ``telemetry``, ``results`` and ``figures``.
The Snakemake scripts in ``scripts/`` are thin adapters around these modules.
"""

__version__ = "0.1.0"
