"""A network class of a user's own, for the tests: digitrec must train it with no change to its code."""

from torch import nn


class TinyNet(nn.Module):
    """Takes float images (N, 1, 28, 28) in [0, 1], as digitrec promises a user's network."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, images):
        assert images.dtype.is_floating_point and images.shape[1:] == (1, 28, 28), (images.dtype, images.shape)
        return self.layers(images)
