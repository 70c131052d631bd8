"""The two plain PyTorch references digitrec is measured against, one process per run.

`python -m benchmarks.loops {tutorial,tensor} --json OUT ...` trains the MLP, tests it on the
official 10k test set and writes per-epoch training times and test accuracy to OUT.

- tutorial: the tutorial's own loop: torchvision MNIST + ToTensor() + DataLoader(shuffle=True).
- tensor:   the same model and optimizer over tensor-resident data (one tensor, a randperm per
            epoch, sliced batches): the practical floor on this hardware.

An epoch's time covers its training steps only (batching, forward, backward, optimizer step),
exactly what digitrec's timing callback measures; validation is not part of either loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from benchmarks.clock import Clock


def build_mlp(hidden_sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def tutorial_loop(args: argparse.Namespace, model: nn.Module, optimizer, loss_fn) -> tuple[list[dict[str, float]], float]:
    from torch.utils.data import DataLoader
    from torchvision.datasets import MNIST
    from torchvision.transforms import ToTensor

    train_set = MNIST(args.torchvision_root, train=True, transform=ToTensor())
    test_set = MNIST(args.torchvision_root, train=False, transform=ToTensor())
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    epochs = []
    for _ in range(args.epochs):
        clock = Clock()
        for step, (images, labels) in enumerate(loader):
            if step == args.steps:
                break
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs.append(clock.elapsed())
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(test_set, batch_size=1000):
            correct += (model(images).argmax(1) == labels).sum().item()
    return epochs, correct / len(test_set)


def tensor_loop(args: argparse.Namespace, model: nn.Module, optimizer, loss_fn) -> tuple[list[dict[str, float]], float]:
    from digitrec.data.mnist import load_mnist
    from digitrec.nets.networks import MNIST_MEAN, MNIST_STD

    device = torch.device(args.device)
    mnist = load_mnist(args.mnist_dir)
    # Converted and normalised once, up front: each step only slices.
    to_input = lambda images: ((images.flatten(1).float() / 255 - MNIST_MEAN) / MNIST_STD).to(device)  # noqa: E731
    images, labels = to_input(mnist.train_images), mnist.train_labels.to(device)
    epochs = []
    for _ in range(args.epochs):
        clock = Clock(device)
        order = torch.randperm(len(labels), device=device)
        for step in range(args.steps):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            # index_select: the fastest gather on a CPU (digitrec's batches use it too).
            loss = loss_fn(model(images.index_select(0, index)), labels.index_select(0, index))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        epochs.append(clock.elapsed())
    with torch.no_grad():
        predictions = model(to_input(mnist.test_images)).argmax(1)
    return epochs, (predictions == mnist.test_labels.to(device)).float().mean().item()


LOOPS = {"tutorial": tutorial_loop, "tensor": tensor_loop}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=LOOPS, help="which reference loop to run")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--mnist-dir", help="folder with the four official MNIST files (tensor loop)")
    parser.add_argument("--torchvision-root", help="root folder laid out for torchvision's MNIST (tutorial loop)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--steps", type=int, default=550, help="training steps per epoch (digitrec's: 55k images / batch)")
    parser.add_argument("--batch-size", type=int, default=100, help="training batch size")
    parser.add_argument("--hidden", default="500,100", help="hidden layer widths, comma-separated")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: PyTorch's")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (tensor loop only)")
    parser.add_argument("--seed", type=int, default=12345, help="seed for weights and shuffling")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device if args.loop == "tensor" else "cpu")
    model = build_mlp([int(h) for h in args.hidden.split(",")]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    epochs, test_acc = LOOPS[args.loop](args, model, optimizer, nn.CrossEntropyLoss())
    args.json.write_text(json.dumps({"epochs": epochs, "test_acc": test_acc}) + "\n")


if __name__ == "__main__":
    main()
