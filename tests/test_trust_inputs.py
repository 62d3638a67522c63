"""Every bad input stops in one line naming its cause, before any training (issue 12, §4).

The command line is what users touch, so the cases the issue lists run the real CLI. The rest
of each class (the similar values one would try next) goes through the same checks
in-process, which is much quicker.
"""

import logging
import re

import pytest
import torch

from conftest import compose_config, run_cli, write_idx_dataset
from mnistlab import SettingError
from mnistlab.config import checks as config
from mnistlab.run.training import run_training

# Lines Hydra prints around every error; the error itself is what is left.
HYDRA_FRAME = ("Error executing job with overrides", "Set the environment variable HYDRA_FULL")
QUICK = ("loop.epochs=1", "device.threads=1")
RANDOM = "dataset=random"
IDX = ("dataset=idx", "dataset.source.num_val_samples=10", "dataset.loader.batch_size=10")

# (id, overrides, what the one line must say, whether it may come once the data is loaded)
CLI_CASES = [
    ("lr-nan", [RANDOM, "optimizer.lr=nan"], "optimizer.lr=nan must be a finite number", False),
    ("lr-inf", [RANDOM, "optimizer.lr=inf"], "optimizer.lr=inf must be a finite number", False),
    (
        "clip-nan",
        [RANDOM, "loop.grad_clip_norm=nan"],
        "loop.grad_clip_norm=nan must be a finite number",
        False,
    ),
    (
        "channels-one",
        [RANDOM, "model=cnn", "model.channels=[16]"],
        "model.channels=[16] must be a list of 2 integers",
        False,
    ),
    (
        "channels-text",
        [RANDOM, "model=cnn", "model.channels=[16,abc]"],
        "model.channels=[16, 'abc'] must be a list of 2 integers",
        False,
    ),
    (
        "betas-one",
        [RANDOM, "+optimizer.betas=[0.9]"],
        "optimizer.betas=[0.9] must be a list of 2 numbers",
        False,
    ),
    (
        "no-val-samples",
        ["dataset.source.num_samples=4"],
        "dataset.source.num_samples=4 with dataset.source.val_fraction=0.1 gives 0 validation",
        False,
    ),
    (
        "no-train-samples",
        ["dataset.source.num_samples=10", "dataset.source.val_fraction=0.99"],
        "dataset.source.val_fraction=0.99 gives 10 validation and 0 training",
        False,
    ),
    (
        "test-objective",
        [RANDOM, "objective=test_loss"],
        "objective=test_loss needs a test split, but mnistlab.data.splits.random_dataset has none",
        True,
    ),
    ("cnn-on-features", [RANDOM, "model=cnn"], "model=cnn needs images of at least 4x4", True),
    ("idx-empty-test", [*IDX], "t10k-images-idx3-ubyte.gz holds no images", True),
    ("idx-tiny-images", [*IDX, "model=cnn"], "inputs have shape (3, 3): use model=mlp", True),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "says", "data_loaded"),
    [case[1:] for case in CLI_CASES],
    ids=[case[0] for case in CLI_CASES],
)
def test_bad_input_stops_in_one_line_before_training(tmp_path, overrides, says, data_loaded):
    if "dataset=idx" in overrides:
        tiny = "model=cnn" in overrides  # 3x3 images; else the test split is empty
        write_idx_dataset(
            tmp_path / "data", n_test=20 if tiny else 0, size=(3, 3) if tiny else (12, 10)
        )
        overrides = [*overrides, f"dataset.source.root={tmp_path / 'data'}"]
    run = tmp_path / "run"
    result = run_cli(
        "mnistlab.cli.train", *QUICK, *overrides, f"hydra.run.dir={run}", cwd=tmp_path, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [
        line for line in result.stderr.splitlines() if line and not line.startswith(HYDRA_FRAME)
    ]
    assert len(lines) == 1 and says in lines[0], result.stderr
    if not data_loaded:
        assert "data:" not in output  # plain values stop before any data loads
    assert "epoch 1/" not in output
    assert not run.exists()  # a refused run leaves no folder behind, and writes nothing


# The same classes, the next values one would try: each must be refused by the checks made
# before any data loads, naming the key.
SETTINGS_CASES = [
    ("sweep.report_every=-1", "sweep.report_every=-1.0 must be a number of seconds >= 0"),
    ("sweep.report_every=inf", "sweep.report_every=inf must be a finite number"),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan"),
    ("optimizer.lr=1e400", "optimizer.lr=inf"),
    ("optimizer.lr=abc", "optimizer.lr='abc' must be a number"),
    ("model.dropout=nan", "model.dropout=nan"),
    ("model.dropout=1", "model.dropout=1 must be in [0, 1)"),
    ("model.hidden=0", "model.hidden=0 must be >= 1"),
    ("model.hidden=1.5", "model.hidden=1.5 must be an integer"),
    ("loop.grad_clip_norm=inf", "loop.grad_clip_norm=inf"),
    ("dataset.source.val_fraction=nan", "dataset.source.val_fraction=nan"),
    ("dataset.source.val_fraction=1", "dataset.source.val_fraction=1 must be between 0 and 1"),
    ("optimizer=sgd optimizer.momentum=-1", "optimizer.momentum=-1 must be in [0, 1)"),
    ("optimizer=sgd optimizer.momentum=1", "optimizer.momentum=1 must be in [0, 1)"),
    ("optimizer=sgd +optimizer.dampening=2", "optimizer.dampening=2 must be in [0, 1]"),
    ("optimizer=rmsprop +optimizer.alpha=1", "optimizer.alpha=1 must be in [0, 1)"),
    ("+optimizer.eps=0", "optimizer.eps=0 must be > 0"),
    ("+optimizer.betas=[0.9,1.0]", "optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    ("+optimizer.betas=abc", "optimizer.betas='abc' must be a list of 2 numbers"),
    ("+optimizer.betas=[0.9,0.99,0.999]", "optimizer.betas=[0.9, 0.99, 0.999] must be a list"),
    ("model=cnn model.channels=16", "model.channels=16 must be a list of 2 integers"),
    ("model=cnn model.channels=[16,0]", "model.channels=[16, 0] must be two integers >= 1"),
    ("model=cnn model.channels=[16,32,64]", "model.channels=[16, 32, 64] must be a list of 2"),
    ("model=cnn model.channels=[16.5,32]", "model.channels=[16.5, 32] must be a list of 2"),
    # A string where a list is expected: a mirror URL would be read letter by letter.
    ("dataset=mnist dataset.source.mirrors=http://x/", "dataset.source.mirrors='http://x/'"),
    (
        "dataset=idx dataset.source.md5=abc",
        "dataset.source.md5='abc' must be a mapping of strings to strings or null",
    ),
    ("dataset=idx dataset.source.num_train_samples=0", "num_train_samples=0 must be an integer"),
    # A user's own component whose module is not importable (PYTHONPATH=. forgotten).
    ("model._target_=my_code.Net", "model._target_='my_code.Net' cannot be imported"),
    ("model._target_=torch.nn.NoSuchNet", "(PYTHONPATH=. for a file in this folder)"),
    ("optimizer._target_=os", "optimizer._target_='os' is not a class or function"),
]


@pytest.mark.parametrize(("overrides", "says"), SETTINGS_CASES, ids=[c[0] for c in SETTINGS_CASES])
def test_similar_bad_values_are_refused_by_the_same_checks(overrides, says):
    with pytest.raises(SettingError) as refused:
        config.check(compose_config(*overrides.split()))
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_good_values_of_the_same_kinds_pass():
    for overrides in (
        "model=cnn model.channels=[8,16] +optimizer.betas=[0.5,0.9] +optimizer.eps=1e-6",
        "optimizer=sgd optimizer.momentum=0.9 +optimizer.nesterov=true +optimizer.dampening=0",
        "dataset=idx +dataset.source.md5={a.gz:0123} dataset.source.num_train_samples=null",
        "loop.grad_clip_norm=1.5 model.dropout=0",
    ):
        config.check(compose_config(*overrides.split()))


# What needs the data (sizes x split, objective x splits) or torch's own checks: refused in
# build(), before the first step, and nothing is written.
BUILD_CASES = [
    ("dataset=fake_mnist dataset.source.num_samples=10", "dataset.loader.batch_size=64 is more"),
    ("dataset=random dataset.loader.batch_size=11", "dataset.loader.batch_size=11 is more"),
    ("dataset.source.num_samples=100 dataset.source.val_fraction=0.001", "gives 0 validation"),
    ("dataset=fake_mnist objective=test_accuracy", "objective=test_accuracy needs a test split"),
    ("dataset=random optimizer=sgd +optimizer.nesterov=true", "torch.optim.SGD) refuses"),
    # Any model, not only ours: it runs once on a zero sample of the data's shape.
    (
        "dataset=random model._target_=test_trust_inputs.MNISTSizedMLP",
        "fails on one sample: mat1 and mat2 shapes cannot be multiplied (1x3 and 784x128)",
    ),
]


class MNISTSizedMLP(torch.nn.Sequential):
    """A model that ignores the data's shape: it takes 28x28 images, whatever it is given."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 16, dropout: float = 0
    ) -> None:
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(784, hidden))


@pytest.mark.parametrize(("overrides", "says"), BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_bad_combinations_stop_before_training(tmp_path, caplog, overrides, says):
    caplog.set_level(logging.INFO)
    with pytest.raises(SettingError, match=re.escape(says)):
        run_training(compose_config(*overrides.split(), *QUICK), tmp_path)
    assert "epoch 1/" not in caplog.text
    assert not list(tmp_path.iterdir())  # no checkpoint, no metrics, no events


@pytest.mark.slow  # the real CLI
def test_help_lists_only_the_groups_a_training_run_uses(tmp_path):
    result = run_cli("mnistlab.cli.train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    assert listed == {
        "dataset",
        "device",
        "experiment",
        "loop",
        "model",
        "optimizer",
        "scheduler",
        "sweep",
    }
    assert "optimizer: adam, adamw, rmsprop, sgd" in groups
