"""The `digitrec` command: one verb per job, user mistakes as one line, never a traceback."""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from digitrec.errors import EXIT_FAILED_RUN, EXIT_INTERRUPTED, EXIT_USER_ERROR, BadOverride, DigitrecError

USAGE = """usage: digitrec COMMAND [ARGS...]

commands:
  train [KEY=VALUE ...]     train a model (Hydra overrides; -m KEY=A,B for a sweep)
  eval ckpt_path=PATH       test a checkpoint on the official MNIST test set (or data=folder data.root=DIR: your digits)
  sweep-report [DIR]        the summary of a sweep (one row per job, best first), as CSV and markdown; no DIR: the newest
  sweep-report --storage URL --study NAME   the summary of an Optuna study: every trial, all workers
  predict IMAGE [IMAGE ...] recognise the digit in image files (--help for options)
  export --ckpt PATH ...    write the model as ONNX or a plain state_dict (--help for options)
  serve [--port 8000]       a draw-a-digit page and an HTTP API on http://127.0.0.1:8000/ (--help for options)
  data [KEY=VALUE ...]      download (or find) and verify MNIST
  describe [GROUP[=OPTION]] the config groups and their options; one option's arguments, types and defaults

options:
  --version                 print digitrec's version
  COMMAND --help            the options of one command

examples:
  digitrec train model.optimizer.lr=3e-4 trainer.max_epochs=10 data.batch_size=64
  digitrec train experiment=tutorial
  digitrec train -m model.optimizer.lr=1e-3,3e-4 data.batch_size=64,128  # 4 jobs, then a summary
  digitrec train -m 'experiment=glob(*)'                           # every experiment config
  digitrec train hparams_search=optuna                              # a resumable Optuna search
  digitrec train --cfg job          # print the composed config, train nothing
  digitrec train -cd my_configs experiment=mine   # your own configs beside the packaged ones
  digitrec eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
  digitrec train data=folder data.root=~/my_digits init_from=outputs/train/runs/<run>/model.ckpt  # fine-tune on your digits
  digitrec describe model/net=cnn   # the CNN's arguments: types, defaults, the values cnn.yaml sets
"""

# Hydra's shell completion completes a program named after the Python script it runs; `digitrec
# train` is a subcommand, which it cannot complete.
COMPLETION_FLAGS = {"--shell-completion", "-sc"}


def quote_paths(args: list[str]) -> list[str]:
    """Quote override values that name an existing file or folder.

    Run directories are named by their overrides (`0_model.optimizer.lr=0.001,data.batch_size=64`), and
    Hydra would read that `=` and `,` as syntax: a pasted checkpoint path must still just work.
    """
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value[:1] not in ("'", '"') and any(c in value for c in "=,[]()") and Path(value).exists():
            arg = f"{key}='" + value.replace("'", "\\'") + "'"
        quoted.append(arg)
    return quoted


