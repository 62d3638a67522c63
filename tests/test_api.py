"""mnistlab.cli.api: compose from overrides, train in-process, leave Hydra's global state as is."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException

from conftest import ROOT, TINY_RUN, metrics_of
from mnistlab import SettingError
from mnistlab.cli import api

TINY = [*TINY_RUN, "device=cpu"]


def test_two_runs_in_a_row_each_with_its_own_config(tmp_path: Path) -> None:
    first = api.train(TINY, out_dir=tmp_path / "first")
    assert not GlobalHydra.instance().is_initialized()
    second = api.train([*TINY, "loop.epochs=2", "optimizer=sgd"], out_dir=tmp_path / "second")
    assert not GlobalHydra.instance().is_initialized()
    assert (first.run_dir, second.run_dir) == (tmp_path / "first", tmp_path / "second")
    assert (first.metrics["epochs"], second.metrics["epochs"]) == (1, 2)
    for result in (first, second):
        saved = metrics_of(result.run_dir)
        assert saved["val_loss"] == result.metrics["val_loss"]
        assert saved["status"] == "completed"


def test_bad_settings_raise_and_the_next_call_works(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="loop.epochs=0 must be at least 1"):
        api.train([*TINY, "loop.epochs=0"], out_dir=tmp_path / "bad")
    with pytest.raises(ConfigCompositionException, match="model/nope"):
        api.train([*TINY, "model=nope"], out_dir=tmp_path / "bad")
    assert not GlobalHydra.instance().is_initialized()
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    assert api.train(TINY, out_dir=tmp_path / "good").metrics["status"] == "completed"


def test_config_dir_adds_the_users_options(tmp_path: Path) -> None:
    (tmp_path / "conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "conf" / "optimizer" / "slow_sgd.yaml").write_text(
        "_target_: torch.optim.SGD\nlr: 0.0001\n"
    )
    cfg = api.run_config(["optimizer=slow_sgd"], config_dir=tmp_path / "conf")
    assert (
        cfg.optimizer.lr == 0.0001 and cfg.model._target_ == "mnistlab.parts.models.MNISTClassifier"
    )
    with pytest.raises(SettingError, match="config_dir='nowhere' is not a folder"):
        api.run_config([], config_dir="nowhere")


def test_a_resumed_run_names_its_own_folder(tmp_path: Path) -> None:
    first = api.train(TINY, out_dir=tmp_path / "first")
    again = api.train([*TINY, f"loop.resume={first.run_dir}"], out_dir=tmp_path / "unused")
    assert again.run_dir == first.run_dir and not (tmp_path / "unused").exists()


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"<!-- ci:api -->\n```python\n(.*?)```", readme, re.S)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("outputs/notebook/sgd_" in line for line in lines)
    for folder in (tmp_path / "outputs" / "notebook").iterdir():
        assert metrics_of(folder)["val_accuracy"] > 0.5
