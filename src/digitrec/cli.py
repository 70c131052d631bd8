"""The `digitrec` command: one verb per job, user mistakes as one line, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from digitrec.errors import DigitrecError

USAGE = """usage: digitrec COMMAND [ARGS...]

commands:
  train [KEY=VALUE ...]     train a model (Hydra overrides; -m KEY=A,B for a sweep)
  eval ckpt_path=PATH       test a checkpoint on the official MNIST test set
  predict IMAGE [IMAGE ...] recognise the digit in image files (--help for options)
  export --ckpt PATH ...    write the model as ONNX or a plain state_dict (--help for options)
  data [KEY=VALUE ...]      download (or find) and verify MNIST

examples:
  digitrec train model.lr=3e-4 trainer.max_epochs=10 data.batch_size=64
  digitrec train experiment=tutorial
  digitrec train --cfg job          # print the composed config, train nothing
  digitrec eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
"""

# Hydra's own flags: they are passed through untouched, and a run with them is not pre-checked.
HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--shell-completion", "-sc"}
MULTIRUN_FLAGS = {"--multirun", "-m"}


def one_line(err: BaseException) -> str:
    # Hydra appends its search path and docs links; the first sentences say what is wrong.
    text = str(err).split("Config search path")[0].split("See https://")[0]
    return " ".join(text.split()) or type(err).__name__


def compose(config_name: str, overrides: list[str]):
    """Compose a config as Hydra will, so mistakes surface as one line before any work starts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import digitrec.config  # noqa: F401  (registers the run_id resolver)

    try:
        with initialize_config_module("digitrec.configs", version_base="1.3"):
            # No Hydra run exists yet to name the output directory; the user's own value still wins.
            return hydra_compose(config_name, overrides=["paths.output_dir=.", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise DigitrecError(f"bad override: {one_line(err)}") from None


def run_hydra(config_name: str, task: Callable, args: list[str]) -> None:
    """Run `task` under Hydra (run directories, multirun, sweepers), pre-checking a single run."""
    import hydra

    from digitrec.config import check_config

    if not (set(args) & (HYDRA_INFO_FLAGS | MULTIRUN_FLAGS)):
        check_config(compose(config_name, [a for a in args if not a.startswith("-")]))

    def task_with_clean_errors(cfg):
        try:
            return task(cfg)
        except DigitrecError as err:
            raise SystemExit(f"digitrec: error: {err}") from None

    sys.argv = [f"digitrec {config_name}", *args]
    hydra.main(version_base="1.3", config_path="pkg://digitrec.configs", config_name=config_name)(task_with_clean_errors)()


def train_command(args: list[str]) -> int:
    from digitrec.train import train

    run_hydra("train", train, args)
    return 0


def eval_command(args: list[str]) -> int:
    from digitrec.evaluate import evaluate

    run_hydra("eval", evaluate, args)
    return 0


def data_command(args: list[str]) -> int:
    from hydra.utils import instantiate

    cfg = compose("train", args)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    print(f"MNIST ready and verified in {datamodule.folder()}")
    return 0


def predict_command(args: list[str]) -> int:
    from digitrec.predict import main as predict_main

    return predict_main(args)


def export_command(args: list[str]) -> int:
    from digitrec.export import main as export_main

    return export_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "eval": eval_command,
    "predict": predict_command,
    "export": export_command,
    "data": data_command,
}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"digitrec: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (digitrec --help)", file=sys.stderr)
        sys.exit(2)
    try:
        code = COMMANDS[command](rest)
    except DigitrecError as err:
        print(f"digitrec: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("digitrec: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
