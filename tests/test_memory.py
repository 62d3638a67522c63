"""Memory (issue 29): what a run loads and keeps, and the peak it records.

The measurement itself is `python scripts/memory.py` (figures, not a timed test); here: a run
loads no plotting library yet still writes its image summaries, records its peak RSS, and a
process keeps one set of splits, without a copy.
"""

import pytest
import torch

from conftest import SMALL_DIGITS, events, imported_modules, metrics_of, run_cli
from mnistlab.data import splits
from mnistlab.data.splits import Splits, TensorPairs


@pytest.mark.slow  # a real run in its own process
def test_a_run_loads_no_plotting_library_and_still_writes_its_images(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    run = tmp_path / "run"
    args = (*SMALL_DIGITS, f"hydra.run.dir={run}")
    result = run_cli("mnistlab.cli.train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "torch.utils.tensorboard" in modules  # the report of imports is read correctly
    assert not {"matplotlib", "pandas", "scipy"} & modules  # the report's, loaded there only
    images = events(run).Tags()["images"]
    assert "val/confusion_matrix" in images and "val/misclassified" in images
    peak = metrics_of(run)["peak_rss_mb"]
    assert 100 < peak < 100_000  # MB: torch alone takes more than 100


def test_a_process_keeps_its_last_splits_without_a_copy():
    made = []

    def make() -> Splits:
        made.append(1)
        pairs = TensorPairs(torch.arange(12.0).reshape(6, 2), torch.arange(6) % 2)
        return Splits(pairs, TensorPairs(pairs.inputs[:2].clone(), pairs.targets[:2]), 2)

    first = splits.remembered(("test", 1), make)
    assert splits.remembered(("test", 1), make) is first and len(made) == 1  # kept, not copied
    first.train.inputs[0, 0] = 99.0  # a run changes them in place, through torch
    again = splits.remembered(("test", 1), make)
    assert again is not first and len(made) == 2 and again.train.inputs[0, 0] == 0.0
    again.train.inputs.copy_(again.train.inputs.flip(0))  # a reorder is a change too
    third = splits.remembered(("test", 1), make)
    assert third is not again and len(made) == 3
    third.train.inputs.numpy()[5, 1] = -1.0  # past torch: no change counter moves
    fourth = splits.remembered(("test", 1), make)
    assert fourth is not third and len(made) == 4
    fourth.val.targets.data[0] += 1  # .data: a tensor with a change counter of its own
    assert splits.remembered(("test", 1), make) is not fourth and len(made) == 5
    splits.remembered(("other", 1), make)  # a new key lets go of the old splits
    assert list(splits._last) == [("other", 1)]
    splits.forget()
