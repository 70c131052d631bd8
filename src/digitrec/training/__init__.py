"""Training and evaluation with Lightning: the LightningModule, the Trainer and its callbacks, the run's console."""
