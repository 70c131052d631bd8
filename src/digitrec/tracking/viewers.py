"""How to look at what a run or a sweep logged: the command for each logger it used, with absolute
paths, so that it works from any folder (digitrec's Makefile is not needed)."""

from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Mapping
from contextlib import closing
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
            rows.append(("runs", f"mlflow ui --backend-store-uri {shlex.quote(uri)} --workers 1" if uri.startswith(SQLITE) else f"MLflow at {uri}"))
            name = folder.name if sweep else str(entry.get("experiment_name") or "")
            url = mlflow_experiment_url(uri, name)
            if url:
                rows.append(("open", url))
        elif target.endswith(".WandbLogger"):
            # The folder quoted, the glob not: the shell expands it to each offline run.
            rows.append(("W&B", f"wandb sync {shlex.quote(str(folder))}/{'*/' if sweep else ''}wandb/offline-run-*"))
        elif target.endswith(".CSVLogger"):
            rows.append(("metrics", str(folder / ("*" if sweep else "") / str(entry.get("name") or "") / "metrics.csv")))
    return rows


def mlflow_experiment_url(uri: str, experiment_name: str, port: int = 5000) -> str | None:
    """The experiment's page in `mlflow ui` (its default port), on its runs table: MLflow 3.17's UI opens
    an experiment on the GenAI overview unless the URL (or its remembered "Model training" switch) says
    machine_learning. The id is read from the SQLite store with the standard library (no MLflow import)."""
    if not uri.startswith(SQLITE) or not Path(uri[len(SQLITE) :]).is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{uri[len(SQLITE) :]}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (experiment_name,)).fetchone()
    except sqlite3.Error:
        return None
    return f"http://127.0.0.1:{port}/#/experiments/{row[0]}/runs?workflowType=machine_learning" if row else None
