"""How to look at what a run or a sweep logged: the command for each logger it used, with absolute
paths, so that it works from any folder (digitrec's Makefile is not needed)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SQLITE = "sqlite:///"


def viewer_commands(loggers: Mapping[str, Any] | None, folder: Path, sweep: bool = False) -> list[tuple[str, str]]:
    """(label, command) for each logger in a run's `logger` config; `folder` is the run's (or the sweep's) directory."""
    rows = []
    folder = Path(folder).absolute()
    for entry in (loggers or {}).values():
        target = str((entry or {}).get("_target_", ""))
        if target.endswith(".TensorBoardLogger"):
            rows.append(("curves", f"tensorboard --logdir {shlex.quote(str(folder))}"))
        elif target.endswith((".MLflowLogger", ".MLFlowLogger")):
            uri = str(entry.get("tracking_uri") or "")
            if uri.startswith(SQLITE):
                uri = SQLITE + str(Path(uri[len(SQLITE) :]).absolute())
            rows.append(("runs", f"mlflow ui --backend-store-uri {shlex.quote(uri)}" if uri.startswith(SQLITE) else f"MLflow at {uri}"))
        elif target.endswith(".WandbLogger"):
            # The folder quoted, the glob not: the shell expands it to each offline run.
            rows.append(("W&B", f"wandb sync {shlex.quote(str(folder))}/{'*/' if sweep else ''}wandb/offline-run-*"))
        elif target.endswith(".CSVLogger"):
            rows.append(("metrics", str(folder / ("*" if sweep else "") / str(entry.get("name") or "") / "metrics.csv").replace("//", "/")))
    return rows
