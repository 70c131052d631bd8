"""A callback for the resume tests: the process dies after a given training step, as a kill would.

Named on the command line (`+callbacks.crash._target_=interrupt.CrashAfterStep`, with tests/ on
PYTHONPATH). Deterministic where a SIGKILL from outside is not: the run dies at exactly that step
(before that step's own checkpoint callbacks, which Lightning runs last).
"""

import os

import lightning as L


class CrashAfterStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step >= self.step:
            os._exit(3)  # no cleanup, no finally: like a kill
