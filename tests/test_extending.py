"""docs/extending.md, run as written: its files in a folder outside the repository, its commands."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT

GUIDE = ROOT / "docs" / "extending.md"
# `<!-- file: PATH -->` or `<!-- run -->` / `<!-- run: fails -->`, then one fenced block.
STEP = re.compile(
    r"<!-- (file: (?P<path>\S+)|run(?P<fails>: fails)?) -->\n```\w*\n(?P<body>.*?)```", re.S
)


def steps() -> tuple[dict[str, str], list[tuple[str, bool]]]:
    """The guide's files {path: text} and its commands [(command, expected to fail)]."""
    files, commands = {}, []
    for match in STEP.finditer(GUIDE.read_text()):
        if match["path"]:
            files[match["path"]] = match["body"]
        else:
            lines = [line for line in match["body"].splitlines() if line.strip()]
            commands += [(line, bool(match["fails"])) for line in lines]
    return files, commands


def test_the_guide_has_the_walkthrough() -> None:
    files, commands = steps()
    assert {"my_code.py", "conf/model/tiny.yaml", "conf/dataset/blobs.yaml"} <= set(files)
    assert sum(fails for _, fails in commands) == 1 and len(commands) >= 4


@pytest.mark.slow
def test_walkthrough_runs_from_a_folder_outside_the_repository(tmp_path: Path) -> None:
    project = tmp_path / "my_project"
    files, commands = steps()
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    # The installed console scripts and python, as in the user's activated environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    env.pop("HYDRA_FULL_ERROR", None)
    output, failed = {}, []
    for command, fails in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (done.returncode != 0) == fails, f"{command}\n{done.stdout}\n{done.stderr}"
        output[command] = done.stdout + done.stderr
        if fails:
            failed.append(done.stderr)
    (help_text,) = [text for command, text in output.items() if "--help" in command]
    assert "model: cnn, mlp, tiny" in help_text
    assert "dataset: blobs, fake_mnist" in help_text and "tiny_blobs" in help_text
    # Each run learned the blobs: far above a third, the chance level of three classes.
    runs = sorted((project / "outputs").rglob("metrics.json"))
    assert len(runs) == 4  # a run, two sweep jobs over the preset, the API script
    for path in runs:
        metrics = json.loads(path.read_text())
        assert metrics["status"] == "completed" and metrics["val_accuracy"] > 0.6, path
    jobs = sorted((project / "outputs" / "sweeps").glob("*/*/.hydra/config.yaml"))
    models = {OmegaConf.load(job).model._target_ for job in jobs}
    assert models == {"my_code.TinyNet", "mnistlab.parts.models.MNISTClassifier"}
    assert {OmegaConf.load(job).dataset.source._target_ for job in jobs} == {"my_code.blobs"}
    assert len(failed) == 1 and "Traceback" not in failed[0]
    assert "model.depth is not accepted by my_code.TinyNet" in failed[0]
    (api_output,) = [text for command, text in output.items() if "train_tiny.py" in command]
    assert "in outputs/api/tiny" in api_output
