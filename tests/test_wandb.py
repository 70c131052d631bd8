"""logger=wandb: a real tiny run with W&B offline (no account, no network), read back from its offline run folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY_TRAIN, run_digitrec
from digitrec.tracking.viewers import viewer_commands


def recorded(wandb_file: Path, key: str) -> str | None:
    """The JSON value W&B recorded for a config key in its offline run file (`run-<id>.wandb`).

    W&B 0.19+ reads that file only in its Go core; the record is a protobuf ConfigItem: the key,
    then field 16 (value_json, tag bytes 0x82 0x01), its length and the JSON text.
    """
    match = re.search(re.escape(key.encode()) + rb"\x82\x01(.)", wandb_file.read_bytes(), re.DOTALL)
    if match is None:
        return None
    start = match.end()
    return wandb_file.read_bytes()[start : start + match.group(1)[0]].decode()


@pytest.mark.slow
def test_an_offline_run_records_its_name_config_and_metrics(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_API_KEY": ""}  # nothing from the environment: offline by default
    result = run_digitrec("train", "logger=wandb", "model.optimizer.lr=3e-4", *TINY_TRAIN, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "anonymous" not in result.stderr, "no W&B deprecation warning"
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert run_dir.name.startswith("lr=3e-4,epochs=1,"), "named as for the other loggers: what differs first"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    (wandb_file,) = offline.glob("run-*.wandb")
    assert (offline / "files").is_dir() and (offline / "logs").is_dir()
    data = wandb_file.read_bytes()
    assert run_dir.name.encode() in data, "the run's name: its directory's"
    assert recorded(wandb_file, "model.optimizer.lr") == "0.0003"
    assert recorded(wandb_file, "data.batch_size") == "100" and recorded(wandb_file, "model.optimizer") == '"Adam"'
    assert recorded(wandb_file, "experiment") == '"none"'
    for metric in (b"val/acc_best", b"test/acc", b"train/loss_epoch"):
        assert metric in data, metric
    # The sweep summary and `digitrec train` print how to upload it.
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["logger"]["wandb"]["offline"] is True
    ((label, command),) = viewer_commands(config["logger"], run_dir)
    assert label == "W&B" and command.endswith("/wandb/offline-run-*") and command.startswith("wandb sync ")


def test_wandb_composes_offline_with_the_run_config(tmp_path):
    result = run_digitrec("train", "logger=wandb", "--cfg", "job", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    (entry,) = yaml.safe_load(result.stdout)["logger"].values()
    assert entry["offline"] is True and entry["_target_"] == "digitrec.tracking.wandb_logger.WandbLogger"
    assert set(entry["config"]) == {"seed", "optimized_metric", "ckpt_path", "data", "model", "trainer"}
