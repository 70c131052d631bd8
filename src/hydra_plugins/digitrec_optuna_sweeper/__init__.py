"""Hydra finds sweepers only in the `hydra_plugins` namespace: this is digitrec's Optuna sweeper
(resumable studies in SQLite, pruning; the work is done in digitrec.sweeps.optuna_search)."""

import sys

from hydra.plugins.sweeper import Sweeper

from digitrec.errors import EXIT_USER_ERROR, DigitrecError


class ResumableOptunaSweeper(Sweeper):
    def __init__(self, **settings) -> None:
        self.settings = settings

    def setup(self, *, hydra_context, task_function, config) -> None:
        # Imported here, not at the top: Hydra imports every plugin module at start-up, and optuna
        # and Lightning take a while to import.
        from digitrec.sweeps.optuna_search import OptunaSearch

        self.search = OptunaSearch(**self.settings)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        try:
            self.search.sweep(arguments)
        except DigitrecError as err:
            # A search space Optuna cannot sample, found before the first trial: one line, as for any
            # user mistake (Hydra would print a traceback for an exception).
            print(f"digitrec: error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
