"""Shared test helpers: compose the real config, run the real CLI, find the real MNIST files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mnistlab import config

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

config.register_schemas()


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The real config from conf/, with overrides, as Hydra would compose it."""
    with initialize_config_dir(config_dir=config.CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` as a user would, from `cwd`; capture its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HYDRA_FULL_ERROR": ""}
    env.pop("HYDRA_FULL_ERROR")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def imported_modules(stderr: str) -> set[str]:
    """Module names from Python's -X importtime report (PYTHONPROFILEIMPORTTIME=1)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.fixture
def mnist_dir() -> Path:
    """The four original MNIST files; tests that need them skip where they are absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")
    return MNIST_DIR
