"""Speed-run pieces: bf16, channels-last, label smoothing, the valid-padded CNN, the preset."""

import re

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from mnistlab import SettingError
from mnistlab.loop.progress import Progress
from mnistlab.loop.step import StepOptions, train_epoch
from mnistlab.parts.models import build
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training

SMALL = (
    "dataset.source.num_samples=3000",
    "dataset.loader.batch_size=64",
    "loop.epochs=2",
    "device=cpu",
    "device.threads=1",
)


def test_bf16_trains_about_as_well_as_fp32(tmp_path):
    full = run_training(compose_config(*SMALL), tmp_path / "fp32")
    half = run_training(compose_config(*SMALL, "loop.precision=bf16"), tmp_path / "bf16")
    assert full["val_accuracy"] > 0.6  # learned something worth comparing (chance: 0.1)
    assert abs(half["val_accuracy"] - full["val_accuracy"]) < 0.03
    assert half["val_loss"] != full["val_loss"]  # bf16 did change the arithmetic


def test_float16_with_loss_scaling_is_refused_off_cuda(tmp_path):
    cfg = compose_config(*SMALL, "loop.precision=16-mixed")
    with pytest.raises(SettingError, match=r"^loop.precision=16-mixed needs CUDA .*: use loop"):
        run_training(cfg, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "loop.precision=64",
            "loop.precision='64' is unknown: use one of 32, auto, bf16, 16-mixed",
        ),
        ("loop.label_smoothing=1.0", "loop.label_smoothing=1.0 must be in [0, 1)"),
        ("model.padding=full", "model.padding='full' is unknown: use same or valid"),
        ("model.kernel_sizes=[4,3]", "model.kernel_sizes=[4, 3] must be two odd integers"),
    ],
)
def test_bad_recipe_settings_are_refused_in_one_line(tmp_path, override, says):
    cfg = compose_config(*SMALL, "model=cnn", override)
    with pytest.raises(SettingError, match="^" + re.escape(says)):
        run_training(cfg, tmp_path)


def test_the_speedrun_cnn_has_the_reference_shape():
    cfg = compose_config("model=cnn", "model.kernel_sizes=[5,3]", "model.padding=valid")
    model = build(cfg.model, (28, 28), 10)
    convs = [layer for layer in model.features if isinstance(layer, torch.nn.Conv2d)]
    assert [conv.kernel_size for conv in convs] == [(5, 5), (3, 3)]
    assert model.classifier[1].in_features == 800  # 32 channels x 5 x 5
    too_small = "needs larger images"
    with pytest.raises(SettingError, match=too_small):
        build(cfg.model, (8, 8), 10)


def test_the_speedrun_preset_trains_and_records_its_target(tmp_path, mnist_dir):
    cfg = compose_config(
        "experiment=mnist_speedrun",
        f"dataset.source.root={mnist_dir}",
        "dataset.source.download=false",
        "dataset.source.num_train_samples=2560",
        "device.threads=1",
    )
    metrics = run_training(cfg, tmp_path)
    assert metrics["stop_reason"] in ("completed", "target_reached")
    assert metrics["target_reached"] is (metrics["stop_reason"] == "target_reached")
    assert metrics["steps"] == 20 and metrics["test_accuracy"] > 0.5  # 2560 / batch 128


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_reaches_the_training_loss(smoothing):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    inputs, targets = torch.randn(8, 5), torch.randint(0, 3, (8,))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(
            model(inputs), targets, label_smoothing=smoothing
        ).item()
    logged: list[float] = []
    train_epoch(
        model,
        [(inputs, targets)],
        torch.optim.SGD(model.parameters(), lr=0.1),
        Progress.on(torch.device("cpu")),
        total=1,
        log=lambda step, values: logged.append(values["loss"]),
        options=StepOptions(
            log_every=1,
            grad_clip_norm=None,
            skip_nonfinite=False,
            precision="32",
            label_smoothing=smoothing,
            channels_last=False,
        ),
    )
    assert logged == [pytest.approx(expected, rel=1e-6)]


def scaled_steps(scaler: torch.amp.GradScaler, model: torch.nn.Module, optimizer, overflows):
    """Optimizer steps through `scaler`; an overflowing loss makes it back its scale off."""
    for overflow in overflows:
        loss = model(torch.ones(1, 2)).sum() * (float("inf") if overflow else 1.0)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def test_the_float16_loss_scale_survives_a_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaled_steps(scaler, model, optimizer, [True, False, False])
    saved = scaler.state_dict()
    assert saved["scale"] == 512.0 and saved["_growth_tracker"] == 2  # what a restart loses
    path = tmp_path / "checkpoint.pt"
    progress = Progress.on(torch.device("cpu"))
    checkpoint.save(path, OmegaConf.create({}), model, optimizer, None, progress, scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    cpu = torch.device("cpu")
    checkpoint.restore(checkpoint.load(path), model, optimizer, None, cpu, [], fresh)
    assert fresh.state_dict() == saved


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_16_mixed_run_checkpoints_its_loss_scale(tmp_path):
    run_training(compose_config(*SMALL[:3], "device=cuda", "loop.precision=16-mixed"), tmp_path)
    state = checkpoint.load(tmp_path / "checkpoint.pt")
    assert state["scaler"]["scale"] > 0 and state["scaler"]["growth_interval"] == 2000


def test_pooling_before_the_relu_changes_no_value_or_gradient():
    torch.manual_seed(0)
    model = build(compose_config("model=cnn", "model.dropout=0").model, (28, 28), 10)
    conv1, _, _, conv2, _, _ = model.features
    relu_first = torch.nn.Sequential(  # the textbook order, with the same convolutions
        conv1, torch.nn.ReLU(), torch.nn.MaxPool2d(2), conv2, torch.nn.ReLU(), torch.nn.MaxPool2d(2)
    )
    images = torch.randn(8, 1, 28, 28)
    outputs = []
    for features in (model.features, relu_first):
        model.zero_grad()
        out = model.classifier(features(images))
        out.square().sum().backward()
        outputs.append((out, [p.grad.clone() for p in model.parameters()]))
    (ours, our_grads), (theirs, their_grads) = outputs
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(our_grads, their_grads, strict=True))


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(tmp_path, monkeypatch, native):
    # The probe (oneDNN's) patched both ways: this machine answers only one of them.
    monkeypatch.setattr("mnistlab.private.torch.cpu_bf16_native", lambda: native)
    tiny = ("dataset=random", "loop.epochs=1", "device=cpu", "device.threads=1")
    metrics = run_training(compose_config(*tiny, "loop.precision=auto"), tmp_path)
    assert metrics["precision"] == ("bf16" if native else "32")
    reason = metrics["precision_reason"]
    assert reason.startswith("auto: ") and ("natively" in reason) == native
    assert native or "emulated" in reason


def test_bf16_on_a_cpu_that_only_emulates_it_warns_with_the_reason(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("mnistlab.private.torch.cpu_bf16_native", lambda: False)
    tiny = ("dataset=random", "loop.epochs=1", "device=cpu", "device.threads=1")
    metrics = run_training(compose_config(*tiny, "loop.precision=bf16"), tmp_path)
    assert metrics["precision"] == "bf16" and metrics["precision_reason"] == "as set"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("loop.precision=bf16: this CPU has no native bf16" in line for line in warned)


def test_the_speed_presets_choose_their_precision_by_themselves():
    for preset in ("mnist_speedrun", "mnist_cnn_995"):
        assert compose_config(f"experiment={preset}").loop.precision == "auto"
