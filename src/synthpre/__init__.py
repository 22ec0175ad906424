"""synthpre: synthetic pre-training of equivariant interatomic potentials."""

__version__ = "0.1.0"
