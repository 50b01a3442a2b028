"""mnist-lab: a configurable experiment runner for MNIST."""

__version__ = "0.1.0"
