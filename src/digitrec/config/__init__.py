"""The config: digitrec's checks of a composed config, run naming, and what Hydra knows of the running job. Never imports Lightning."""
