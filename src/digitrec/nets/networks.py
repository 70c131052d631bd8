"""digitrec's networks as plain torch modules, and rebuilding a network from a checkpoint's record.

Kept apart from the LightningModule so that `digitrec predict` starts without importing
Lightning or Hydra (seconds of start-up for a single image).

Every network takes images shaped (N, 28, 28), (N, 1, 28, 28) or (N, 784), as uint8 in
[0, 255] or float in [0, 1] (white digit on black), and returns (N, classes) logits; the input
normalisation is built in, so every caller (training, predict, export, serve) feeds the same data.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from digitrec.errors import DigitrecError
from digitrec.targets import locate

# Mean and standard deviation of the MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
NORMS = ("none", "batch", "layer")


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Images as float in [0, 1]: uint8 batches (0-255) scaled, float ones as they are."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class Normalize(nn.Module):
    """(x / 255 - mean) / std for uint8 images, (x - mean) / std for float ones, as one multiply-add:
    one pass over the batch instead of three, a measurable share of a small model's step. The mean
    and std are buffers, so they travel with the weights in every checkpoint."""

    def __init__(self, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scale = (255.0 if images.dtype == torch.uint8 else 1.0) * self.std
        return torch.addcmul(-self.mean / self.std, images.float(), 1.0 / scale)


class MLP(nn.Module):
    """784 -> hidden sizes -> classes. The defaults are the tutorial's: 500 and 100 ReLU units, no
    dropout, no normalisation layer; then the layers (and checkpoint keys) are exactly its."""

    def __init__(
        self,
        input_size: int = 784,
        hidden_sizes: Sequence[int] = (500, 100),
        num_classes: int = 10,
        dropout: float = 0.0,
        norm: str = "none",
        activation: str = "relu",
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            # Linear -> norm -> activation -> dropout; the norm makes the Linear's bias redundant.
            layers.append(nn.Linear(width, hidden, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        self.normalize = Normalize(mean, std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.normalize(images.flatten(1)))


class CNN(nn.Module):
    """A small convolutional net in the spirit of LeNet-5 and PyTorch's MNIST example: per width in
    `channels`, two 3x3 convolutions (or one `kernel_size` one with `convs_per_block: 1`) with
    normalisation and activation, then 2x2 max pooling; then a hidden fully connected layer with
    dropout, and the classes.

    `pool_first: true` pools right after each block's last convolution, before its normalisation and
    activation (as CPU/GPU speed-run nets do): they then work on a quarter of the pixels, which halves a
    training step on a CPU. Max-pooling commutes with ReLU, so only the BatchNorm statistics differ
    (taken after pooling): a slightly different model, not an approximation of the other order."""

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        convs_per_block: int = 2,
        hidden_size: int = 256,
        num_classes: int = 10,
        dropout: float = 0.3,
        norm: str = "batch",
        activation: str = "relu",
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        width, size = 1, IMAGE_SIZE
        for out in channels:
            for index in range(convs_per_block):
                layers.append(nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=norm == "none"))
                if pool_first and index == convs_per_block - 1:
                    layers.append(nn.MaxPool2d(2))
                if norm == "batch":
                    layers.append(nn.BatchNorm2d(out))
                elif norm == "layer":
                    layers.append(nn.GroupNorm(1, out))  # LayerNorm over channels and positions
                layers.append(ACTIVATIONS[activation]())
                width = out
            if not pool_first:
                layers.append(nn.MaxPool2d(2))
            size //= 2
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(width * size * size, hidden_size), ACTIVATIONS[activation]()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden_size, num_classes))
        self.classifier = nn.Sequential(*head)
        # Channels-last convolutions: oneDNN's and cuDNN's fast layout, ~20% faster steps on a CPU.
        self.features.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # -1, not len(images): the ONNX exporter would bake the example's batch size into the graph.
        x = self.normalize(images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        return self.classifier(self.features(x.contiguous(memory_format=torch.channels_last)))


class ImagesAsFloat(nn.Module):
    """Wraps a user's network: it gets float images in [0, 1] shaped (N, 1, 28, 28), whatever the
    batch's form, so it needs to know nothing of digitrec's uint8 batches."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)  # -1: a dynamic batch in ONNX exports too
        return self.net(as_unit_float(x))


