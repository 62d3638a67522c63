"""Shared test helpers: compose the real config, run the real CLI and wait on it, read what a
run wrote, serve files over HTTP, write or find IDX files."""

import csv
import functools
import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnistlab import names
from mnistlab.cli import resolvers
from mnistlab.config import shipped
from mnistlab.data.mnist import FILES
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"

# The quickest real run: one epoch of the random dataset (10 samples, 3 steps).
TINY_RUN = ("dataset=random", "loop.epochs=1")
# One epoch of 2,000 synthetic digits (28 steps): a run that learns, in about a second.
SMALL_DIGITS = ("loop.epochs=1", "dataset.source.num_samples=2000")
# Random data in epochs of 8 steps, every step logged: for what happens at a given step.
SMALL_RANDOM = (
    "dataset=random",
    "dataset.source.num_samples=64",
    "dataset.loader.batch_size=8",
    "loop.log_every_n_batches=1",
    "device.threads=1",
)
# On the CPU, one thread: no thread-count choice may change a sum's order, and processes
# side by side do not compete for the cores.
ONE_CPU = ("device=cpu", "device.threads=1")
# Two ranks on this machine, for start_cli or run_cli: `python -m torch.distributed.run ...`.
TORCHRUN = ("torch.distributed.run", "--standalone", "--nproc_per_node=2")

