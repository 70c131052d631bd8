"""The `digitrec` command: its verbs, Hydra's run around them, and the one check of a run's config."""
