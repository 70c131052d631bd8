"""digitrec eval: the official test set on a checkpoint, the model rebuilt from the file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from digitrec.config.checks import trusted_classes
from digitrec.config.job import run_overrides
from digitrec.tracking import record
from digitrec.tracking.viewers import viewer_commands
from digitrec.training.classifier import load_model
from digitrec.training.console import print_summary, tested_images
from digitrec.training.trainer import build_trainer, setup_run


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    setup_run(cfg)
    model = load_model(cfg.ckpt_path, trusted_classes(cfg))
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg)
    results = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    metrics = {
        **{k: float(v) for k, v in results.items()},
        "test/images": tested_images(trainer),
        record.CKPT_PATH: str(cfg.ckpt_path),
        record.HYPER_PARAMETERS: dict(model.hparams),
        record.OVERRIDES: run_overrides(),
    }
    record.write_record(Path(cfg.paths.output_dir), metrics)
    print_summary("evaluation done", metrics, viewer_commands(cfg.get("logger"), Path(cfg.paths.output_dir)))
    return metrics
