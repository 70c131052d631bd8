"""The `digitrec` command: one verb per job, user mistakes as one line, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from digitrec.errors import DigitrecError

USAGE = """usage: digitrec COMMAND [ARGS...]

commands:
  train [KEY=VALUE ...]     train a model (Hydra overrides; -m KEY=A,B for a sweep)
  eval ckpt_path=PATH       test a checkpoint on the official MNIST test set
  sweep-report DIR          the summary of a sweep (one row per job, best first), as CSV and markdown
  predict IMAGE [IMAGE ...] recognise the digit in image files (--help for options)
  export --ckpt PATH ...    write the model as ONNX or a plain state_dict (--help for options)
  data [KEY=VALUE ...]      download (or find) and verify MNIST

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
HYDRA_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--shell-completion", "-sc"}
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


def precheck(config_name: str, args: list[str]) -> list[str]:
    """One line for a mistake in the command, before Hydra starts (a single run: every value too).

    Returns overrides to add for a sweep (see check_sweep).
    """
    from hydra.types import RunMode
    from omegaconf import open_dict

    from digitrec.config import check_config

    overrides = [a for a in args if not a.startswith("-")]
    if set(args) & MULTIRUN_FLAGS or any(o.is_sweep_override() for o in parse_overrides(overrides)):
        return check_sweep(config_name, overrides)
    cfg = compose(config_name, overrides, with_hydra=True)
    if cfg.hydra.mode == RunMode.MULTIRUN:  # hparams_search=optuna sweeps without -m
        return check_sweep(config_name, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    check_config(cfg)
    return []


def run_hydra(config_name: str, task: Callable, args: list[str]) -> None:
    """Run `task` under Hydra (run directories, multirun, sweepers), pre-checking the command."""
    import hydra
    from hydra.core.plugins import Plugins

    from digitrec.sweep import in_multirun, run_sweep_job
    from hydra_plugins.digitrec_optuna_sweeper import ResumableOptunaSweeper

    # Hydra finds plugins by listing the hydra_plugins folders, which an editable install hides
    # behind an import hook: register digitrec's own sweeper by hand.
    Plugins.instance().register(ResumableOptunaSweeper)

    command_line = list(sys.argv)
    args = quote_paths(args)
    if not set(args) & HYDRA_INFO_FLAGS:
        args = [*args, *precheck(config_name, args)]

    def task_with_clean_errors(cfg):
        # Lightning's ddp starts the other devices by re-running this command: give it back as typed.
        sys.argv = command_line
        if in_multirun():
            return run_sweep_job(task, cfg)
        try:
            return task(cfg)
        except DigitrecError as err:
            raise SystemExit(f"digitrec: error: {err}") from None

    sys.argv = [f"digitrec {config_name}", *args]
    try:
        hydra.main(version_base="1.3", config_path="pkg://digitrec.configs", config_name=config_name)(task_with_clean_errors)()
    except ValueError as err:
        if "can be specified" not in str(err):  # Hydra's own check of its flags, e.g. -m with --cfg
            raise
        raise DigitrecError(str(err)) from None


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

    cfg = compose("train", quote_paths(args))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    print(f"MNIST ready and verified in {datamodule.folder()}")
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


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_command,
    "eval": eval_command,
    "predict": predict_command,
    "export": export_command,
    "data": data_command,
    "sweep-report": sweep_report_command,
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
    except BrokenPipeError:
        # The reader went away (`digitrec predict ... | head`): stop quietly, as Unix tools do.
        sys.stdout = None
        code = 141
    sys.exit(code)
