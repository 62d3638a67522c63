"""`benchmark=training`: how fast mnistlab's loop is, against the lesson's and a bare loop."""

import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from mnistlab import SettingError
from mnistlab.benchmark import quiet
from mnistlab.benchmark.loops import (
    Contender,
    EpochFn,
    OptimizerFn,
    Workload,
    bare_epoch,
    fused_adam,
    lesson_epoch,
    mnistlab_adam,
    mnistlab_epoch,
    plain_adam,
)
from mnistlab.benchmark.output import format_table, write_results, write_scalars
from mnistlab.benchmark.settings import TrainingSettings
from mnistlab.config import shipped
from mnistlab.data.splits import TensorPairs
from mnistlab.data.splits import build as build_data
from mnistlab.parts import cores
from mnistlab.parts.device import denormals, describe, synchronize
from mnistlab.parts.models import MNISTClassifier


@dataclass(frozen=True)
class Variant:
    """A named way to train: its epoch function and how its Adam is built."""

    title: str
    epoch: EpochFn
    optimizer: OptimizerFn
    torch_defaults: bool = True  # run as a user's own script does: torch's CPU settings


# The order is the table's order; the labels (1)-(3p) are the ones the ratios refer to.
VARIANTS: dict[str, Variant] = {
    "lesson": Variant("(1)  lesson loop: Dataset + DataLoader, Adam", lesson_epoch, plain_adam),
    "lesson_fused": Variant("(1f) lesson loop + fused Adam", lesson_epoch, fused_adam),
    "mnistlab": Variant(
        "(2)  mnistlab loop: train_epoch, TensorBoard on, build_optimizer",
        mnistlab_epoch,
        mnistlab_adam,
        torch_defaults=False,
    ),
    "bare": Variant(
        "(3)  bare loop: sliced tensors, no logging, fused Adam",
        bare_epoch,
        fused_adam,
        torch_defaults=False,
    ),
    "bare_defaults": Variant(
        "(3d) bare loop, fused Adam, torch's defaults", bare_epoch, fused_adam
    ),
    "bare_plain": Variant("(3p) bare loop, plain Adam, torch's defaults", bare_epoch, plain_adam),
}
RATIOS = {  # key: (top variant, bottom variant, label, what it shows)
    "mnistlab_over_lesson": ("mnistlab", "lesson", "(2)/(1)", "mnistlab against the lesson"),
    "mnistlab_over_bare": ("mnistlab", "bare", "(2)/(3)", "mnistlab's overhead (goal >= 0.95)"),
    "lesson_fused_over_lesson": ("lesson_fused", "lesson", "(1f)/(1)", "fused Adam, lesson loop"),
    "bare_defaults_over_bare_plain": (
        "bare_defaults",
        "bare_plain",
        "(3d)/(3p)",
        "fused Adam, bare loop",
    ),
    "bare_defaults_over_lesson_fused": (
        "bare_defaults",
        "lesson_fused",
        "(3d)/(1f)",
        "the data path, same fused Adam",
    ),
    "bare_plain_over_lesson": ("bare_plain", "lesson", "(3p)/(1)", "the data path, plain Adam"),
    "bare_over_bare_defaults": (
        "bare",
        "bare_defaults",
        "(3)/(3d)",
        "mnistlab's CPU settings (device.flush_denormal)",
    ),
}


def make_contender(variant: Variant, settings: TrainingSettings, device: torch.device) -> Contender:
    """The lesson's MLP, initialised alike for every variant, and the variant's own Adam."""
    torch.manual_seed(settings.seed)
    model = MNISTClassifier(input_shape=(28, 28), num_classes=10, hidden=128, dropout=0.0).to(
        device
    )
    return Contender(model, variant.optimizer(model.parameters(), settings, device))


DATA_TITLES = {"random": "MNIST-shaped random samples", "mnist": "real MNIST training images"}


def workload_data(settings: TrainingSettings) -> TensorPairs:
    """`num_samples` MNIST-shaped random images and labels, or the first of the real ones."""
    if settings.data == "mnist":
        # Cached, else downloaded. No setting names its folder here: messages name $MNISTLAB_DATA.
        source = shipped.option("dataset", "mnist").source  # as dataset=mnist reads it
        source.key = None
        splits = build_data(source)
        images = torch.cat([splits.train.inputs, splits.val.inputs])
        if settings.num_samples > len(images):
            raise SettingError(
                f"benchmark.num_samples={settings.num_samples} is more than MNIST's "
                f"{len(images)} training images: use at most {len(images)}"
            )
        labels = torch.cat([splits.train.targets, splits.val.targets])
        return TensorPairs(images[: settings.num_samples], labels[: settings.num_samples])
    generator = torch.Generator().manual_seed(settings.seed)
    return TensorPairs(
        torch.rand(settings.num_samples, 28, 28, generator=generator),
        torch.randint(0, 10, (settings.num_samples,), generator=generator),
    )


