"""The `digitrec` command: one verb per job, user mistakes as one line, never a traceback."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from digitrec.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, DigitrecError

USAGE = """usage: digitrec COMMAND [ARGS...]

commands:
  train [KEY=VALUE ...]     train a model (Hydra overrides; -m KEY=A,B for a sweep)
  eval ckpt_path=PATH       test a checkpoint on the official MNIST test set
  sweep-report DIR          the summary of a sweep (one row per job, best first), as CSV and markdown
  predict IMAGE [IMAGE ...] recognise the digit in image files (--help for options)
  export --ckpt PATH ...    write the model as ONNX or a plain state_dict (--help for options)
  serve [--port 8000]       a draw-a-digit page and an HTTP API on http://127.0.0.1:8000/ (--help for options)
  data [KEY=VALUE ...]      download (or find) and verify MNIST

options:
  --version                 print digitrec's version
  COMMAND --help            the options of one command

examples:
  digitrec train model.lr=3e-4 trainer.max_epochs=10 data.batch_size=64
  digitrec train experiment=tutorial
  digitrec train -m model.lr=1e-3,3e-4 data.batch_size=64,128      # 4 jobs, then a summary
  digitrec train -m 'experiment=glob(*)'                           # every experiment config
  digitrec train hparams_search=optuna                              # a resumable Optuna search
  digitrec train --cfg job          # print the composed config, train nothing
  digitrec eval ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
