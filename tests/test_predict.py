"""mnistlab-predict: PNG files through a run's saved model give the classes and probabilities
the model gives the run's own tensors of the same images."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import ONE_CPU, dataset_source, imported_modules, run_cli, write_idx_dataset
from mnistlab import names
from mnistlab.data.idx import read_pair
from mnistlab.data.mnist import TEST_IMAGES, TEST_LABELS, idx
from mnistlab.parts.models import build
from mnistlab.run import checkpoint

PREDICT = "mnistlab.cli.predict"


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def model_of(run: Path, shape: tuple[int, ...], classes: int) -> torch.nn.Module:
    """best.pt's model, built here from its saved config (not through mnistlab-predict's code)."""
    state = checkpoint.load(run / names.BEST_FILE)
    model = build(OmegaConf.create(state["config"]).model, shape, classes)
    model.load_state_dict(state["model"])
    return model.eval()


@pytest.mark.slow
def test_predict_on_20_pngs_gives_the_models_own_predictions(tmp_path):
    root, run = tmp_path / "idx", tmp_path / "run"
    write_idx_dataset(root, n_test=20)
    data = (
        "dataset=idx",
        f"dataset.source.root={root}",
        "dataset.source.num_val_samples=20",
        "dataset.loader.batch_size=8",
    )
    done = run_cli(
        "mnistlab.cli.train", f"hydra.run.dir={run}", *data, "loop.epochs=3", *ONE_CPU, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    images, _ = read_pair(root / f"{TEST_IMAGES}.gz", root / f"{TEST_LABELS}.gz")
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for number, image in enumerate(images):  # the test split's 20 digits, as 8-bit PNGs
        Image.fromarray(image.astype(np.uint8)).save(pngs / f"{number:02d}.png")
    (pngs / "notes.txt").write_text("not an image: passed over in a folder")
    done = run_cli(PREDICT, str(run), str(pngs), "--out", "out.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "20 images: out.csv" in done.stdout
    rows = rows_of(tmp_path / "out.csv")
    assert list(rows[0]) == list(names.PREDICTION_COLUMNS)
    assert [row["file"] for row in rows] == [str(pngs / f"{n:02d}.png") for n in range(20)]
    # The run's own test tensors (its builder's scaling and standardisation), one batch of 20.
    source = dataset_source("idx", root=str(root), num_val_samples=20)
    test = idx(**source).test
    with torch.no_grad():
        probabilities = model_of(run, (12, 10), 3)(test.inputs).softmax(dim=1)
    best = probabilities.max(dim=1)
    assert [int(row["predicted_class"]) for row in rows] == best.indices.tolist()
    # The same tensors to the last bit: the same probabilities, exactly.
    assert [float(row["probability"]) for row in rows] == best.values.tolist()


def test_help_says_what_images_it_expects_without_importing_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    done = run_cli(PREDICT, "--help", cwd=tmp_path)
    assert done.returncode == 0 and "white digit on a black" in done.stdout
    assert not {"torch", "numpy", "PIL"} & imported_modules(done.stderr)


def test_no_images_named_is_one_line(tmp_path):
    done = run_cli(PREDICT, str(tmp_path), "checkpoint=final", cwd=tmp_path)
    assert done.returncode == 2 and "no images given: name image files or folders" in done.stderr
