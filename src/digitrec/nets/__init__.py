"""The networks (plain torch modules, no Lightning) and the checkpoint file format.

Checkpoints name their network `digitrec.nets.MLP` or `digitrec.nets.CNN`: those names stay here."""

from digitrec.nets.networks import CNN, MLP

__all__ = ["CNN", "MLP"]
