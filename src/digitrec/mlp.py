"""The tutorial's MLP as a plain torch module: all that prediction and export need.

Kept apart from the LightningModule so that `digitrec predict` starts without importing
Lightning (seconds of start-up for a single image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class MLP(nn.Module):
    """784 -> hidden sizes (ReLU) -> classes, with the input normalisation built in.

    Takes images as uint8 in [0, 255] or float in [0, 1] (white digit on black),
    shaped (N, 28, 28) or (N, 784), so every caller feeds the same kind of data.
    """

    def __init__(
        self,
        input_size: int = 784,
        hidden_sizes: Sequence[int] = (500, 100),
        num_classes: int = 10,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        # Buffers, so the normalisation travels with the weights in every checkpoint.
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        # (x / 255 - mean) / std as one multiply-add: one pass over the batch instead of three,
        # a measurable share of a training step of a model this small.
        scale = (255.0 if x.dtype == torch.uint8 else 1.0) * self.std
        return self.layers(torch.addcmul(-self.mean / self.std, x.float(), 1.0 / scale))
