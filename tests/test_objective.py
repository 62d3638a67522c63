"""The objective a run returns to the sweeper is one the run is sure to measure."""

import pytest

from conftest import compose_config, run_cli
from mnistlab import SettingError
from mnistlab.config import checks

MID_EPOCH_STOPS = ("loop.target.metric=val_accuracy", "loop.target.value=0.05")


@pytest.mark.slow  # the real CLI
def test_train_loss_with_a_mid_epoch_stop_is_refused_in_one_line(tmp_path):
    # It used to train, stop at step 5 and end in a KeyError: metrics.json had no train_loss.
    stops = ("objective=train_loss", "loop.eval_every_n_steps=5", *MID_EPOCH_STOPS)
    done = run_cli("mnistlab.cli.train", *stops, "dataset.source.num_samples=2000", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (  # the one line, before Hydra starts the job
        "objective=train_loss is measured at epoch ends only, but loop.target with "
        "loop.eval_every_n_steps=5 may stop the run mid-epoch: use objective=val_loss (or "
        "val_accuracy), or loop.eval_every_n_steps=null\n"
    )
    assert "Traceback" not in done.stderr and "data:" not in done.stderr  # before any data
    assert list(tmp_path.iterdir()) == []  # no run folder left behind


@pytest.mark.parametrize(
    "overrides",
    [
        ("objective=val_loss", "loop.eval_every_n_steps=5", *MID_EPOCH_STOPS),
        ("objective=train_loss", *MID_EPOCH_STOPS),  # checked at epoch ends only
        ("objective=train_loss", "loop.eval_every_n_steps=5"),  # nothing stops mid-epoch
    ],
)
def test_objectives_every_run_measures_are_accepted(overrides):
    checks.check(compose_config(*overrides))


def test_early_stopping_mid_epoch_is_refused_too():
    cfg = compose_config(
        "objective=train_loss", "loop.eval_every_n_steps=5", "loop.early_stopping.patience=2"
    )
    with pytest.raises(SettingError, match="^objective=train_loss .* but loop.early_stopping"):
        checks.check(cfg)
