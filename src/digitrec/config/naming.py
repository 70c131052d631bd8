"""Run and sweep directory names (Hydra resolvers used by configs/hydra/default.yaml): what
differs between runs first, then the time and a short random id. Importing this module registers
the resolvers; digitrec.command does before Hydra composes anything."""

from __future__ import annotations

import hashlib
import re
import secrets

from omegaconf import OmegaConf

# A short random id per run, cached so every read of the run directory gives the same value;
# with the timestamp it keeps two runs that start in the same second apart.
# Hydra copies the resolver cache into each job of a sweep, so a sweep shares one id.
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(3), use_cache=True)


def overrides_suffix(override_dirname: str, limit: int = 120) -> str:
    """`_<overrides>` for a directory name (empty without overrides), so run names say what differs.

    Characters that nest directories (slashes) or need quoting become `-`; a very long list is
    cut and ends in a short hash, which keeps two different cut lists apart.
    """
    if not override_dirname:
        return ""
    name = re.sub(r"[^\w.,=+\-\[\]()]+", "-", override_dirname)
    if len(name) > limit:
        name = f"{name[: limit - 9]}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"_{name}"


if not OmegaConf.has_resolver("overrides_suffix"):
    OmegaConf.register_new_resolver("overrides_suffix", overrides_suffix)
# `<overrides>_` for the front of a run's directory name: TensorBoard's run list cuts long names at
# the end, so what differs between runs comes first and the timestamp last.
if not OmegaConf.has_resolver("overrides_prefix"):
    OmegaConf.register_new_resolver("overrides_prefix", lambda dirname: f"{overrides_suffix(dirname)[1:]}_" if dirname else "")
