"""The one check of a run's composed config, before Hydra makes its directory.

Hydra composes the config once and hands it to its callbacks before it makes a run's or a
sweep's directory (`on_run_start`, `on_multirun_start`): that is where a command's mistakes
become one line, with nothing created. A sweep's jobs are checked one by one as they start
(digitrec.sweeps.sweep.run_sweep_job), so one job's bad value fails that job, not the sweep.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from digitrec.config.checks import check_added_keys, check_config, check_writable
from digitrec.config.naming import study_name
from digitrec.errors import EXIT_FAILED_RUN, BadOverride, DigitrecError

# Keys that change neither a job's result nor what a search finds: left out of a study's name.
UNNAMED_KEYS = ("hparams_search", "logger", "progress", "threads")


def one_line(err: BaseException) -> str:
    """Hydra's and OmegaConf's errors in one line: the first line says what is wrong (the rest is
    Hydra's search path and links); a missing config adds the options there are."""
    from hydra.errors import MissingConfigException

    text = " ".join(str(err).strip().splitlines()[:1]) or type(err).__name__
    if isinstance(err, MissingConfigException) and err.options:
        text += f" (available options: {', '.join(err.options)})"
    return text


def check_swept_values(config: DictConfig, config_name: str) -> None:
    """Every value of every swept key composed once (not every combination), before Hydra makes the
    sweep's folder: a typo in a key or a config name stops the sweep with one line. Bad values are
    left to their jobs, which record them as failed in the sweep's summary."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    fixed, swept = list(config.hydra.overrides.hydra), []
    for override in parsed_overrides(config):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except HydraException:  # glob() and an Optuna search's intervals: nothing to enumerate here
            continue
        swept.append([f"{override.get_key_element()}={value}" for value in values])
    try:
        for overrides in each_value_once(fixed, swept) if swept else []:
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise BadOverride(one_line(err)) from None


def each_value_once(fixed: list[str], swept: list[list[str]]) -> list[list[str]]:
    """Override lists in which every value of every swept key appears once, the other swept keys at
    their first value: len(a) + len(b) - 1 compositions where the sweep has len(a) * len(b) jobs."""
    first = [values[0] for values in swept]
    variants = [[*first[:i], value, *first[i + 1 :]] for i, values in enumerate(swept) for value in values[1:]]
    return [fixed + overrides for overrides in [first, *variants]]


def job_config(config: DictConfig) -> DictConfig:
    """The config a job sees (Hydra's own node removed), resolvable as it will be in the job."""
    job = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(job):
        del job["hydra"]
    return job


def parsed_overrides(config: DictConfig) -> list:
    return OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))


def added_keys(parsed: list) -> list[str]:
    return [o.key_or_group for o in parsed if o.is_add() and not o.is_force_add()]


def check_job(cfg: DictConfig, config_name: str) -> None:
    """Everything a job's config must pass before it trains or tests: digitrec's rules and the
    records' arguments (digitrec.config.checks, no Lightning), then what Lightning judges itself."""
    check_config(cfg)
    check_data_present(cfg)
    from digitrec.training.checks import check_lightning_components  # Lightning takes seconds to import: only now

    check_lightning_components(cfg)
    if config_name == "eval":
        check_eval_checkpoint(cfg)


def check_data_present(cfg: DictConfig) -> None:
    """Missing MNIST files are one line now, not after the run directory and Lightning are set up."""
    from digitrec.data.mnist import HOW_TO_PROVIDE, SHA256, find_file, mnist_folder

    data = cfg.get("data")
    if data is None:
        return
    if data.get("root") is not None:
        # data=folder: prepared now (and cached for the run), so a bad folder or file is one line
        # before anything is made; in eval only the folder is read.
        from digitrec.data.folder import prepare_folder

        prepare_folder(data.root, bool(data.get("skip_bad_images", False)), say_skipped=False)
        if data.get("task") == "eval":
            return
    folder, will_download = mnist_folder(data.get("data_dir"), data.get("download", True), data.get("download_dir", "data"))
    if will_download:
        return
    if not folder.is_dir():
        raise DigitrecError(f"MNIST folder {folder} does not exist: {HOW_TO_PROVIDE}")
    for name in SHA256:
        find_file(folder, name)


def check_eval_checkpoint(cfg: DictConfig) -> None:
    from digitrec.config.checks import trusted_classes
    from digitrec.nets.checkpoint import load_checkpoint
    from digitrec.nets.networks import check_net_allowed

    hyper_parameters = load_checkpoint(cfg.ckpt_path)["hyper_parameters"]
    try:
        check_net_allowed(hyper_parameters["net"], trusted_classes(cfg))
    except DigitrecError as err:
        raise DigitrecError(f"checkpoint {cfg.ckpt_path}: {err}") from None