# The networks a checkpoint may name: rebuilding never imports any other class named in a file.
OWN_NETS = {"digitrec.nets.MLP": MLP, "digitrec.nets.CNN": CNN}


def with_defaults(net: Mapping[str, Any]) -> dict[str, Any]:
    """A network record with the defaults of digitrec's own classes filled in, from the classes'
    own signatures: a record that leaves a default out is the same network. Other classes' records
    are returned as they are."""
    cls = OWN_NETS.get(str(net.get("_target_")))
    if cls is None:
        return dict(net)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not inspect.Parameter.empty}
    filled = {**{k: v for k, v in net.items() if str(k).startswith("_")}, **defaults, **net}  # _target_ first
    return {k: list(v) if isinstance(v, tuple) else v for k, v in filled.items()}


def net_arguments(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if not str(k).startswith("_")}


def check_net_allowed(spec: Mapping[str, Any], trusted: Sequence[str] = ()) -> str:
    """The record's class name if digitrec may build it: one of its own, or one in `trusted`."""
    target = str(spec.get("_target_", ""))
    if target not in OWN_NETS and target not in trusted:
        raise DigitrecError(
            f"the network class {target or '(none)'} is not one of digitrec's ({', '.join(OWN_NETS)}) and was not imported: "
            f"a checkpoint cannot make digitrec import code. If you trust it, name it yourself (net_class={target} for eval, "
            f"--net-class {target} for predict, export and serve)"
        )
    return target


def build_net(spec: Mapping[str, Any], trusted: Sequence[str] = ()) -> nn.Module:
    """The network a record describes ({"_target_": "digitrec.nets.CNN", ...arguments}).

    digitrec's own networks are always built; another class only if its name is in `trusted`: the
    classes a user named in the config or on the command line. A file alone never makes digitrec
    import code.
    """
    target = check_net_allowed(spec, trusted)
    if target in OWN_NETS:
        return OWN_NETS[target](**net_arguments(spec))
    net = locate(target)(**net_arguments(spec))
    if not isinstance(net, nn.Module):
        raise DigitrecError(f"{target} is not a torch.nn.Module: model.net must name a network class")
    return ImagesAsFloat(net)


def net_from_checkpoint(checkpoint: Mapping[str, Any], source: Any = "checkpoint", trusted: Sequence[str] = ()) -> nn.Module:
    """The trained network of a checkpoint from digitrec.nets.checkpoint.load_checkpoint (Lightning's or an
    exported model.ckpt, in today's form), in eval mode."""
    try:
        spec = with_defaults(checkpoint["hyper_parameters"]["net"])
        if spec.get("_target_") == "digitrec.nets.MLP" and int(spec["input_size"]) != IMAGE_SIZE * IMAGE_SIZE:
            raise DigitrecError(f"it expects {spec['input_size']} inputs, not 28x28 images: it cannot read digit images")
        net = build_net(spec, trusted)
        # The LightningModule holds the network as `net`; its keys carry that prefix in both file kinds.
        state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        net.load_state_dict(state)
    except DigitrecError as err:
        raise DigitrecError(f"checkpoint {source}: {err}") from None
    except (TypeError, KeyError, ValueError, RuntimeError, AttributeError) as err:
        from digitrec.errors import first_line

        raise DigitrecError(f"checkpoint {source} does not match the digitrec model: {first_line(err)}") from None
    return net.eval()


def describe_net(spec: Mapping[str, Any]) -> str:
    """A short readable name for a network record: 'MLP 784-500-100-10 (relu)', 'CNN 32-64 fc 256', or the class."""
    target = str(spec.get("_target_", ""))
    args = with_defaults(spec)
    if target == "digitrec.nets.MLP":
        sizes = [args["input_size"], *args["hidden_sizes"], args["num_classes"]]
        extras = [args["activation"]]
        if args["norm"] != "none":
            extras.append(f"{args['norm']} norm")
        if args["dropout"]:
            extras.append(f"dropout {args['dropout']:g}")
        return "MLP " + "-".join(map(str, sizes)) + f" ({', '.join(extras)})"
    if target == "digitrec.nets.CNN":
        return f"CNN {'-'.join(map(str, args['channels']))} fc {args['hidden_size']}"
    return target.rpartition(".")[2] or "unknown"
