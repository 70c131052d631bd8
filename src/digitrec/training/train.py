"""The training path: config -> data -> model -> trainer -> best checkpoint -> test -> run record."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from digitrec.config.job import run_overrides
from digitrec.nets.checkpoint import export_model, load_checkpoint, resume_checkpoint
from digitrec.tracking import record
from digitrec.tracking.viewers import viewer_commands
from digitrec.training.checkpoints import best_checkpoint
from digitrec.training.checks import initial_network
from digitrec.training.console import print_summary, tested_images
from digitrec.training.trainer import build_trainer, setup_run

log = logging.getLogger(__name__)


def start_from(cfg: DictConfig) -> dict[str, Any] | None:
    """init_from=CKPT: the checkpoint, its network made the run's (in cfg, so the run's hyper-parameters,
    HParams and model.ckpt name the network that was trained). Only weights come from the file: the
    optimiser, schedule and epochs are the config's. A resume's ckpt_path then overrides the weights."""
    if not cfg.get("init_from"):
        return None
    checkpoint, net = initial_network(str(cfg.init_from), OmegaConf.to_container(cfg.model.net, resolve=True))
    with open_dict(cfg):
        cfg.model.net = net
    log.info("starting from the weights of %s", cfg.init_from)
    return checkpoint


def train(cfg: DictConfig) -> dict[str, Any]:
    setup_run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    initial = start_from(cfg)
    model: L.LightningModule = instantiate(cfg.model)
    if initial is not None:
        model.load_state_dict(initial["state_dict"])
    resume_from = str(resume_checkpoint(cfg.ckpt_path)) if cfg.ckpt_path else None
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer = build_trainer(cfg, loggers)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    train_seconds = time.perf_counter() - started
    val_acc_best = trainer.callback_metrics.get("val/acc_best")
    if val_acc_best is None and trainer.checkpoint_callback is not None:
        # A resume of a finished run trains no epoch: the best so far is the checkpoint's (by val/acc).
        val_acc_best = trainer.checkpoint_callback.best_model_score

    # Test the best epoch (by val/acc), not the last; fast_dev_run and callbacks=none keep no checkpoint.
    best = best_checkpoint(trainer)
    test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
    if not trainer.is_global_zero:  # the other processes of a multi-device run leave the files to rank 0
        return {}
    if best:
        # The tested weights, loaded here: with spawned processes `model` still holds the last epoch's.
        model.load_state_dict(load_checkpoint(best)["state_dict"])
    model_path = export_model(model, run_dir / "model.ckpt")

    metrics = {
        record.STATUS: record.OK,
        **{k: float(v) for k, v in test_results[0].items()},
        "test/images": tested_images(trainer),
        record.VAL_ACC_BEST: float(val_acc_best) if val_acc_best is not None else None,
        record.EPOCHS: int(trainer.callback_metrics.get("epochs", trainer.current_epoch)),
        record.TRAIN_SECONDS: round(train_seconds, 2),
        record.BEST_CKPT_PATH: str(best) if best else None,
        record.MODEL_PATH: str(model_path),
        record.RUN_DIR: str(run_dir),
        record.OVERRIDES: run_overrides(),
    }
    record.write_record(run_dir, metrics)
    print_summary("training done", metrics, viewer_commands(cfg.get("logger"), run_dir))
    return metrics
