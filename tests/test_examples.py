"""Every `digitrec train` / `digitrec eval` example a user can copy runs as written: the ones in
`digitrec --help`, in the YAML comments and in the README. Each is composed by Hydra and judged by
the same checks as the real command (see conftest.check_command); a sweep's every value once.
A few need hardware or code this machine lacks: those pass digitrec's own checks (until="config")."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO, TINY_TRAIN, check_command, find_mnist_dir, run_digitrec
from digitrec.command.checks import each_value_once
from digitrec.command.main import USAGE, quote_paths
from digitrec.errors import DigitrecError

# Examples whose run needs what a CPU test machine has not: a GPU, Apple silicon, a SLURM cluster, your own
# package, a database server or a shared filesystem of the reader's.
NEEDS_ELSEWHERE = (
    "trainer=ddp ",
    "trainer=ddp_spawn",
    "trainer=mps",
    "trainer=gpu",
    "hydra/launcher=slurm",
    "num_nodes=",
    "@dbhost",
    "journal:/shared",
)
COMMAND = re.compile(r"(?:^\s*|[`$#]\s*|:\s+)(digitrec (?:train|eval)\b[^`#\n]*)")


def examples() -> dict[str, str]:
    """Example command line -> where it is written."""
    found: dict[str, str] = {}
    sources = [("digitrec --help", USAGE), ("README.md", (REPO / "README.md").read_text())]
    sources += [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / "configs").rglob("*.yaml"))]
    for where, text in sources:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():  # a command continued with \ is one line
            if where.endswith(".yaml") and not line.lstrip().startswith("#"):
                continue
            for match in COMMAND.finditer(line):
                command = match.group(1).strip().rstrip(".,;)")
                # -cd DIR names a folder of the reader's own: test_config_dir_adds_your_own_experiments runs that one.
                if (
                    "..." not in command
                    and "PATH" not in command
                    and " -cd " not in command
                    and "KEY=" not in command
                    and command.count("'") % 2 == 0
                ):
                    found.setdefault(command, where)
    return found


EXAMPLES = examples()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real (tiny) run: the checkpoints `<run>` stands for in the examples."""
    cwd = tmp_path_factory.mktemp("run")
    result = run_digitrec("train", *TINY_TRAIN, "trainer.limit_test_batches=1", cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (cwd / "outputs" / "train" / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def own_digits(mnist, tmp_path_factory) -> Path:
    """A real folder of digit images: the reader's own folder (data.root=~/my_digits) in the examples."""
    from PIL import Image

    root = tmp_path_factory.mktemp("my_digits")
    for digit in range(10):
        (root / str(digit)).mkdir()
        for i, index in enumerate((mnist.test_labels == digit).nonzero().flatten()[:3].tolist()):
            Image.fromarray(255 - mnist.test_images[index].numpy()).resize((56, 56)).save(root / str(digit) / f"{i}.png")
    return root


def runs_of(command: str, run_dir: Path, own_digits: Path) -> tuple[str, list[list[str]]]:
    """(config name, override lists): a sweep gives each value of each swept key once."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    command = re.sub(r"outputs/train/runs/<run>/checkpoints/epoch_\d+\.ckpt", str(next((run_dir / "checkpoints").glob("epoch_*.ckpt"))), command)
    command = command.replace("outputs/train/runs/<run>", str(run_dir)).replace("/path/to/mnist", str(find_mnist_dir()))
    command = re.sub(r"data\.root=~/\S+", f"data.root={own_digits}", command)
    words = shlex.split(command)[1:]
    # quote_paths: what the command does to a pasted path holding `=` or `,` (run names do).
    verb, args = words[0], quote_paths([w for w in words[1:] if w not in ("-m", "--multirun", "--cfg", "job")])
    fixed, swept = [], []
    for override in OverridesParser.create().parse_overrides(args):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif override.value().__class__.__name__ == "Glob":  # experiment=glob(*): every config of the group
            group, glob = override.get_key_element(), override.value()
            names = sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))
            swept.append([f"{group}={n}" for n in names if any(fnmatch.fnmatch(n, g) for g in glob.include)])
        elif "interval" in override.input_line or "tag(" in override.input_line:
            continue  # an Optuna search space: Hydra composes it only inside the search (tested in test_optuna)
        else:
            swept.append([f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()])
    return verb, each_value_once(fixed, swept)


def test_the_examples_are_found():
    wheres = set(EXAMPLES.values())
    assert {"digitrec --help", "README.md"} <= wheres and any(w.endswith(".yaml") for w in wheres), wheres
    assert len(EXAMPLES) >= 40, sorted(EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(EXAMPLES), ids=sorted(EXAMPLES))
def test_every_documented_example_passes_the_checks(command, finished_run, own_digits, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # data=folder's prepared images
    # The README's "your own network" example names my_package.MyNet: here is one.
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text(
        "from torch import nn\n\nclass MyNet(nn.Sequential):\n"
        "    def __init__(self, width: int = 32):\n        super().__init__(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    verb, runs = runs_of(command, finished_run, own_digits)
    expected_error = documented_error(command)
    until = "config" if any(marker in command + " " for marker in NEEDS_ELSEWHERE) else "all"
    for overrides in runs:
        if expected_error:
            with pytest.raises(DigitrecError) as error:
                check_command(overrides, verb, until=until)
            assert str(error.value) == expected_error.removeprefix("digitrec: error: ")
        else:
            check_command(overrides, verb, until=until)


def documented_error(command: str) -> str | None:
    """The error line the README shows under `$ COMMAND`, if it shows one."""
    lines = (REPO / "README.md").read_text().splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == f"$ {command}" and lines[i + 1].startswith("digitrec: error: "):
            return lines[i + 1]
    return None


@pytest.mark.slow
def test_config_dir_adds_your_own_experiments(tmp_path):
    own = tmp_path / "my_configs" / "experiment"
    own.mkdir(parents=True)
    (own / "mine.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_epochs: 1\n  limit_train_batches: 3\n  limit_val_batches: 1\n  limit_test_batches: 1\n"
    )
    for flag in (["-cd", "my_configs"], ["--config-dir=my_configs"]):
        result = run_digitrec("train", *flag, "experiment=mine", "progress=lines", cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "epoch 1/1" in result.stdout
    missing = run_digitrec("train", "-cd", "nowhere", "experiment=mine", cwd=tmp_path, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("digitrec: error: ") and missing.stderr.count("\n") == 1, missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "logger, label, command", [("tensorboard", "curves", "tensorboard --logdir"), ("mlflow", "runs", "mlflow ui --backend-store-uri sqlite:////")]
)
def test_the_end_of_a_run_says_how_to_see_it_with_the_logger_used(logger, label, command, tmp_path):
    result = run_digitrec("train", *TINY_TRAIN, "trainer.limit_test_batches=1", f"logger={logger}", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (hint,) = [line.split(None, 1)[1] for line in result.stdout.splitlines() if line.strip().startswith(f"{label} ")]
    assert hint.startswith(command), hint
    assert ("tensorboard" in hint) == (logger == "tensorboard") and ("mlflow" in hint) == (logger == "mlflow")
    words = shlex.split(hint)
    target = Path(words[words.index("--logdir" if logger == "tensorboard" else "--backend-store-uri") + 1].removeprefix("sqlite:///"))
    assert target.is_absolute() and target.exists(), "the hint works from any folder"