def resume_in_place(config: DictConfig, ckpt_path: str) -> None:
    """Continue a resumed run in the run directory its checkpoint belongs to.

    There its best-epoch file and checkpoint state stay valid (Lightning keeps the best score only
    when the checkpoint folder is the same), and the run's metrics.json and curves stay in one
    place. The resumed command's config goes to .hydra/resumed_<time>/, next to the original.
    """
    from digitrec.nets.checkpoint import run_dir_of

    run_dir = run_dir_of(ckpt_path)
    if run_dir is None or any(str(o).startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra):
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.run.dir = str(run_dir)
        config.hydra.output_subdir = ".hydra/resumed_${now:%Y-%m-%d_%H-%M-%S}"


def name_sweep(config: DictConfig) -> None:
    """Name a sweep's directories by what matters.

    Jobs: by what differs between them (the keys every job shares are left out of their names).
    Optuna: the study by the command's overrides, so that the same command continues the same
    study (n_trials and launcher settings aside) and a command with other settings starts its own.
    Hydra makes each job's config anew from the sweep's Hydra overrides: the names go there (and
    into the sweep's own config, which the sweeper is made from).
    """
    parsed = parsed_overrides(config)
    hydra_keys = {str(o).partition("=")[0].lstrip("+~") for o in config.hydra.overrides.hydra}
    naming: dict[str, Any] = {}
    if "hydra.job.config.override_dirname.exclude_keys" not in hydra_keys:
        shared = [o.key_or_group for o in parsed if not o.is_sweep_override()]
        naming["hydra.job.config.override_dirname.exclude_keys"] = [*config.hydra.job.config.override_dirname.exclude_keys, *shared]
    if is_optuna_search(config) and "hydra.sweeper.study_name" not in hydra_keys:
        naming["hydra.sweeper.study_name"] = study_name([o.input_line for o in parsed if o.key_or_group not in UNNAMED_KEYS])
    with read_write(config.hydra), open_dict(config.hydra):
        for key, value in naming.items():
            OmegaConf.update(config, key, value, merge=False)
            quoted = "[" + ",".join(map(quote, value)) + "]" if isinstance(value, list) else quote(value)
            config.hydra.overrides.hydra.append(f"{key}={quoted}")


def is_optuna_search(config: DictConfig) -> bool:
    return str(config.hydra.sweeper.get("_target_", "")).endswith("ResumableOptunaSweeper")


def hide_storage_password(config: DictConfig) -> None:
    """A password in hydra.sweeper.storage leaves the config before Hydra writes it anywhere (.hydra/,
    logs): the URL keeps ***, the search's processes read the password from the environment."""
    from digitrec.sweeps.study import take_password_out

    storage = str(config.hydra.sweeper.storage)
    hidden = take_password_out(storage)
    if hidden == storage:
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.sweeper.storage = hidden
        overrides = [o for o in config.hydra.overrides.hydra if not str(o).lstrip("+").startswith("hydra.sweeper.storage=")]
        config.hydra.overrides.hydra = [*overrides, f"hydra.sweeper.storage={quote(hidden)}"]


def quote(value: str) -> str:
    """A string as a quoted value in Hydra's override syntax."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def refusal_ends_the_command():
    """Hydra turns an exception in a callback into a warning and goes on; SystemExit it lets through."""
    try:
        yield
    except DigitrecError as err:
        print(f"digitrec: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(err.exit_code) from None
    except Exception:  # noqa: BLE001  (a bug in a check: shown whole, and nothing runs)
        traceback.print_exc()
        raise SystemExit(EXIT_FAILED_RUN) from None


class RunChecks(Callback):
    """Hydra callback: the command's config is judged once, after Hydra composed it and before it
    makes a run's or a sweep's directory. A mistake ends the command with one line, exit 2."""

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        with refusal_ends_the_command():
            self.check_run(config, config_name)

    def on_multirun_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        with refusal_ends_the_command():
            self.check_sweep(config, config_name or "")

    def check_run(self, config: DictConfig, config_name: str | None) -> None:
        # The run's own values (paths.output_dir) resolve against Hydra's node, as in the job.
        HydraConfig.instance().set_config(config)
        cfg = job_config(config)
        check_added_keys(cfg, added_keys(parsed_overrides(config)), set(config.hydra.runtime.choices))
        check_writable(OmegaConf.select(config, "hydra.run.dir"), "paths.output_root")
        check_job(cfg, config_name or "")
        if config_name == "train" and cfg.get("ckpt_path"):
            resume_in_place(config, str(cfg.ckpt_path))

    def check_sweep(self, config: DictConfig, config_name: str) -> None:
        check_swept_values(config, config_name)
        HydraConfig.instance().set_config(config)
        parsed = parsed_overrides(config)
        # The sweep's shared values only: swept ones are composed by the sweeper and checked in each job.
        check_added_keys(job_config(config), added_keys([o for o in parsed if not o.is_sweep_override()]), set(config.hydra.runtime.choices))
        name_sweep(config)
        if is_optuna_search(config):
            hide_storage_password(config)
            from digitrec.sweeps.optuna_search import check_search  # Optuna and Lightning: imported only for a search

            check_search(config)
        sweep_dir = None
        with contextlib.suppress(Exception):  # a sweep dir that names per-job values resolves only in the job
            sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        if sweep_dir:
            check_writable(sweep_dir, "paths.output_root")
