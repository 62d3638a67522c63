"""mnistlab-train: one training run, or with -m a sweep of them, composed by Hydra.

mnistlab-train                                   # synthetic digits, lesson MLP, Adam, 3 epochs
mnistlab-train optimizer=sgd optimizer.lr=0.1 loop.epochs=5
mnistlab-train -m optimizer=sgd,adam,rmsprop optimizer.lr=0.1,0.01,0.001
"""

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnistlab import config
from mnistlab.data import Splits, batches, num_batches
from mnistlab.device import describe, resolve_device
from mnistlab.loop import evaluate, train_epoch

log = logging.getLogger(__name__)
config.register_schemas()


def train(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Train and evaluate as `cfg` says; write TensorBoard events and metrics.json to out_dir."""
    settings = config.check(cfg)
    device = resolve_device(settings.device.name)
    if settings.device.threads is not None:
        torch.set_num_threads(settings.device.threads)
    log.info("device: %s", describe(device))

    torch.manual_seed(settings.loop.seed)
    data: Splits = instantiate(cfg.dataset.source)
    if settings.loader.mode == "tensor":
        data = Splits(
            data.train.to(device),
            data.val.to(device),
            data.num_classes,
            data.test.to(device) if data.test is not None else None,
        )
    model = instantiate(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes)
    model = model.to(device)
    optimizer = instantiate(cfg.optimizer, params=model.parameters())
    log.info(
        "data: %d train / %d val samples, input %s, %d classes",
        len(data.train),
        len(data.val),
        data.input_shape,
        data.num_classes,
    )

    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    with SummaryWriter(log_dir=str(out_dir)) as writer:
        write_hparams(writer, cfg)
        metrics = fit(model, optimizer, data, settings, device, writer)
        metrics["device"] = describe(device)
        write_hparams_end(writer)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def fit(
    model, optimizer, data: Splits, settings: config.Settings, device: torch.device, writer
) -> dict[str, Any]:
    """Run every epoch: train, validate, log; then test where the data has a test split."""
    loop, loader = settings.loop, settings.loader
    steps_per_epoch = num_batches(len(data.train), loader.batch_size)
    eval_loader = dataclasses.replace(
        loader, shuffle=False, batch_size=max(loader.batch_size, 1024)
    )
    step, samples, train_seconds = 0, 0, 0.0
    started = time.perf_counter()
    for epoch in range(loop.epochs):
        tick = time.perf_counter()
        train_loss, seen = train_epoch(
            model,
            batches(data.train, loader, seed=loop.seed, epoch=epoch),
            optimizer,
            device,
            loop,
            first_step=step,
            total=steps_per_epoch,
            log_loss=lambda s, value: writer.add_scalar("train/loss", value, s),
            description=f"epoch {epoch + 1}/{loop.epochs}",
        )
        train_seconds += time.perf_counter() - tick
        step, samples = step + steps_per_epoch, samples + seen
        val_loss, val_accuracy = evaluate(
            model, batches(data.val, eval_loader, seed=0, epoch=0), device
        )
        writer.add_scalar("val/loss", val_loss, step)
        writer.add_scalar("val/accuracy", val_accuracy, step)
        log.info(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_accuracy %.2f%%  (%.0f samples/s)",
            epoch + 1,
            loop.epochs,
            train_loss,
            val_loss,
            100 * val_accuracy,
            seen / (time.perf_counter() - tick),
        )
    metrics = {
        "status": "completed",
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "epochs": loop.epochs,
        "steps": step,
        "samples_per_second": samples / train_seconds,
        "wall_time_s": time.perf_counter() - started,
    }
    if data.test is not None:
        metrics["test_loss"], metrics["test_accuracy"] = evaluate(
            model, batches(data.test, eval_loader, seed=0, epoch=0), device
        )
        writer.add_scalar("test/loss", metrics["test_loss"], step)
        writer.add_scalar("test/accuracy", metrics["test_accuracy"], step)
        log.info(
            "test_loss %.4f  test_accuracy %.2f%%",
            metrics["test_loss"],
            100 * metrics["test_accuracy"],
        )
    return metrics


def hparams_of(cfg: DictConfig) -> dict[str, Any]:
    """The run's hyper-parameters as flat TensorBoard-friendly values: optimizer.lr -> 0.01."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, prefix if key == "_target_" else f"{prefix}.{key}")
        elif isinstance(node, bool | int | float | str):
            # `_target_` names the component: "torch.optim.Adam" -> optimizer = "Adam"
            flat[prefix] = (
                node.rsplit(".", 1)[-1]
                if prefix in ("optimizer", "model", "dataset.source")
                else node
            )

    for group in ("dataset", "model", "optimizer", "loop"):
        walk(OmegaConf.to_container(cfg[group], resolve=True), group)
    return flat


def write_hparams(writer, cfg: DictConfig) -> None:
    """Record the hyper-parameters in the run's own event file (not add_hparams' sub-folder)."""
    from torch.utils.tensorboard.summary import hparams

    _, session_start, _ = hparams(hparams_of(cfg), {})
    writer.file_writer.add_summary(session_start)


def write_hparams_end(writer) -> None:
    from torch.utils.tensorboard.summary import hparams

    _, _, session_end = hparams({}, {})
    writer.file_writer.add_summary(session_end)


@hydra.main(version_base="1.3", config_path=config.CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: train in Hydra's output folder, return the objective for sweepers."""
    metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    return metrics[cfg.objective]


if __name__ == "__main__":
    main()