def compose(config_name: str, overrides: list[str]):
    """The composed config, for commands that read it without starting a run (`digitrec data`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from digitrec.command.checks import one_line

    try:
        with initialize_config_module("digitrec.configs", version_base="1.3"):
            return hydra_compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise BadOverride(one_line(err)) from None


class RunLog:
    """Writes what the run prints into its train.log too (beside Hydra's log records), skipping the
    live progress bar's redraws."""

    def __init__(self, stream, log) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        if "\x1b[" not in text and "\r" not in text:
            with contextlib.suppress(OSError, ValueError):
                self.log.write(text)
                self.log.flush()
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def run_log(path: Path):
    try:
        log = path.open("a")
    except OSError:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RunLog(sys.stdout, log), RunLog(sys.stderr, log)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        log.close()


def record_failure(run_dir: Path, status: str, reason: str, **extra) -> None:
    """The record of a run that did not finish, as sweep jobs write it (so nothing mistakes it for a result)."""
    from digitrec.config.job import run_overrides
    from digitrec.tracking import record

    with contextlib.suppress(OSError):
        record.write_outcome(run_dir, status, reason, run_overrides(), extra)


def resume_hint(cfg, run_dir: Path, config_name: str) -> tuple[str, str | None]:
    """How to continue an interrupted run: the command, with the real last.ckpt when there is one."""
    dirpath = None
    with contextlib.suppress(Exception):
        dirpath = cfg.callbacks.model_checkpoint.dirpath
    last = Path(dirpath or run_dir / "checkpoints") / "last.ckpt"
    if config_name != "train":
        return "run the same command again", None
    if not last.is_file():
        return "no checkpoint was saved yet (interrupted in the first epoch): run the same command again", None
    from digitrec.config.job import run_overrides

    kept = [o for o in run_overrides() if not o.startswith("ckpt_path=")]
    return " ".join(["resume with: digitrec train", *kept, f"ckpt_path={last}"]), str(last)


@contextlib.contextmanager
def hydra_errors_raised():
    """Hydra reports its own errors (a multi-line block, exit 1) unless HYDRA_FULL_ERROR is set; then
    it raises them, and digitrec says them in one line with its own exit code."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def run_hydra(config_name: str, task: Callable, args: list[str]) -> None:
    """Run `task` under Hydra: its flags, one composition of the config, run directories, multirun,
    sweepers. digitrec.command.checks (a Hydra callback) judges the config before any directory exists."""
    if set(args) & COMPLETION_FLAGS:
        raise DigitrecError(
            "shell completion is not available for digitrec (Hydra completes only programs of its own); digitrec train --help lists the config groups"
        )
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from digitrec.command.checks import check_job, one_line
    from digitrec.config.job import in_multirun
    from digitrec.sweeps.sweep import run_sweep_job
    from digitrec.tracking import record
    from hydra_plugins.digitrec_optuna_sweeper import ResumableOptunaSweeper

    # Hydra finds plugins by listing the hydra_plugins folders, which an editable install hides
    # behind an import hook: register digitrec's own sweeper by hand.
    Plugins.instance().register(ResumableOptunaSweeper)
    command_line = list(sys.argv)

    def task_with_clean_errors(cfg):
        # Lightning's ddp starts the other devices by re-running this command: give it back as typed.
        sys.argv = command_line
        if in_multirun():
            return run_sweep_job(task, cfg, check=lambda: check_job(cfg, config_name))
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # Replaced by the outcome; left as it is by a kill, so the run shows it never finished.
        record_failure(run_dir, record.RUNNING, "started, not finished (still running, or killed)", pid=os.getpid())
        # Leaving through SystemExit: Hydra would wrap any Exception in its own multi-line report.
        with run_log(run_dir / f"{HydraConfig.get().job.name}.log"):
            try:
                return task(cfg)
            except DigitrecError as err:
                record_failure(run_dir, record.FAILED, str(err))
                print(f"digitrec: error: {err}", file=sys.stderr, flush=True)
                raise SystemExit(err.exit_code) from None
            except (KeyboardInterrupt, SystemExit) as err:
                # Lightning answers Ctrl-C by tearing down and calling sys.exit(1).
                if not isinstance(err, KeyboardInterrupt) and not isinstance(err.__context__, KeyboardInterrupt):
                    raise
                hint, last = resume_hint(cfg, run_dir, config_name)
                record_failure(run_dir, record.INTERRUPTED, "interrupted (Ctrl-C)", resume_from=last)
                print(f"digitrec: interrupted; {hint}", file=sys.stderr, flush=True)
                raise SystemExit(EXIT_INTERRUPTED) from None
            except Exception as err:  # noqa: BLE001  (a bug: its traceback stays visible, and the run says it failed)
                from digitrec.sweeps.sweep import reason_of

                traceback.print_exc()
                with contextlib.suppress(OSError):
                    (run_dir / "traceback.txt").write_text(traceback.format_exc())
                record_failure(run_dir, record.FAILED, f"{reason_of(err)} (traceback.txt in the run's directory)")
                raise SystemExit(EXIT_FAILED_RUN) from None

    # hydra.main reads its flags and overrides from sys.argv: the command's, without the verb.
    sys.argv = [f"digitrec {config_name}", *quote_paths(args)]
    try:
        with hydra_errors_raised():
            hydra.main(version_base="1.3", config_path="pkg://digitrec.configs", config_name=config_name)(task_with_clean_errors)()
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err)
        if "submitit" in message:
            message += " (the SLURM launcher is an extra: pip install -e '.[slurm]')"
        raise BadOverride(message) from None
    except ValueError as err:  # Hydra's check of its own flags, e.g. -m with --cfg
        raise DigitrecError(one_line(err)) from None
    except OSError as err:  # Hydra making a sweep's or a run's folder, or saving its config there
        raise DigitrecError(
            f"cannot write the run's files: {err.strerror or err} ({err.filename}): choose a writable folder, e.g. paths.output_root=~/digitrec-outputs"
        ) from None
    finally:
        sys.argv = command_line


def print_config_help(config_name: str, args: list[str]) -> bool:
    """`digitrec train --help` / `eval --help`: the command's own groups, described (Hydra's --help
    lists every group of the config folder, train's in eval's; --hydra-help still shows Hydra's flags)."""
    if not set(args) & {"-h", "--help"}:
        return False
    from digitrec.command.describe import config_help

    print(config_help(config_name), end="")
    return True


def train_command(args: list[str]) -> int:
    if print_config_help("train", args):
        return 0

    def train(cfg):  # imported only after the pre-check: Lightning and torch take seconds to import
        from digitrec.training.train import train

        return train(cfg)

    run_hydra("train", train, args)
    return 0


def eval_command(args: list[str]) -> int:
    if print_config_help("eval", args):
        return 0

    def evaluate(cfg):
        from digitrec.training.evaluate import evaluate

        return evaluate(cfg)

    run_hydra("eval", evaluate, args)
    return 0


DATA_USAGE = """usage: digitrec data [KEY=VALUE ...]

Find (DIGITREC_MNIST_DIR or data.data_dir=PATH) or download (into paths.data_dir) the four
official MNIST files and verify their SHA-256. A folder verified once is remembered (by file
sizes and modification times) and only checked again when a file changes.

examples:
  digitrec data
  digitrec data data.data_dir=/path/to/mnist
  digitrec data paths.data_dir=/tmp/mnist-download
"""


def data_command(args: list[str]) -> int:
    if set(args) & {"-h", "--help"}:
        print(DATA_USAGE, end="")
        return 0
    from digitrec.data.mnist import prepare_mnist

    data = compose("train", quote_paths(args)).data
    folder = prepare_mnist(data.data_dir, data.download, data.download_dir)
    print(f"MNIST ready and verified in {folder}")
    return 0


def describe_command(args: list[str]) -> int:
    from digitrec.command.describe import main as describe_main

    return describe_main(args)


def sweep_report_command(args: list[str]) -> int:
    from digitrec.sweeps.sweep import report_main

    return report_main(args)


def predict_command(args: list[str]) -> int:
    from digitrec.inference.predict import main as predict_main

    return predict_main(args)


def export_command(args: list[str]) -> int:
    from digitrec.inference.export import main as export_main

    return export_main(args)


def serve_command(args: list[str]) -> int:
    from digitrec.inference.serve import main as serve_main

    return serve_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "eval": eval_command,
    "predict": predict_command,
    "export": export_command,
    "serve": serve_command,
    "data": data_command,
    "sweep-report": sweep_report_command,
    "describe": describe_command,
}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        sys.exit(0 if args else EXIT_USER_ERROR)
    if args[0] in ("--version", "-V"):
        from digitrec import __version__

        print(f"digitrec {__version__}")
        sys.exit(0)
    command, rest = args[0], args[1:]
    # The folder digitrec runs in holds the user's own classes (`model.net._target_=my_package.MyNet`),
    # importable as `python -m digitrec` would make them, which puts it first on sys.path. The
    # `digitrec` script puts only its own folder there. Added last: a folder of the user's that is
    # named like a library (a `torch/` checkout) never shadows the installed one.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(f"digitrec: error: unknown command {command!r}; {hint}choose one of {', '.join(COMMANDS)} (digitrec --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    try:
        code = COMMANDS[command](rest)
    except DigitrecError as err:
        print(f"digitrec: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("digitrec: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as exit:
        # Lightning ends a Ctrl-C with sys.exit(1), e.g. in a sweep job: it is still an interruption.
        if not isinstance(exit.__context__, KeyboardInterrupt) or exit.code == EXIT_INTERRUPTED:
            raise
        print("digitrec: interrupted (the sweep's finished jobs are kept; digitrec sweep-report DIR shows them)", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`digitrec predict ... | head`): stop quietly, as Unix tools do.
        sys.stdout = None
        code = 141
    sys.exit(code)
