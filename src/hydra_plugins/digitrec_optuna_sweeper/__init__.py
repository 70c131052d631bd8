"""Hydra finds sweepers only in the `hydra_plugins` namespace: this one is digitrec's resumable
Optuna sweeper (the work is done in digitrec.optuna_search)."""

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(self, **settings) -> None:
        # Not OptunaSweeper.__init__: it would build the stock sweeper. Imported here because Hydra
        # imports every plugin module at start-up, and optuna takes a while to import.
        from digitrec.optuna_search import ResumableStudySweeper

        self.sweeper = ResumableStudySweeper(**settings)
