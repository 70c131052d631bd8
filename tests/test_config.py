"""Bad config values stop before any training with one line naming the key and the problem."""

import pytest

from conftest import run_digitrec
from digitrec.cli import main


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.lr=-0.1", "config error at model.lr: got -0.1, expected a positive number"),
        ("model.lr=0", "config error at model.lr"),
        ("model.lr=fast", "config error at model.lr: Value 'fast' of type 'str' could not be converted to Float"),
        ("data.batch_size=0", "config error at data.batch_size: got 0, expected an integer >= 1"),
        ("data.batch_size=1.5", "config error at data.batch_size"),
        ("model.hidden_sizes=[]", "config error at model.hidden_sizes: got [], expected a non-empty list"),
        ("model.hidden_sizes=[500,0]", "config error at model.hidden_sizes"),
        ("trainer.max_epochs=0", "config error at trainer.max_epochs: got 0, expected an integer >= 1"),
        ("+model.dropout=0.5", "config error at model.dropout: unknown key"),
        ("+trainer.max_epoch=3", "config error at trainer.max_epoch: not an option of Lightning's Trainer"),
        ("model.foo=1", "bad override: Could not override 'model.foo'"),
        ("model=transformer", "bad override: In 'train': Could not find 'model/transformer' Available options in 'model': mlp"),
        ("model.lr=[", "bad override: no viable alternative at input '['"),
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
    result = run_digitrec("train", "model.lr=-1", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == "digitrec: error: config error at model.lr: got -1.0, expected a positive number, e.g. model.lr=0.001"
    assert "Traceback" not in result.stdout + result.stderr
