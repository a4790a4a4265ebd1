"""gpucost: GPU-hour cost accounting service."""

__version__ = "0.1.0"