def timed_epoch(variant: Variant, contender: Contender, work: Workload, epoch: int) -> float:
    """Samples per second of one epoch of one variant."""
    synchronize(work.device)
    started = time.perf_counter()
    samples = variant.epoch(contender, work, epoch)
    synchronize(work.device)
    return samples / (time.perf_counter() - started)


class Trainer:
    """Some variants' trainees on one workload, warmed up, each trained one epoch per call."""

    def __init__(self, names: list[str], work: Workload) -> None:
        self.work = work
        self.trainees = {
            name: make_contender(VARIANTS[name], work.settings, work.device) for name in names
        }
        warmup = work.head(min(work.settings.warmup_samples, len(work.host)))
        for name in names:  # untimed: lazy set-up, caches, Adam state
            VARIANTS[name].epoch(self.trainees[name], warmup, 0)

    def epoch(self, name: str, epoch: int) -> float:
        return timed_epoch(VARIANTS[name], self.trainees[name], self.work, epoch)


def torch_defaults_worker(
    conn: Connection, names: list[str], settings: TrainingSettings, device: torch.device
) -> None:
    """A child process that trains `names` as a user's own script runs: torch's CPU settings.

    Only the thread count is the parent's. It answers (variant, epoch) with samples/s.
    """
    torch.set_num_threads(conn.recv())
    host = workload_data(settings)
    trainer = Trainer(names, Workload(host, host.to(device), settings, device, writer=None))
    conn.send(denormals())
    while (request := conn.recv()) is not None:
        conn.send(trainer.epoch(*request))


