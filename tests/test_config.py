"""Bad config values stop before any training with one line naming the key and the problem."""

from pathlib import Path

import pytest

from conftest import check_command, run_digitrec
from digitrec.command.main import main


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
        ("+model.dropout=0.5", "config error at model.dropout: digitrec.training.classifier.DigitClassifier takes no argument dropout"),
        ("+model.net.foo=1", "config error at model.net.foo: digitrec.nets.MLP takes no argument foo"),
        ("model.lr=0.1", "bad override: Could not override 'model.lr'"),
        (
            "+trainer.max_epoch=3",
            "config error at trainer.max_epoch: lightning.pytorch.Trainer takes no argument max_epoch (did you mean max_epochs?)",
        ),
        ("model.foo=1", "bad override: Could not override 'model.foo'"),
        ("model=transformer", "bad override: In 'train': Could not find 'model/transformer' (available options: default)"),
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


def test_a_typo_outside_the_trainer_is_judged_without_importing_lightning():
    """A typo is reported in a second or two: only the Trainer's options need Lightning's judgement."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from conftest import check_command\n"
        "from digitrec.errors import DigitrecError\n"
        "for overrides in (['+seeed=1'], ['model.optimizer.lr=-1'], ['model/net=cnn', 'model.net.channels=[]'], ['data.batch_size=0']):\n"
        "    try:\n"
        "        check_command(overrides, until='config')\n"
        "    except DigitrecError as err:\n"
        "        print(err)\n"
        "print(sorted(m for m in ('lightning', 'torchvision') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "config error at seeed",
        "config error at model.optimizer.lr",
        "config error at model.net.channels",
        "config error at data.batch_size",
    ], lines
    assert lines[-1] == "[]"


def test_trainer_options_are_judged_by_lightnings_own_signature():
    """No list of Trainer options is kept anywhere: a new Lightning option is valid the day it ships."""
    import inspect

    from lightning.pytorch import Trainer

    defaults = []
    for name, parameter in inspect.signature(Trainer).parameters.items():
        value = parameter.default
        if name in ("callbacks", "logger", "plugins", "default_root_dir", "max_epochs") or not isinstance(value, (int, float, str, bool, type(None))):
            continue
        defaults.append(f"++trainer.{name}=" + ("null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)))
    assert len(defaults) > 30
    check_command(defaults)


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
    check_command([override])
