"""Sweeps compared with one another (issue 27): every setting that differs is a column, the
settings every job shares are stated, sweeps have names, and a parent folder finds its sweeps."""

from pathlib import Path

import pytest

from conftest import parse, run_cli
from mnistlab import names
from mnistlab.report.settings import as_text, common, differing, flatten

TINY = ("dataset=random", "device=cpu", "device.threads=1", "optimizer=sgd,adam")


@pytest.mark.slow
def test_two_sweeps_that_differ_in_epochs_are_told_apart_from_their_parent_folder(tmp_path):
    for epochs, name in ((1, "short"), (2, "long")):
        swept = run_cli(
            "mnistlab.cli.train", "-m", *TINY, f"loop.epochs={epochs}", f"sweep.name={name}",
            cwd=tmp_path,
        )  # fmt: skip
        assert swept.returncode == 0, swept.stderr
    done = run_cli("mnistlab.cli.summarize", "outputs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "outputs: 2 sweep folders below it" in done.stderr
    page = parse(tmp_path / "outputs" / names.REPORT_FILE)
    header, *rows = page.tables[0]  # all sweeps, ranked
    assert header[:4] == ["rank", "sweep", "optimizer", "loop.epochs"]
    assert sorted((row[1], row[3]) for row in rows) == [
        ("long", "2"), ("long", "2"), ("short", "1"), ("short", "1")
    ]  # fmt: skip
    text = (tmp_path / "outputs" / names.REPORT_FILE).read_text()
    assert (
        "Curves of all sweeps, overlaid" in text and "Colour: sweep; line style: optimizer" in text
    )
    shared = page.summaries[0]
    assert shared.startswith("Settings every job shares (") and "loop.epochs" not in shared
    assert "dataset.source._target_=mnistlab.data.splits.random_dataset" in shared
    assert "loop.epochs=1" in page.summaries[1]  # each sweep's own header states its epochs
    # TensorBoard's HParams over both (whichever of the copies it reads): epochs differ.
    for folder in (tmp_path / "outputs", *(tmp_path / "outputs" / "sweeps").iterdir()):
        experiment = hparams_experiment_in(folder)
        assert experiment.metric_infos[0].name.tag == "val/loss"
        differ = sorted(info.name for info in experiment.hparam_infos if info.differs)
        assert differ == ["loop.epochs", "optimizer", "optimizer.lr"], folder  # lr: defaults
    # The report it wrote beside the sweeps is passed over when a shell glob names it too.
    again = run_cli("mnistlab.cli.summarize", *sorted(map(str, (tmp_path / "outputs").glob("*/*"))),
                    str(tmp_path / "outputs" / names.REPORT_FILE), cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "written by mnistlab, not a sweep: passed over" in again.stderr


def test_a_folder_with_neither_jobs_nor_sweeps_below_it_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    done = run_cli("mnistlab.cli.summarize", "empty", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "empty holds no Hydra job folders (*/.hydra/hydra.yaml), nor sweep folders "
            "(multirun.yaml) up to 3 levels below it"
        )
    )


class Job:
    def __init__(self, overrides: dict, config: dict) -> None:
        self.overrides, self.settings = overrides, flatten(config)


def test_the_columns_are_the_settings_that_differ_and_the_rest_are_shared() -> None:
    sgd = {"optimizer": {"_target_": "SGD", "lr": 0.1, "momentum": 0.0}, "loop": {"epochs": 2}}
    adam = {
        "optimizer": {"_target_": "Adam", "lr": 0.1, "betas": [0.9, 0.99]},
        "loop": {"epochs": 2},
    }
    jobs = [
        Job({"optimizer": "sgd"}, sgd),
        Job({"optimizer": "adam"}, adam),
        Job({"optimizer": "adam"}, adam | {"loop": {"epochs": 3}}),
    ]
    # The optimizer's own settings come with its column; epochs, never overridden, is one too.
    assert differing(jobs, ["optimizer"]) == ["optimizer", "loop.epochs"]
    assert common(jobs) == {"optimizer.lr": "0.1"}
    assert as_text(None) == "null" and as_text(True) == "true" and as_text([8, 24]) == "[8, 24]"


def hparams_experiment_in(folder: Path):
    """The HParams experiment in `folder`'s own event file, as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import metadata

    (path,) = folder.glob("events.out.tfevents.*.hparams")
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.tag == metadata.EXPERIMENT_TAG:
                return metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    raise AssertionError(f"no experiment in {path}")
