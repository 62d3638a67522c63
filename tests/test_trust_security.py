"""No file can choose what a run calls: a checkpoint's config is data, checked before use.

A crafted checkpoint (the format marker and a config, nothing else) passes `weights_only`
loading; these tests make sure its config cannot make `loop.resume` call anything that the
installation's config groups, or the resuming command itself, do not offer.
"""

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, resume_in_process, run_cli
from mnistlab import SettingError
from mnistlab.data.splits import random_dataset
from mnistlab.run import checkpoint, resume
from mnistlab.run.training import run_training

# What an attacker writes: a plain run config (as mnistlab saves one) to change.
RUN_CONFIG = {
    "device": {"name": "cpu", "threads": 1},
    "dataset": {
        "source": {"_target_": "mnistlab.data.splits.random_dataset", "num_samples": 10, "seed": 0},
        "loader": {"batch_size": 4},
    },
    "model": {"_target_": "mnistlab.parts.models.MNISTClassifier", "hidden": 8},
    "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001},
    "loop": {"epochs": 1},
    "objective": "val_loss",
}


def crafted(tmp_path: Path, **nodes: object) -> Path:
    """A checkpoint holding only the format marker and a run config with `nodes` set."""
    cfg = copy.deepcopy(RUN_CONFIG)
    for key, node in nodes.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = node
        else:
            cfg[section] = node
    path = tmp_path / "crafted" / checkpoint.FILENAME
    path.parent.mkdir()
    torch.save({"format": checkpoint.FORMAT, "config": OmegaConf.to_yaml(cfg)}, path)
    return path


def refused_line(tmp_path: Path, path: Path) -> str:
    """Resume `path` through the real CLI; return its one-line refusal."""
    result = run_cli("mnistlab.cli.train", f"loop.resume={path}", cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "refused for safety" in line]
    return line


@pytest.mark.slow  # the real CLI
def test_a_checkpoint_cannot_make_resume_open_a_file_for_writing(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    source = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    path = crafted(tmp_path, dataset__source=source)
    line = refused_line(tmp_path, path)
    assert "dataset.source._target_=builtins.open" in line
    assert victim.read_text() == "precious\n"


@pytest.mark.slow  # the real CLI
def test_a_checkpoint_cannot_make_resume_write_a_script(tmp_path):
    script = tmp_path / "evil.sh"
    source = {"_target_": "numpy.savetxt", "fname": str(script), "X": [[1]], "fmt": "touch pwned"}
    path = crafted(tmp_path, dataset__source=source)
    assert "numpy.savetxt" in refused_line(tmp_path, path)
    assert not script.exists()


@pytest.mark.slow  # the real CLI
@pytest.mark.parametrize("section", ["model", "optimizer"])
def test_a_checkpoint_cannot_swap_the_model_or_optimizer_for_any_callable(tmp_path, section):
    # logging.basicConfig takes any keyword and creates its log file before it complains.
    marker = tmp_path / "called.log"
    node = {"_target_": "logging.basicConfig", "filename": str(marker), "force": True}
    line = refused_line(tmp_path, crafted(tmp_path, **{section: node}))
    assert f"{section}._target_=logging.basicConfig" in line
    assert not marker.exists()


NOT_PLAIN = [
    (
        "nested target",
        {
            "dataset__source": {
                "_target_": "mnistlab.data.splits.random_dataset",
                "seed": {"_target_": "os.getcwd"},
            }
        },
        "os.getcwd",
    ),
    ("target in a list", {"model__hidden": [{"_target_": "os.getcwd"}]}, "os.getcwd"),
    (
        "an interpolation",
        {
            "dataset__source": {
                "_target_": "mnistlab.data.splits.random_dataset",
                "seed": "${oc.env:HOME}",
            }
        },
        "interpolation",
    ),
    ("a custom resolver", {"loop__resume": "${mnistlab.run_folder:a,b}"}, "interpolation"),
    ("_partial_", {"model___partial_": True}, "_partial_"),
    ("_args_", {"model___args_": ["x"]}, "_args_"),
    ("a hydra section", {"hydra": {"run": {"dir": "x"}}}, "hydra"),
]


@pytest.mark.parametrize(("name", "nodes", "named"), NOT_PLAIN, ids=[n[0] for n in NOT_PLAIN])
def test_a_checkpoint_config_must_be_plain_values_offered_here(tmp_path, name, nodes, named):
    path = crafted(tmp_path, **nodes)
    with pytest.raises(SettingError, match="refused for safety") as refusal:
        resume_in_process(path)
    assert named in str(refusal.value)


NO_RUN_CONFIG = [42, "a: [", "- a list", "just text", "a: !!python/name:os.system"]


@pytest.mark.parametrize("config", NO_RUN_CONFIG)
def test_a_checkpoint_config_that_is_no_run_config_is_refused_in_one_line(tmp_path, config):
    path = tmp_path / checkpoint.FILENAME
    torch.save({"format": checkpoint.FORMAT, "config": config}, path)
    with pytest.raises(SettingError, match=r"^loop.resume: .* (holds|has) ") as refusal:
        resume_in_process(path)
    assert "\n" not in str(refusal.value)


def tiny(num_samples: int, num_val_samples: int, seed: int):
    """A dataset builder that no config group ships: only the user can name it."""
    return random_dataset(num_samples, num_val_samples, seed)


def test_a_target_is_offered_by_the_users_own_groups_or_command_line(tmp_path):
    own = ("dataset=random", "dataset.source._target_=test_trust_security.tiny")
    run_training(compose_config(*own, "loop.epochs=1"), tmp_path / "run")
    with pytest.raises(SettingError, match="test_trust_security.tiny, which no config group"):
        resume_in_process(tmp_path / "run", "loop.epochs=2")

    groups = tmp_path / "my_conf" / "dataset"  # what --config-dir my_conf would add
    groups.mkdir(parents=True)
    (groups / "tiny.yaml").write_text("source:\n  _target_: test_trust_security.tiny\n")
    sources = (f"file://{tmp_path / 'my_conf'}", *resume.DEFAULT_SOURCES)
    metrics = resume_in_process(tmp_path / "run", "loop.epochs=2", config_sources=sources)
    assert metrics["epochs"] == 2

    metrics = resume_in_process(tmp_path / "run", own[1], "loop.epochs=3")
    assert metrics["epochs"] == 3