"""

# Hydra's own flags: they are passed through untouched, and a run with them is not pre-checked.
HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve"}
# Hydra's shell completion completes a program named after the Python script it runs; `digitrec
# train` is a subcommand, which it cannot complete.
COMPLETION_FLAGS = {"--shell-completion", "-sc"}
MULTIRUN_FLAGS = {"--multirun", "-m"}


def one_line(err: BaseException) -> str:
    # Hydra appends its search path and docs links; the first sentences say what is wrong.
    text = str(err).split("Config search path")[0].split("See https://")[0]
    return " ".join(text.split()) or type(err).__name__


def quote_paths(args: list[str]) -> list[str]:
    """Quote override values that name an existing file or folder.

    Run directories are named by their overrides (`0_model.lr=0.001,data.batch_size=64`), and
    Hydra would read that `=` and `,` as syntax: a pasted checkpoint path must still just work.
    """
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and value[:1] not in ("'", '"') and any(c in value for c in "=,[]()") and Path(value).exists():
            arg = f"{key}='" + value.replace("'", "\\'") + "'"
        quoted.append(arg)
    return quoted


def compose(config_name: str, overrides: list[str], with_hydra: bool = False):
    """Compose a config as Hydra will, so mistakes surface as one line before any work starts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import digitrec.config  # noqa: F401  (registers the run_id resolver)

    try:
        with initialize_config_module("digitrec.configs", version_base="1.3"):
            # No Hydra run exists yet to name the output directory; the user's own value still wins.
            return hydra_compose(config_name, overrides=["paths.output_dir=.", *overrides], return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as err:
        message = one_line(err)
        if "submitit" in message:
            message += " (the SLURM launcher is an extra: pip install -e '.[slurm]')"
        raise DigitrecError(f"bad override: {message}") from None


def parse_overrides(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise DigitrecError(f"bad override: {one_line(err)}") from None


def check_sweep(config_name: str, overrides: list[str]) -> list[str]:
    """Compose every value of every swept key once (not every combination): a typo in a key or a
    config name stops the sweep before its first job. Bad values are left to their jobs, which
    record them as failed in the sweep's summary.

    Returns the overrides that name the sweep's directories (see sweep_naming).
    """
    from hydra.errors import HydraException

    parsed = parse_overrides(overrides)
    fixed, swept = [], []
    for override in parsed:
        try:
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else None
        except HydraException:  # glob() and the intervals of an Optuna search: nothing to enumerate here
            continue
        if values is None:
            fixed.append(override.input_line)
        elif values:
            swept.append([f"{override.get_key_element()}={value}" for value in values])
    first = [values[0] for values in swept]
    cfg = compose(config_name, fixed + first, with_hydra=True)
    for i, values in enumerate(swept):
        for value in values[1:]:
            compose(config_name, fixed + first[:i] + [value] + first[i + 1 :])
    return sweep_naming(cfg, parsed)


# Keys that change neither a job's result nor what a search finds.
UNNAMED_KEYS = ("hparams_search", "logger", "progress", "threads")


def sweep_naming(cfg, parsed: list) -> list[str]:
    """Hydra overrides that name a sweep's directories by what matters.

    Jobs: by what differs between them (the keys every job shares are left out of their names).
    Optuna: the study by the command's overrides, so that the same command continues the same
    study (n_trials and launcher settings aside) and a command with other settings starts its own.
    """
    from digitrec.config import overrides_suffix

    keys = {o.key_or_group for o in parsed}
    naming = []
    if "hydra.job.config.override_dirname.exclude_keys" not in keys:
        shared = [o.key_or_group for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
        excluded = [*cfg.hydra.job.config.override_dirname.exclude_keys, *shared]
        naming.append("hydra.job.config.override_dirname.exclude_keys=[" + ",".join(f"'{k}'" for k in excluded) + "]")
    if str(cfg.hydra.sweeper.get("_target_", "")).endswith("ResumableOptunaSweeper") and "hydra.sweeper.study_name" not in keys:
        command = sorted(o.input_line for o in parsed if not o.key_or_group.startswith("hydra") and o.key_or_group not in UNNAMED_KEYS)
        naming.append(f"hydra.sweeper.study_name='search{overrides_suffix(','.join(command))}'")
    return naming


def config_groups() -> set[str]:
    """The config groups (folders under configs/, e.g. model, hydra/launcher)."""
    from importlib.resources import files

    root = files("digitrec.configs")
    groups, stack = set(), [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir() and entry.name != "__pycache__":
                groups.add(prefix + entry.name)
                stack.append((entry, f"{prefix}{entry.name}/"))
    return groups


def added_keys(parsed: list) -> list[str]:
    return [o.key_or_group for o in parsed if o.is_add() and not o.is_force_add()]


def precheck(config_name: str, args: list[str]) -> list[str]:
    """One line for a mistake in the command, before Hydra starts (a single run: every value too).

    Imports neither Lightning nor torch unless a Trainer option needs Lightning's own judgement,
    so that a typo is reported in about a second. Returns overrides to add for a sweep (see check_sweep).
    """
    from hydra.types import RunMode
    from omegaconf import open_dict

    from digitrec.config import check_added_keys, precheck_config

    overrides = [a for a in args if not a.startswith("-")]
    parsed = parse_overrides(overrides)
    if set(args) & MULTIRUN_FLAGS or any(o.is_sweep_override() for o in parsed):
        naming = check_sweep(config_name, overrides)
        check_added_keys(compose(config_name, [o.input_line for o in parsed if not o.is_sweep_override()]), added_keys(parsed), config_groups())
        return naming
    cfg = compose(config_name, overrides, with_hydra=True)
    if cfg.hydra.mode == RunMode.MULTIRUN:  # hparams_search=optuna sweeps without -m
        check_added_keys(cfg, added_keys(parsed), config_groups())
        return check_sweep(config_name, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    precheck_config(cfg, added_keys(parsed), config_groups())
    check_data_present(cfg)
    if config_name == "eval":  # a checkpoint that cannot be used is one line before the run starts
        from digitrec.checkpoint import load_checkpoint
        from digitrec.config import trusted_classes
        from digitrec.nets import check_net_allowed, upgrade_hyper_parameters

        hyper_parameters = upgrade_hyper_parameters(load_checkpoint(cfg.ckpt_path)["hyper_parameters"])
        try:
            check_net_allowed(hyper_parameters["net"], trusted_classes(cfg))
        except DigitrecError as err:
            raise DigitrecError(f"checkpoint {cfg.ckpt_path}: {err}") from None
    if config_name == "train" and cfg.get("ckpt_path"):
        from digitrec.checkpoint import load_checkpoint, resume_checkpoint

        # A URL, a missing file or one that is not a digitrec checkpoint: one line, no run directory.
        load_checkpoint(resume_checkpoint(cfg.ckpt_path))
        if not any(o.startswith("hydra.run.dir=") for o in overrides):
            return resume_in_place(cfg.ckpt_path)
    return []


def resume_in_place(ckpt_path: str) -> list[str]:
    """Overrides that make a resume continue in the run directory its checkpoint belongs to.

    There its best-epoch file and checkpoint state stay valid (Lightning keeps the best score
    only when the checkpoint folder is the same), and the run's metrics.json and curves stay in
    one place. The resumed command's config goes to .hydra/resumed_<time>/, next to the original.
    """
    from digitrec.checkpoint import run_dir_of

    run_dir = run_dir_of(ckpt_path)
    if run_dir is None:
        return []
    quoted = "'" + str(run_dir).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return [f"hydra.run.dir={quoted}", "hydra.output_subdir=.hydra/resumed_${now:%Y-%m-%d_%H-%M-%S}"]


def check_data_present(cfg) -> None:
    """Missing MNIST files are one line now, not after the run directory and Lightning are set up."""
    from digitrec.mnist import SHA256, find_file, mnist_folder

    data = cfg.get("data")
    if data is None:
        return
    folder, will_download = mnist_folder(data.get("data_dir"), data.get("download", True), data.get("download_dir", "data"))
    if will_download:
        return
    from digitrec.mnist import HOW_TO_PROVIDE

    if not folder.is_dir():
        raise DigitrecError(f"MNIST folder {folder} does not exist: {HOW_TO_PROVIDE}")
    for name in SHA256:
        find_file(folder, name)


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
    """metrics.json of a run that did not finish, as sweep jobs write it (so nothing mistakes it for a result)."""
    from digitrec.runs import run_overrides, write_metrics

    with contextlib.suppress(OSError):
        write_metrics(run_dir, {"status": status, "reason": reason, **extra, "run_dir": str(run_dir), "overrides": run_overrides()})


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
    from digitrec.runs import run_overrides

    kept = [o for o in run_overrides() if not o.startswith("ckpt_path=")]
    return " ".join(["resume with: digitrec train", *kept, f"ckpt_path={last}"]), str(last)


def run_hydra(config_name: str, task: Callable, args: list[str]) -> None:
    """Run `task` under Hydra (run directories, multirun, sweepers), pre-checking the command."""
    if set(args) & COMPLETION_FLAGS:
        raise DigitrecError(
            "shell completion is not available for digitrec (Hydra completes only programs of its own); digitrec train --help lists the config groups"
        )
    command_line = list(sys.argv)
    args = quote_paths(args)
    if not set(args) & HYDRA_INFO_FLAGS:
        args = [*args, *precheck(config_name, args)]

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.plugins import Plugins

    from digitrec.runs import in_multirun
    from digitrec.sweep import run_sweep_job
    from hydra_plugins.digitrec_optuna_sweeper import ResumableOptunaSweeper

    # Hydra finds plugins by listing the hydra_plugins folders, which an editable install hides
    # behind an import hook: register digitrec's own sweeper by hand.
    Plugins.instance().register(ResumableOptunaSweeper)

    def task_with_clean_errors(cfg):
        # Lightning's ddp starts the other devices by re-running this command: give it back as typed.
        sys.argv = command_line
        if in_multirun():
            return run_sweep_job(task, cfg)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        # Replaced by the outcome; left as it is by a kill, so the run shows it never finished.
        record_failure(run_dir, "running", "started, not finished (still running, or killed)", pid=os.getpid())
        # Leaving through SystemExit: Hydra would wrap any Exception in its own multi-line report.
        with run_log(run_dir / f"{HydraConfig.get().job.name}.log"):
            try:
                return task(cfg)
            except DigitrecError as err:
                record_failure(run_dir, "failed", str(err))
                print(f"digitrec: error: {err}", file=sys.stderr, flush=True)
                raise SystemExit(err.exit_code) from None
            except (KeyboardInterrupt, SystemExit) as err:
                # Lightning answers Ctrl-C by tearing down and calling sys.exit(1).
                if not isinstance(err, KeyboardInterrupt) and not isinstance(err.__context__, KeyboardInterrupt):
                    raise
                hint, last = resume_hint(cfg, run_dir, config_name)
                record_failure(run_dir, "interrupted", "interrupted (Ctrl-C)", resume_from=last)
                print(f"digitrec: interrupted; {hint}", file=sys.stderr, flush=True)
                raise SystemExit(EXIT_INTERRUPTED) from None
            except Exception as err:  # a bug: its traceback stays visible, and the run says it failed
                from digitrec.sweep import reason_of

                with contextlib.suppress(OSError):
                    (run_dir / "traceback.txt").write_text(traceback.format_exc())
                record_failure(run_dir, "failed", f"{reason_of(err)} (traceback.txt in the run's directory)")
                raise

    sys.argv = [f"digitrec {config_name}", *args]
    try:
        hydra.main(version_base="1.3", config_path="pkg://digitrec.configs", config_name=config_name)(task_with_clean_errors)()
    except ValueError as err:
        if "can be specified" not in str(err):  # Hydra's own check of its flags, e.g. -m with --cfg
            raise
        raise DigitrecError(str(err)) from None


def train_command(args: list[str]) -> int:
    def train(cfg):  # imported only after the pre-check: Lightning and torch take seconds to import
        from digitrec.train import train

        return train(cfg)

    run_hydra("train", train, args)
    return 0


def eval_command(args: list[str]) -> int:
    def evaluate(cfg):
        from digitrec.evaluate import evaluate

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
    from digitrec.mnist import prepare_mnist

    data = compose("train", quote_paths(args)).data
    folder = prepare_mnist(data.data_dir, data.download, data.download_dir)
    print(f"MNIST ready and verified in {folder}")
    return 0


def sweep_report_command(args: list[str]) -> int:
    from digitrec.sweep import report_main

    return report_main(args)


def predict_command(args: list[str]) -> int:
    from digitrec.predict import main as predict_main

    return predict_main(args)


def export_command(args: list[str]) -> int:
    from digitrec.export import main as export_main

    return export_main(args)


def serve_command(args: list[str]) -> int:
    from digitrec.serve import main as serve_main

    return serve_main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "eval": eval_command,
    "predict": predict_command,
    "export": export_command,
    "serve": serve_command,
    "data": data_command,
    "sweep-report": sweep_report_command,
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
    if command not in COMMANDS:
        print(f"digitrec: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (digitrec --help)", file=sys.stderr)
        sys.exit(2)
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
