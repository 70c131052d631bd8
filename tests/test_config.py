"""Bad config values stop before any training with one line naming the key and the problem."""

import pytest

from conftest import run_digitrec
from digitrec.cli import main


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.optimizer.lr=-0.1", "config error at model.optimizer.lr: got -0.1, expected a positive number"),
        ("model.optimizer.lr=0", "config error at model.optimizer.lr"),
        ("model.optimizer.lr=fast", "config error at model.optimizer.lr: got 'fast', expected a positive number"),
        ("data.batch_size=0", "config error at data.batch_size: got 0, expected an integer >= 1"),
        ("data.batch_size=1.5", "config error at data.batch_size"),
        ("model.net.hidden_sizes=[]", "config error at model.net.hidden_sizes: got [], expected a non-empty list"),
        ("model.net.hidden_sizes=[500,0]", "config error at model.net.hidden_sizes"),
        ("trainer.max_epochs=0", "config error at trainer.max_epochs: got 0, expected an integer >= 1"),
        ("+model.dropout=0.5", "config error at model.dropout: unknown key"),
        ("+model.net.foo=1", "config error at model.net.foo: digitrec.nets.MLP takes no argument foo"),
        ("model.lr=0.1", "bad override: Could not override 'model.lr'"),
        ("+trainer.max_epoch=3", "config error at trainer.max_epoch: not an option of Lightning's Trainer"),
        ("model.foo=1", "bad override: Could not override 'model.foo'"),
        ("model=transformer", "bad override: In 'train': Could not find 'model/transformer' Available options in 'model': default"),
        ("model/net=transformer", "bad override: In 'model/default': Could not find 'model/net/transformer'"),
        ("model.optimizer.lr=[", "bad override: no viable alternative at input '['"),
        ("seed=abc", "config error at seed: got 'abc', expected an integer"),
        ("progress=fancy", "config error at progress"),
    ],
)
def test_bad_value_is_one_line_and_trains_nothing(override, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"digitrec: error: {expected}"), err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert not (tmp_path / "outputs").exists(), "no run may start for a bad config"


def test_eval_requires_a_checkpoint(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval"])
    assert exit_info.value.code == 2
    assert "ckpt_path is required" in capsys.readouterr().err


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_real_command_line_exit_code_and_no_traceback(tmp_path):
    result = run_digitrec("train", "model.optimizer.lr=-1", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == "digitrec: error: config error at model.optimizer.lr: got -1, expected a positive number, e.g. model.optimizer.lr=0.001"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_the_pre_check_imports_neither_lightning_nor_torch():
    """A typo is reported in about a second: the pre-check reads Lightning's Trainer signature and
    precision values from its source instead of importing it (seconds), and never needs torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from digitrec.cli import precheck\n"
        "from digitrec.errors import DigitrecError\n"
        "precheck('train', ['trainer.max_epochs=2', '++trainer.max_time=00:01:00:00', '++trainer.gradient_clip_val=1.0'])\n"
        "precheck('train', ['model/net=cnn', 'model/optimizer=sgd', 'model/scheduler=onecycle', 'data/augment=elastic'])\n"
        "precheck('train', ['model.optimizer._target_=torch.optim.RMSprop', 'model/scheduler=cosine_warmup'])\n"
        "precheck('train', ['experiment=cnn'])\n"
        "try:\n"
        "    precheck('train', ['+trainer.max_epoch=3'])\n"
        "except DigitrecError as err:\n"
        "    print(err)\n"
        "print(sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("config error at trainer.max_epoch: not an option of Lightning's Trainer")
    assert lines[-1] == "[]"


def test_trainer_facts_read_from_source_equal_lightnings_own():
    import inspect
    from typing import get_args

    from lightning.fabric.plugins.precision import precision
    from lightning.pytorch import Trainer

    from digitrec.config import precision_values, trainer_parameters

    assert trainer_parameters() == set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    expected = {
        v for name in ("_PRECISION_INPUT_INT", "_PRECISION_INPUT_STR", "_PRECISION_INPUT_STR_ALIAS") for v in get_args(getattr(precision, name))
    }
    assert set(precision_values()) == expected


@pytest.mark.parametrize(
    "override",
    [
        "trainer.devices=2",
        "trainer.devices=auto",
        "++trainer.precision=bf16-mixed",
        "++trainer.max_time=00:00:30:00",
        "trainer.limit_train_batches=0.5",
        "++trainer.accumulate_grad_batches=2",
        "trainer.log_every_n_steps=0",
        "seed=0",
        "seed=4294967295",
        "callbacks.model_checkpoint=null",
        "experiment=wide",
        "experiment=cnn",
        "model/net=cnn",
        "model/optimizer=sgd",
        "model/scheduler=onecycle",
        "data/augment=elastic",
        "callbacks/early_stopping=default",
        "debug=limit",
    ],
)
def test_good_values_pass_the_pre_check(override):
    from digitrec.cli import precheck

    assert precheck("train", [override]) == []


def test_the_pre_checks_activation_names_are_the_networks():
    """config.py keeps its own copy (it must not import torch): the two must name the same activations."""
    from digitrec.config import ACTIVATION_NAMES
    from digitrec.nets import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
