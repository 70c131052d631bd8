"""digitrec: handwritten digit recognition, the MNIST MLP tutorial as a Lightning + Hydra project."""

__version__ = "0.1.0"
