"""Shared test helpers: compose the real config, run the real CLI, write or find IDX files."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mnistlab import names
from mnistlab.cli import resolvers
from mnistlab.data.mnist import FILES

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

resolvers.register()


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The real config from conf/, with overrides, as Hydra would compose it."""
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
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


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic (0x08 = uint8, number of dims), big-endian sizes, raw uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, raw: bytes, gz: bool) -> None:
    """Write an IDX file's bytes, gzipped as `path.name + '.gz'` where `gz`."""
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_idx_dataset(
    root: Path, *, n_train: int = 60, n_test: int = 20, size=(12, 10), classes: int = 3, gz=True
) -> None:
    """The four IDX files of a small dataset whose label is its images' bright row band."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in ((FILES[0], n_train), (FILES[2], n_test)):
        labels = rng.integers(0, classes, n)
        images = rng.integers(0, 40, (n, *size))
        for image, label in zip(images, labels, strict=True):
            image[label * 3 : label * 3 + 3] = 250
        write_idx(root / name, idx_bytes(images), gz)
        write_idx(root / name.replace("images-idx3", "labels-idx1"), idx_bytes(labels), gz)