resolvers.register()


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """The real config from conf/, with overrides, as Hydra would compose it."""
    with initialize_config_dir(config_dir=names.CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


# --- processes ------------------------------------------------------------------------------


def shipped_values(group: str, option: str, node: str | None = None, **changes) -> dict:
    """conf/<group>/<option>.yaml's values (its `node`, `_target_` left out), with `changes`.

    The YAML files are the one source of defaults: a test calling a builder directly takes them.
    """
    values = OmegaConf.to_container(shipped.option(group, option), resolve=False)
    values = values[node] if node else values
    values.pop("_target_", None)
    return values | changes


def dataset_source(option: str, **changes) -> dict:
    """The arguments conf/dataset/<option>.yaml gives its builder, with `changes`."""
    return shipped_values("dataset", option, "source", **changes)


def child_env(*paths: Path) -> dict[str, str]:
    """os.environ for a child: this checkout's src/ (then `paths`) first, Hydra's short errors."""
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    return env | {"PYTHONPATH": os.pathsep.join(str(path) for path in (ROOT / "src", *paths))}


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` as a user would, from `cwd`; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=child_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def start_cli(
    module: str, *args: str, cwd: Path, env: dict | None = None, **kwargs
) -> subprocess.Popen:
    """Start `python -m <module> args...` from `cwd`, as run_cli does, and leave it running."""
    command = [sys.executable, "-m", module, *args]
    return subprocess.Popen(command, cwd=cwd, env=child_env() if env is None else env, **kwargs)


def start_run(cwd: Path, run_dir: Path, *overrides: str) -> subprocess.Popen:
    """mnistlab-train into `run_dir`, running; its stderr piped for the message of a failure."""
    return start_cli(
        "mnistlab.cli.train",
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def paste(command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a printed command in a shell, as a user pasting it would (this venv's scripts)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=child_env() | {"PATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(
    condition: Callable[[], object],
    timeout: float = 120,
    process: subprocess.Popen | None = None,
    every: float = 0.02,
) -> None:
    """Poll `condition` until it holds; fail after `timeout` s, or once `process` has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            output = [text for text in process.communicate(timeout=30) if text]
            pytest.fail(f"the process ended first, with exit code {process.returncode}: {output}")
        assert time.monotonic() < deadline, f"still waiting after {timeout} s"
        time.sleep(every)


def when_started(
    run_dir: Path, process: subprocess.Popen | None = None, settle: float = 0.4
) -> None:
    """Return `settle` s after the run's TensorBoard file appeared: into its first steps."""
    wait_for(lambda: list(run_dir.glob("events.out.tfevents.*")), process=process)
    time.sleep(settle)


def imported_modules(stderr: str) -> set[str]:
    """Module names from Python's -X importtime report (PYTHONPROFILEIMPORTTIME=1)."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


# --- what a run or a sweep wrote ------------------------------------------------------------


def only_run(cwd: Path) -> Path:
    """The one run folder a command run in `cwd` made."""
    (run,) = (cwd / "outputs" / "runs").iterdir()
    return run


def only_sweep(cwd: Path) -> Path:
    """The one sweep folder a command run in `cwd` made."""
    (sweep,) = (cwd / "outputs" / "sweeps").iterdir()
    return sweep


def metrics_of(folder: Path) -> dict:
    """A run's metrics.json, read as plain JSON."""
    return json.loads((folder / "metrics.json").read_text())


def job_metrics(sweep: Path) -> dict[str, dict]:
    """Job folder name -> its metrics.json, for every job of `sweep` that wrote one."""
    return {path.parent.name: metrics_of(path.parent) for path in sweep.glob("*/metrics.json")}


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    """The rows of a sweep's summary.csv, in its order."""
    with (sweep / "summary.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def events(run_dir: Path, reader: type = EventAccumulator):
    """The run's TensorBoard events, loaded by `reader` (TensorBoard's plain reader, or another)."""
    accumulator = reader(str(run_dir))
    accumulator.Reload()
    return accumulator


def final_state(run_dir: Path, tag: str = "train/batch_loss") -> tuple[dict, dict, list]:
    """A finished run's weights, its metrics.json and the (step, value) points of `tag`."""
    state = checkpoint.load(run_dir / checkpoint.FILENAME)
    points = [(event.step, event.value) for event in events(run_dir).Scalars(tag)]
    return state["model"], metrics_of(run_dir), points


def assert_same_run(ours: tuple[dict, dict, list], reference: tuple[dict, dict, list]) -> None:
    """Two final_states agree: weights bit for bit, the final figures, every logged point."""
    weights, metrics, points = ours
    ref_weights, ref_metrics, ref_points = reference
    assert weights.keys() == ref_weights.keys()
    for key, tensor in weights.items():
        assert torch.equal(tensor, ref_weights[key]), key
    for key in ("train_loss", "val_loss", "val_accuracy", "steps", "epochs", "status"):
        assert metrics[key] == ref_metrics[key], key
    # One TensorBoard run, no gap, duplicate or out-of-order step: the same values.
    assert points == ref_points


def resume_in_process(run: Path, *overrides: str, **kwargs) -> dict:
    """Resume `run` (folder or checkpoint) here, as `mnistlab-train loop.resume=<run> ...` would."""
    cfg = compose_config(f"loop.resume={run}", *overrides)
    if not overrides and not kwargs:
        return run_training(cfg, run.parent / "unused")
    return run_training(cfg, run.parent / "unused", overrides, **kwargs)


# --- a local HTTP server --------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder, logging nothing (the tests' output stays readable)."""

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], folder: Path | None = None) -> Iterator[str]:
    """http://127.0.0.1:PORT, served by `handler` (from `folder`) in a thread until the end."""
    make = handler if folder is None else functools.partial(handler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make)
    httpd.daemon_threads = True  # a handler still sending (or stalling) does not hold up the end
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port() -> int:
    """A local port nobody listens on (bound a moment, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- data -----------------------------------------------------------------------------------


@pytest.fixture
def mnist_dir() -> Path:
    """The four original MNIST files; tests that need them skip where they are absent."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST files not found at {MNIST_DIR}")
    return MNIST_DIR


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic (0x08 = uint8, number of dims), big-endian sizes, raw uint8 data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, raw: bytes, gz: bool) -> None:
    """Write an IDX file's bytes, gzipped as `path.name + '.gz'` where `gz`."""
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_idx_dataset(
    root: Path, *, n_train: int = 60, n_test: int = 20, size=(12, 10), classes: int = 3, gz=True
) -> None:
    """The four IDX files of a small dataset whose label is its images' bright row band."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in ((FILES[0], n_train), (FILES[2], n_test)):
        labels = rng.integers(0, classes, n)
        images = rng.integers(0, 40, (n, *size))
        for image, label in zip(images, labels, strict=True):
            image[label * 3 : label * 3 + 3] = 250
        write_idx(root / name, idx_bytes(images), gz)
        write_idx(root / name.replace("images-idx3", "labels-idx1"), idx_bytes(labels), gz)


@contextmanager
def busy_core(core: int) -> Iterator[None]:
    """A Python loop keeping `core` busy (for at most two minutes) while the block runs."""
    loop = "import time\nend = time.time() + 120\nwhile time.time() < end: pass\n"
    busy = subprocess.Popen(
        [sys.executable, "-c", loop], preexec_fn=lambda: os.sched_setaffinity(0, {core})
    )
    try:
        time.sleep(0.3)  # running before the block starts
        yield
    finally:
        busy.kill()
        busy.wait()


def two_cores() -> set[int]:
    """Two of the cores this process may use (fewer where it has fewer)."""
    return set(sorted(os.sched_getaffinity(0))[:2])


class Tables(HTMLParser):
    """A report's tables as lists of rows of cell texts (not those folded under <details>: the
    settings every job shares), the images' sources, and the text of each <summary> line."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.folded: list[list[list[str]]] = []  # the tables under <details>
        self.images: list[str] = []
        self.summaries: list[str] = []
        self.inside: str | None = None  # "cell", "summary" or None
        self.details = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        into = self.folded if self.details else self.tables
        if tag == "details":
            self.details += 1
        elif tag == "table":
            into.append([])
        elif tag == "tr":
            into[-1].append([])
        elif tag in ("td", "th"):
            into[-1][-1].append("")
            self.inside = "cell"
        elif tag == "summary":
            self.summaries.append("")
            self.inside = "summary"
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "summary"):
            self.inside = None
        elif tag == "details":
            self.details -= 1

    def handle_data(self, data: str) -> None:
        if self.inside == "summary":
            self.summaries[-1] += data
        elif self.inside == "cell":
            (self.folded if self.details else self.tables)[-1][-1][-1] += data


def parse(page: Path) -> Tables:
    """The tables, images and summary lines of an HTML page."""
    tables = Tables()
    tables.feed(page.read_text())
    return tables
