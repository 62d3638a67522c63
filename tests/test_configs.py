"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from mnistlab import names
from mnistlab.config import checks
from mnistlab.parts.models import MNISTClassifier


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (Path(names.CONF_DIR) / group).glob("*.yaml"))


def test_groups_have_the_options_the_readme_lists():
    assert {"auto", "cpu", "cuda", "mps"} <= set(options("device"))
    assert {"synthetic", "fake_mnist", "random"} <= set(options("dataset"))
    assert {"sgd", "adam", "rmsprop", "adamw"} <= set(options("optimizer"))
    assert "mlp" in options("model")


@pytest.mark.parametrize("name", options("device"))
def test_device_options_compose_and_validate(name):
    cfg = compose_config(f"device={name}")
    assert checks.check(cfg).device.name == name


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_options_build_splits(name, tmp_path):
    cfg = compose_config(f"dataset={name}")
    if name == "synthetic":
        cfg.dataset.source.num_samples = 500  # the shape is what matters here
    if "root" in cfg.dataset.source:
        pytest.skip(f"dataset={name} reads files; its own tests cover it")
    settings = checks.check(cfg)
    splits = instantiate(cfg.dataset.source)
    assert len(splits.train) > 0 and len(splits.val) > 0
    assert settings.loader.batch_size >= 1


@pytest.mark.parametrize("name", options("optimizer"))
def test_optimizer_options_instantiate_at_the_call_site(name):
    cfg = compose_config(f"optimizer={name}")
    model = MNISTClassifier((28, 28), 10, hidden=128, dropout=0.0)
    optimizer = instantiate(cfg.optimizer, params=model.parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("name", options("model"))
def test_model_options_follow_the_data_shape(name):
    cfg = compose_config(f"model={name}")
    model = instantiate(cfg.model, input_shape=(28, 28), num_classes=10)
    assert model(torch.zeros(5, 28, 28)).shape == (5, 10)


def test_mlp_is_the_lesson_architecture():
    model = MNISTClassifier((28, 28), 10, hidden=128, dropout=0.0)
    layers = [type(m).__name__ for m in model.children()]
    assert layers == ["Flatten", "Linear", "ReLU", "Identity", "Linear"]
    assert (model.fc1.in_features, model.fc1.out_features) == (784, 128)
    assert (model.fc2.in_features, model.fc2.out_features) == (128, 10)


def test_random_dataset_sizes_the_mlp_to_three_features_and_two_classes():
    cfg = compose_config("dataset=random")
    splits = instantiate(cfg.dataset.source)
    model = instantiate(cfg.model, input_shape=splits.input_shape, num_classes=splits.num_classes)
    assert (model.fc1.in_features, model.fc2.out_features) == (3, 2)
