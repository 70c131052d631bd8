"""Shared test fixtures: the real MNIST files and a way to run the real `digitrec` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# For real commands that name a helper module of tests/ (user_nets, ddp_probe, interrupt) in their config.
TESTS_ON_PATH = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}

# A tiny but real training run: 1 epoch on 20 batches of real MNIST, the full official test set.
TINY_TRAIN = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "progress=lines",
]


def find_mnist_dir() -> Path:
    """The folder with the official MNIST files: $DIGITREC_MNIST_DIR, else what `make data` downloaded."""
    configured = os.environ.get("DIGITREC_MNIST_DIR")
    folder = Path(configured) if configured else REPO / "data" / "MNIST" / "raw"
    if not folder.is_dir():
        pytest.fail(f"MNIST not found at {folder}: set DIGITREC_MNIST_DIR or run `make data` first", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return find_mnist_dir()


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from digitrec.data.mnist import load_mnist

    return load_mnist(mnist_dir)


def run_digitrec(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m digitrec ...`) with this interpreter, as a user would."""
    full_env = {**os.environ, "DIGITREC_MNIST_DIR": str(find_mnist_dir()), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "digitrec", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def check_command(overrides: list[str], config_name: str = "train", until: str = "all") -> None:
    """The checks `digitrec CONFIG_NAME OVERRIDES` runs before its run directory exists, in-process:
    Hydra's composition (its compose API) and digitrec.command.checks. Raises DigitrecError.
    until="config": digitrec's own rules only (what is judged before Lightning is imported)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    from digitrec.command.checks import RunChecks, added_keys, job_config, parsed_overrides
    from digitrec.config.checks import check_added_keys, check_config

    with initialize_config_module("digitrec.configs", version_base="1.3"):
        config = compose(config_name, overrides=overrides, return_hydra_config=True)
    if until == "config":
        HydraConfig.instance().set_config(config)
        check_added_keys(job_config(config), added_keys(parsed_overrides(config)), set(config.hydra.runtime.choices))
        check_config(job_config(config))
    else:
        RunChecks().check_run(config, config_name)


# --- a real PostgreSQL server, for the searches and MLflow stores that many machines share --------------


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on a loopback port in a temporary folder (benchmarks/postgres.py)."""
    from benchmarks.postgres import bin_dir, running_server

    if bin_dir() is None:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): make test installs it, or apt-get install postgresql", pytrace=False
        )
    with running_server() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_server, request) -> str:
    """A new database on the test server for one test: its URL (with the password)."""
    from benchmarks.postgres import new_database

    return new_database(postgres_server, request.node.name)


# The browser tests (the serve page, TensorBoard's and MLflow's first screens) drive Debian's chromium
# through Playwright's executable_path: Makefile installs it with apt-get, Playwright never downloads one.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
