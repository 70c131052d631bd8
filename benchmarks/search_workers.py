"""`make bench-search`: an Optuna search of short trials on one worker and on two, on one PostgreSQL.

    python -m benchmarks.search_workers [--trials 20] [--out benchmarks/results]

1. Whole searches, one after the other, each in a fresh folder and database: `digitrec train
   hparams_search=optuna` of --trials short trials (1 epoch of 100 batches, pruning off, 1 thread)
   with the default SQLite file and 1 worker, then on a real PostgreSQL server (benchmarks/postgres.py)
   with 1 worker and with 2 workers (the same command twice, at once). Wall time of each; the ratio
   2 workers / 1 worker on PostgreSQL.
2. The storage's own cost per trial: the sweeper's bookkeeping for one trial (look for dead workers,
   ask, the worker's attribute, the surplus check, a heartbeat, two epochs' intermediate values and
   the pruner's read, the outcome's attributes, tell) without training, --trials times, on SQLite,
   PostgreSQL and a journal file: milliseconds per trial.
Results go to OUT/search_workers.json and OUT/search_workers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.postgres import new_database, running_server

REPO = Path(__file__).resolve().parents[1]
SHORT_TRIAL = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=100",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "callbacks.optuna_pruning=null",
    "threads=1",
    "progress=lines",
]


def search(folder: Path, trials: int, workers: int, storage: list[str]) -> float:
    """Wall seconds of one search: `workers` processes of the same command, started together."""
    folder.mkdir(parents=True)
    command = [sys.executable, "-m", "digitrec", "train", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}", *SHORT_TRIAL, *storage]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    logs = [open(folder / f"worker{i}.log", "w") for i in range(workers)]
    procs = [subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    codes = [p.wait() for p in procs]
    seconds = time.perf_counter() - start
    for log in logs:
        log.close()
    if any(codes):
        raise SystemExit(f"a worker failed ({codes}): see {folder}/worker*.log")
    return seconds


def bookkeeping_ms(storage_url: str, trials: int) -> float:
    """Milliseconds of the sweeper's storage work per trial, training left out."""
    import optuna
    from omegaconf import OmegaConf

    from digitrec.sweeps import study
    from digitrec.sweeps.optuna_search import OptunaSearch, search_space

    space = search_space(OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "hparams_search" / "optuna.yaml").hydra.sweeper.params), [])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study.open_storage(storage_url, heartbeat_interval=10, grace_period=60)
    sampler = optuna.samplers.TPESampler(seed=1, n_startup_trials=5)
    searcher = OptunaSearch("bench", storage_url, sampler, n_trials=trials)
    searcher_study = optuna.create_study(study_name="bench", storage=storage, direction="maximize", sampler=sampler)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5)
    start = time.perf_counter()
    for i in range(trials):
        study.fail_dead_trials(searcher_study, storage, 60)
        searcher_study.get_trials(deepcopy=False)
        (trial,) = searcher.within_the_study(searcher_study, [searcher.ask(searcher_study, space)])
        tid = study.trial_id(storage, "bench", trial.number)
        study.Heartbeat(storage, "bench", [trial.number], 10).beat()
        for epoch in range(2):
            storage.set_trial_intermediate_value(tid, epoch, 0.9 + i / 1000 + epoch / 100)
            pruner.prune(searcher_study, storage.get_trial(tid))
        trial.set_user_attr(study.RECORD_ATTR, {"status": "ok", "val/acc_best": 0.9 + i / 1000, "epochs": 2})
        trial.set_user_attr(study.FOLDER_ATTR, f"/somewhere/{trial.number}_x")
        searcher_study.tell(trial, 0.9 + i / 1000)
    return (time.perf_counter() - start) / trials * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per search (default 20)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for search_workers.json and .md")
    args = parser.parse_args()
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "trials": args.trials,
        "trial": SHORT_TRIAL,
    }
    with tempfile.TemporaryDirectory(prefix="digitrec-bench-search-") as tmp, running_server() as server:
        tmp = Path(tmp)
        runs = {
            "sqlite, 1 worker": (1, []),
            "postgresql, 1 worker": (1, [f"hydra.sweeper.storage={new_database(server, 'one')}"]),
            "postgresql, 2 workers": (2, [f"hydra.sweeper.storage={new_database(server, 'two')}"]),
        }
        walls = {}
        for i, (name, (workers, storage)) in enumerate(runs.items()):
            walls[name] = round(search(tmp / f"search{i}", args.trials, workers, storage), 1)
            print(f"{name}: {walls[name]} s", flush=True)
        results["wall_seconds"] = walls
        results["ratio_2_workers_to_1"] = round(walls["postgresql, 2 workers"] / walls["postgresql, 1 worker"], 2)
        stores = {
            "sqlite": f"sqlite:///{tmp / 'bookkeeping.db'}",
            "postgresql": new_database(server, "bookkeeping"),
            "journal": f"journal:{tmp / 'bookkeeping.log'}",
        }
        results["bookkeeping_ms_per_trial"] = {name: round(bookkeeping_ms(url, args.trials), 1) for name, url in stores.items()}
        print(f"bookkeeping per trial (ms): {results['bookkeeping_ms_per_trial']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_workers.json").write_text(json.dumps(results, indent=2) + "\n")
    ms = results["bookkeeping_ms_per_trial"]
    lines = [
        f"# Optuna search on 1 and 2 workers ({results['date']}, {results['machine']})",
        "",
        f"{args.trials} trials of `{' '.join(SHORT_TRIAL)}`.",
        "",
        "| search | wall time |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.1f} s |" for name, seconds in walls.items()),
        "",
        f"2 workers / 1 worker on PostgreSQL: **{results['ratio_2_workers_to_1']}**.",
        "",
        "Storage bookkeeping per trial (ms): " + ", ".join(f"{name} {value}" for name, value in ms.items()),
        "",
    ]
    (args.out / "search_workers.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
