"""`benchmark=time_to_accuracy`: one ordinary training run of a preset that has a target.

The run is mnistlab-train's own `run_training()` on the shipped config composed with
`experiment=<benchmark.experiment>` (the speed-run recipe by default) and any further
overrides; the loop stops as soon as `loop.target` is reached and metrics.json records when.
This job reports that time: from the data loaded to the evaluation that reached the target.
"""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from hydra.errors import MissingConfigException

from mnistlab import SettingError
from mnistlab.benchmark.output import format_table, write_results
from mnistlab.benchmark.settings import TimeToAccuracySettings
from mnistlab.cli import api
from mnistlab.parts.device import describe
from mnistlab.run import training


def time_to_accuracy_benchmark(
    settings: TimeToAccuracySettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """Train the preset in out_dir until its target; report whether and when it was reached."""
    overrides = [f"experiment={settings.experiment}", f"device={device.type}", *settings.overrides]
    try:
        cfg = api.run_config(overrides)
    except MissingConfigException as err:
        raise SettingError(
            f"benchmark.experiment={settings.experiment}: {str(err).splitlines()[0]}"
        ) from None
    if cfg.loop.target.metric is None:
        raise SettingError(
            f"benchmark.experiment={settings.experiment} sets no loop.target: add "
            "benchmark.overrides=[loop.target.metric=...,loop.target.value=...]"
        )
    print(f"device: {describe(device)}; mnistlab-train {' '.join(overrides)}")
    metrics = training.run_training(cfg, out_dir)
    results = race_results(metrics, settings, cfg.loop.target.metric, cfg.loop.target.value)
    print(format_table([list(results["table"]), [str(v) for v in results["table"].values()]]))
    print(race_summary(results))
    write_results(out_dir, results, [results["table"]])
    return results


def race_results(
    metrics: dict[str, Any], settings: TimeToAccuracySettings, metric: str, value: float
) -> dict[str, Any]:
    """The figures of one race, from the run's metrics.json."""
    reached = bool(metrics.get("target_reached"))
    seconds = metrics["target_seconds"] if reached else metrics["wall_time_s"]
    steps = metrics["target_step"] if reached else metrics["steps"]
    accuracy = metrics.get(metric)
    return {
        "benchmark": "time_to_accuracy",
        "device": metrics["device"],
        "settings": asdict(settings),
        "experiment": settings.experiment,
        "target": metric,
        "target_value": value,
        "reached": reached,
        "wall_time_s": seconds,  # training and evaluation, from data loaded; loading excluded
        "steps": steps,
        "epochs": metrics["epochs"],
        "final": accuracy,  # the target metric at the end (the test split: on the final model)
        "metrics": metrics,
        "table": {
            "reached": reached,
            "seconds": f"{seconds:.2f}",
            "steps": steps,
            metric: accuracy,
        },
    }


def race_summary(results: dict[str, Any]) -> str:
    """The one line to quote: reached (in how long) or not reached (and how close)."""
    r = results
    target = f"{r['target']} {r['target_value']:g}"
    where = f"{r['wall_time_s']:.2f} s ({r['steps']} steps; data loading excluded)"
    if r["reached"]:
        return f"reached {target} in {where}: {r['final']} at the end"
    return f"NOT REACHED: {target}; {r['final']} at the end, after {where}"