@contextmanager
def torch_defaults_process(
    names: list[str], work: Workload
) -> Iterator[tuple[Callable[[str, int], float], str, int]]:
    """Start the child for `names`; yield its epoch function, denormal report and pid."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: torch's defaults
    conn, child_conn = context.Pipe()
    args = (child_conn, names, work.settings, work.device)
    child = context.Process(target=torch_defaults_worker, args=args, daemon=True)
    child.start()
    child_conn.close()  # the child's end: with it closed here, a dead child reads as EOFError

    def receive() -> Any:
        try:
            return conn.recv()
        except EOFError:
            child.join(timeout=10)
            raise RuntimeError(
                f"the benchmark's child process for {', '.join(names)} stopped "
                f"(exit code {child.exitcode}): its error is printed above"
            ) from None

    def epoch(name: str, number: int) -> float:
        conn.send((name, number))
        return receive()

    try:
        conn.send(torch.get_num_threads())
        yield epoch, receive(), child.pid
    finally:
        if child.is_alive():
            conn.send(None)
        child.join(timeout=60)


def measure_variants(work: Workload) -> tuple[dict[str, list[float]], dict[str, str], float | None]:
    """Samples/s per variant and round, what each process does with denormal floats, and other
    processes' load meanwhile (the child's work is the benchmark's own).

    Variants alternate in a rotating order. Those with `torch_defaults` train in a child
    process: a process-wide CPU setting such as flushing denormals cannot be switched back and
    forth, since torch's worker threads keep the setting they started with.
    """
    names = work.settings.variants
    here = [name for name in names if not VARIANTS[name].torch_defaults]
    there = [name for name in names if VARIANTS[name].torch_defaults]
    with torch_defaults_process(there, work) if there else nullcontext((None, "", None)) as child:
        child_epoch, child_denormals, child_pid = child
        trainer = Trainer(here, work)
        meter = cores.Meter(*([] if child_pid is None else [child_pid]))
        speeds: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(1, work.settings.rounds + 1):
            # Rotating the order spreads any drift (clock, heat, memory) evenly over the variants.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                epoch = trainer.epoch if name in here else child_epoch
                speeds[name].append(epoch(name, round_))
        during = meter.busy()

    def labels(group: list[str]) -> str:
        return ", ".join(VARIANTS[name].title.split()[0] for name in group)

    modes = (
        {f"{labels(here)} here, with mnistlab-train's CPU settings": denormals()} if here else {}
    )
    if there:
        modes[f"{labels(there)} in a child process, with torch's defaults"] = child_denormals
    return speeds, modes, during


def training_benchmark(
    settings: TrainingSettings, device: torch.device, out_dir: Path
) -> dict[str, Any]:
    """Samples/s of the lesson's loop, mnistlab's loop and bare loops; the ratios between them."""
    from torch.utils.tensorboard import SummaryWriter  # heavy import: only when a run starts

    host = workload_data(settings)
    before = quiet.load_before()
    print(f"device: {describe(device)}")
    print(
        f"lesson MLP, Adam lr {settings.lr}, batch {settings.batch_size}, "
        f"{settings.num_samples} {DATA_TITLES[settings.data]}, median of {settings.rounds} epochs"
    )
    with SummaryWriter(log_dir=str(out_dir / "mnistlab_loop")) as writer:
        work = Workload(host, host.to(device), settings, device, writer)
        speeds, modes, during = measure_variants(work)
    for where, mode in modes.items():
        print(f"{where}: denormal floats {mode}")
    load = quiet.Load(before, during)
    results = {**training_results(speeds, settings, device), "denormals": modes}
    results["load"] = load.record()
    print(training_table(results))
    rows = [{"variant": name, **figures} for name, figures in results["variants"].items()]
    write_results(out_dir, results, rows)
    write_scalars(out_dir, training_scalars(results, settings.batch_size))
    return results


def training_results(
    speeds: dict[str, list[float]], settings: TrainingSettings, device: torch.device
) -> dict[str, Any]:
    """The medians per variant and the ratios between the variants that ran."""
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    ratios = {
        key: medians[top] / medians[bottom]
        for key, (top, bottom, _, _) in RATIOS.items()
        if top in medians and bottom in medians
    }
    variants = {
        name: {
            "title": VARIANTS[name].title,
            "samples_per_s": medians[name],
            "min_samples_per_s": min(values),
            "max_samples_per_s": max(values),
            "per_round_samples_per_s": values,
        }
        for name, values in speeds.items()
    }
    return {
        "benchmark": "training",
        "device": describe(device),
        "settings": asdict(settings),
        "variants": variants,
        "ratios": ratios,
    }


def training_table(results: dict[str, Any]) -> str:
    """One line per variant, then one line per ratio with what it shows."""
    cells = [["variant", "samples/s (median)", "min", "max"]]
    for figures in results["variants"].values():
        speeds = ("samples_per_s", "min_samples_per_s", "max_samples_per_s")
        cells.append([figures["title"], *(f"{figures[key]:,.0f}" for key in speeds)])
    width = max(len(label) for _, _, label, _ in RATIOS.values()) + 3  # "(3u)/(3p) = "
    ratios = [
        f"{RATIOS[key][2] + ' =':<{width}}{value:.2f}x  {RATIOS[key][3]}"
        for key, value in results["ratios"].items()
    ]
    load = quiet.Load(results["load"]["before"], results["load"]["during"])
    if not load.reliable():
        ratios = []  # a ratio of figures the scheduler decided would look like a finding
    said = noisy(results["variants"]) if ratios else []
    return "\n".join([format_table(cells, left=1), *ratios, *said, load.line()])


def noisy(variants: dict[str, dict[str, Any]]) -> list[str]:
    """A line naming the variants whose rounds spread wide (quiet.SPREAD), if any."""
    labels = [figures["title"].split()[0] for figures in variants.values()]
    wide = [
        label
        for label, figures in zip(labels, variants.values(), strict=True)
        if quiet.spread(figures) > quiet.SPREAD
    ]
    if not wide:
        return []
    return [
        f"noisy: {', '.join(wide)} varied by more than {quiet.SPREAD:.0%} of the median between "
        "rounds (the machine's speed changed): take the ratios with care, or add rounds "
        "(benchmark.rounds)"
    ]


def training_scalars(results: dict[str, Any], batch_size: int) -> dict[str, list]:
    """TensorBoard series at step = batch size, so sweeps over the batch size line up."""
    series = {
        f"training/{name}_samples_per_s": [(batch_size, figures["samples_per_s"])]
        for name, figures in results["variants"].items()
    }
    if not results["load"]["reliable"]:
        return series  # no ratio from figures taken under load, here either
    for key, value in results["ratios"].items():
        series[f"training/{key}"] = [(batch_size, value)]
    return series
