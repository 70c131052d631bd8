"""logger=wandb: Weights & Biases through Lightning's WandbLogger, offline by default.

No account or network is needed: each run is written to `<run dir>/wandb/offline-run-<time>-<id>/`,
and `wandb sync <that folder>` uploads it later (after `wandb login`). The run is named and
configured as for the other loggers: its directory's name (what differs, then the time), the run's
whole config flattened into keys as written on the command line (model.optimizer.lr, ...), a
sweep's jobs grouped by the sweep's folder. Imported only with logger=wandb, W&B only when it starts.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from omegaconf import DictConfig, OmegaConf

from digitrec.errors import DigitrecError
from digitrec.tracking.mlflow_logger import flatten


class WandbLogger(LightningWandbLogger):
    def __init__(
        self,
        save_dir: str,
        config: DictConfig | Mapping[str, Any],
        project: str = "digitrec",
        offline: bool = True,
        name: str | None = None,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("wandb") is None:
            raise DigitrecError("logger=wandb needs W&B: pip install -e '.[wandb]' (make install includes it)")
        if offline:
            # Offline means no network at all: no login prompt, no version check.
            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
        hydra = HydraConfig.get() if HydraConfig.initialized() else None
        if hydra is not None:
            name = name or Path(hydra.runtime.output_dir).name
            if group is None and hydra.mode == RunMode.MULTIRUN:
                group = Path(hydra.sweep.dir).name  # the sweep's folder, as its MLflow experiment
        container = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
        self.params = {k: str(v) if isinstance(v, (list, tuple)) else v for k, v in flatten(container).items()}
        if hydra is not None:
            self.params["experiment"] = hydra.runtime.choices.get("experiment") or "none"
            self.params["overrides"] = " ".join(hydra.overrides.task)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        import wandb

        # The jobs of a sweep run one after another in one process, and Lightning's WandbLogger would go
        # on logging into a W&B run still open: the previous job's, ended here (it ends at exit otherwise).
        if wandb.run is not None:
            wandb.finish()
        super().__init__(name=name, save_dir=save_dir, offline=offline, project=project, group=group, **kwargs)
        # Lightning passes `anonymous` (None by default) to wandb.init, which warns that the setting has
        # no effect and will be removed: left out while the run is not started yet.
        if getattr(self, "_wandb_init", {}).get("anonymous", "") is None:
            del self._wandb_init["anonymous"]
        self.params_logged = False

    def log_hyperparams(self, params: Any) -> None:
        # The run's config (as for MLflow) instead of the LightningModule's arguments.
        if not self.params_logged:
            super().log_hyperparams(self.params)
            self.params_logged = True

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
