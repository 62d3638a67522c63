"""The package carries its configs: a wheel (built here or from the sdist) runs from any folder."""

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from mnistlab import names

# Every config file of the repository, as the wheel must hold it (experiments/ is the group).
SHIPPED = sorted(
    [f"mnistlab/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")]
    + [f"mnistlab/conf/experiment/{p.name}" for p in (ROOT / "experiments").glob("*.yaml")]
)


def build(target: str, source: Path, out: Path) -> Path:
    """Build `target` (wheel or sdist) of the project in `source` with hatchling, offline."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(out)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (artifact,) = out.iterdir()
    return artifact


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout."""
    return build("wheel", ROOT, tmp_path_factory.mktemp("dist"))


def configs_in(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return sorted(n for n in archive.namelist() if n.startswith("mnistlab/conf/"))


def test_the_editable_install_reads_the_checkouts_configs() -> None:
    assert Path(names.CONF_DIR).resolve() == ROOT / "conf"
    assert len(SHIPPED) > 20 and "mnistlab/conf/experiment/mnist_mlp.yaml" in SHIPPED


@pytest.mark.slow  # builds the wheel
def test_the_wheel_carries_conf_and_experiments(wheel: Path) -> None:
    assert [n for n in configs_in(wheel) if n.endswith(".yaml")] == SHIPPED


@pytest.mark.slow  # builds an sdist, then a wheel
def test_a_wheel_built_from_the_sdist_carries_them_too(tmp_path: Path) -> None:
    # What `python -m build` and an install from an sdist do; an sdist holds no links.
    sdist = build("sdist", ROOT, tmp_path / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (source,) = (tmp_path / "unpacked").iterdir()
    wheel = build("wheel", source, tmp_path / "dist")
    assert [n for n in configs_in(wheel) if n.endswith(".yaml")] == SHIPPED


@pytest.mark.slow  # builds the wheel, then runs it
def test_the_installed_wheel_runs_from_any_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # what pip does with a pure-Python wheel's files
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable checkout
    env.pop("HYDRA_FULL_ERROR", None)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mnistlab.cli.train", *args],
            cwd=away,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = subprocess.run(
        [sys.executable, "-c", "from mnistlab import names; print(names.CONF_DIR)"],
        cwd=away,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(site / "mnistlab" / "conf")
    assert "experiment: lesson_fake_mnist, mnist_cnn, mnist_cnn_995, mnist_mlp" in cli("--help")
    assert "_target_: mnistlab.data.splits.fake_mnist" in cli(
        "experiment=lesson_fake_mnist", "--cfg=job"
    )
