"""`digitrec export`: a trained model as one ONNX file or as the plain state_dict `model.ckpt`.

The ONNX model takes what `digitrec.inference.preprocess.preprocess` makes: float32 images of shape
(batch, 28, 28) in [0, 1], white digit on black; the normalisation is inside the model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from digitrec.errors import EXIT_USER_ERROR, DigitrecError
from digitrec.inference.predict import add_net_class_option
from digitrec.nets.checkpoint import load_checkpoint, save_model_file
from digitrec.nets.networks import describe_net, net_from_checkpoint

ONNX_FORMAT = "digitrec.onnx/1"
ONNX_OPSET = 17  # read by every onnxruntime of the last few years
ONNX_INPUT = "images: float32 (batch, 28, 28) in [0, 1], white digit on black (see digitrec.inference.preprocess)"


class WithProbabilities(nn.Module):
    """The network with softmax probabilities as a second output, so ONNX users need no post-processing."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(images)
        return logits, torch.softmax(logits, dim=1)


def export_onnx(net: nn.Module, out: Path, hyper_parameters: dict) -> None:
    """Write `net` as a single-file ONNX model whose batch dimension is dynamic."""
    if importlib.util.find_spec("onnx") is None:
        raise DigitrecError("ONNX export needs the onnx package: pip install 'digitrec[onnx]'")
    import onnx

    with warnings.catch_warnings():
        # The TorchScript exporter needs only `onnx`; the newer one also needs onnxscript, which
        # is a large dependency for networks this small. torch calls the old one deprecated.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithProbabilities(net.eval()),
            (torch.zeros(1, 28, 28),),
            str(out),
            dynamo=False,
            input_names=["images"],
            output_names=["logits", "probabilities"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )
    model = onnx.load(str(out))
    # Self-describing, like the checkpoints: what it is, what it expects, how it was built.
    for key, value in (("format", ONNX_FORMAT), ("input", ONNX_INPUT), ("hyper_parameters", json.dumps(hyper_parameters))):
        model.metadata_props.add(key=key, value=value)
    model.doc_string = f"digitrec MNIST {describe_net(hyper_parameters['net'])}. Input {ONNX_INPUT}. Outputs logits and probabilities (batch, 10)."
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitrec export",
        description="Write a trained model as a single-file ONNX model (dynamic batch) or as the plain state_dict model.ckpt.",
    )
    parser.add_argument("--ckpt", required=True, metavar="PATH", help="a Lightning checkpoint (checkpoints/*.ckpt) or an exported model.ckpt")
    parser.add_argument(
        "--format",
        required=True,
        choices=("onnx", "state_dict"),
        help="onnx: one .onnx file, input float32 (batch, 28, 28) in [0, 1]; "
        "state_dict: model.ckpt with the weights and hyper-parameters, no optimizer state",
    )
    parser.add_argument("--out", required=True, metavar="FILE", type=Path, help="file to write (its folder is created)")
    add_net_class_option(parser)
    return parser


def main(argv: list[str]) -> int:
    """`digitrec export ...`: 0 when the file is written, 2 for usage errors and unusable checkpoints."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed the usage and the problem
        return int(exit.code or 0)
    try:
        checkpoint = load_checkpoint(args.ckpt)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "onnx":
            export_onnx(net_from_checkpoint(checkpoint, args.ckpt, args.net_class), args.out, checkpoint["hyper_parameters"])
            print(f"wrote {args.out} (ONNX, opset {ONNX_OPSET}; input {ONNX_INPUT}; outputs logits, probabilities)")
        else:
            net_from_checkpoint(checkpoint, args.ckpt, args.net_class)  # the weights fit the network the file describes
            save_model_file(checkpoint["hyper_parameters"], checkpoint["state_dict"], args.out)
            print(f"wrote {args.out} (state_dict and hyper-parameters; load with digitrec.inference.predict.Predictor.from_checkpoint)")
    except DigitrecError as err:
        print(f"digitrec: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        print(f"digitrec: error: cannot write {args.out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
