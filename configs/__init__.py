# Makes configs/ importable as digitrec.configs so Hydra can find it with pkg://digitrec.configs.
