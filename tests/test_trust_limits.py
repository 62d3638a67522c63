"""Resource limits and damaged inputs on the data and resume path: one line, before work starts.

A resume on other data than the run's is refused (the checkpoint records the data's
fingerprint); a model or a dataset file that cannot fit in memory is refused before it is
built or unpacked; a checkpoint's config cannot keep a resume busy (YAML aliases, deep
nesting); a checkpoint or an IDX file that is not what mnistlab writes is named in one line.
Processes that must not take the machine's memory run under an address-space limit
(`ulimit -v`), where an allocation fails instead of the kernel killing something.
"""

import copy
import gzip
import logging
import resource
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    SMALL_DIGITS,
    TINY_RUN,
    child_env,
    compose_config,
    dataset_source,
    idx_bytes,
    metrics_of,
    resume_in_process,
    run_cli,
    write_idx,
    write_idx_dataset,
)
from mnistlab import SettingError
from mnistlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from mnistlab.data.mnist import FILES, idx, mnist
from mnistlab.data.splits import fingerprint, random_dataset
from mnistlab.data.synthetic import synthetic_digits
from mnistlab.parts.memory import estimate
from mnistlab.run import checkpoint
from mnistlab.run.training import run_training

IDX_RUN = (
    "dataset=idx",
    "dataset.source.num_val_samples=20",
    "dataset.loader.batch_size=20",
    "device.threads=1",
)


def outputs_of(run: Path) -> dict[str, bytes]:
    """Every file of a run folder, by relative path, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def one_line(result: subprocess.CompletedProcess) -> str:
    """The refusal of a command that failed: its last line, with no traceback before it."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def other_idx_dataset(root: Path) -> None:
    """Four IDX files of the same shapes as write_idx_dataset's defaults, other values."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for name, n in ((FILES[0], 120), (FILES[2], 20)):
        write_idx(root / name, idx_bytes(rng.integers(0, 255, (n, 12, 10))), True)
        labels = name.replace("images-idx3", "labels-idx1")
        write_idx(root / labels, idx_bytes(rng.integers(0, 3, n)), True)


# --- a resume on other data -------------------------------------------------------------------


@pytest.mark.slow  # the real CLI
def test_a_resume_on_other_files_of_the_same_shape_is_refused_naming_both(tmp_path):
    write_idx_dataset(tmp_path / "first", n_train=120, n_test=20)
    other_idx_dataset(tmp_path / "other")
    run = tmp_path / "run"
    cfg = compose_config(*IDX_RUN, f"dataset.source.root={tmp_path / 'first'}", "loop.epochs=1")
    run_training(cfg, run)
    (run / "train.log").write_text("the first part's log\n")  # as mnistlab-train leaves it
    before = outputs_of(run)
    time.sleep(2)  # what the run wrote is older than this command (its refusal tidies up)
    result = run_cli(
        "mnistlab.cli.train",
        f"loop.resume={run}",
        "loop.epochs=2",
        f"dataset.source.root={tmp_path / 'other'}",
        cwd=tmp_path,
        timeout=120,
    )
    line = one_line(result)
    assert line.startswith(f"loop.resume: {run / checkpoint.FILENAME} was trained on ")
    assert f"the IDX files in {tmp_path / 'first'} (fingerprint " in line
    assert f"the data is now the IDX files in {tmp_path / 'other'} (fingerprint " in line
    assert line.endswith("Resume with the data it was trained on, or start a new run")
    after = outputs_of(run)  # the same, but for what this command logged before the refusal
    assert after.pop("train.log").startswith(before.pop("train.log"))
    assert after == before


def test_the_checkpoint_and_its_data_agree_on_the_fingerprint(tmp_path):
    write_idx_dataset(tmp_path / "data", n_train=120, n_test=20)
    source = dataset_source("idx", root=str(tmp_path / "data"), num_val_samples=20)
    cfg = compose_config(*IDX_RUN, f"dataset.source.root={tmp_path / 'data'}", "loop.epochs=1")
    run_training(cfg, tmp_path / "run")
    saved = checkpoint.load(tmp_path / "run" / checkpoint.FILENAME)["data"]
    data = idx(**source)
    assert saved == {
        "fingerprint": fingerprint(data),
        "source": f"the IDX files in {tmp_path / 'data'}",
        # What mnistlab-evaluate and mnistlab-predict need of the model's inputs.
        "inputs": {"shape": [12, 10], "classes": 3, "scale": list(data.scale)},
    }


def test_the_fingerprint_follows_every_value_of_files_and_every_setting_of_drawn_data(tmp_path):
    write_idx_dataset(tmp_path / "data", n_train=120, n_test=20)
    source = dataset_source("idx", root=str(tmp_path / "data"), num_val_samples=20)
    data = idx(**source)
    same = data.clone()
    assert fingerprint(data) == fingerprint(same)
    same.test.inputs[3, 2, 1] += 1e-3  # one pixel of one file
    assert fingerprint(data) != fingerprint(same)

    digits = synthetic_digits(200, 0.1, seed=0)
    assert fingerprint(digits) == fingerprint(synthetic_digits(200, 0.1, seed=0))
    assert fingerprint(digits) != fingerprint(synthetic_digits(200, 0.1, seed=1))
    assert fingerprint(digits) != fingerprint(synthetic_digits(200, 0.2, seed=0))
    assert fingerprint(random_dataset(10, 4, 0)) != fingerprint(random_dataset(10, 4, 1))
    # Drawn inputs may differ in the last bit between machines: that is the same data.
    nudged = digits.clone()
    nudged.train.inputs[0, 0, 0] = torch.nextafter(nudged.train.inputs[0, 0, 0], torch.tensor(9.0))
    assert fingerprint(nudged) == fingerprint(digits)


def test_a_checkpoint_saved_before_fingerprints_still_resumes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mnistlab")
    run = tmp_path / "run"
    run_training(compose_config(*TINY_RUN), run)
    path = run / checkpoint.FILENAME
    state = checkpoint.load(path)
    del state["data"]  # as mnistlab wrote checkpoints before it recorded the data
    torch.save(state, path)
    metrics = resume_in_process(run, "loop.epochs=2")
    assert (metrics["status"], metrics["epochs"]) == ("completed", 2)
    assert any("has no data fingerprint" in record.getMessage() for record in caplog.records)
    assert "fingerprint" in checkpoint.load(path)["data"]  # recorded from now on


# --- memory ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def child_mapped() -> int:
    """Bytes a fresh mnistlab-train process maps once its modules are imported."""
    code = (
        "import mnistlab.cli.train, mnistlab.run.training, torch.utils.tensorboard;"
        "print(open('/proc/self/status').read().split('VmSize:')[1].split()[0])"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    return int(found.stdout) * 1024


def limited(mapped: int, extra: int):
    """For subprocess's preexec_fn: an address space of `extra` bytes beyond `mapped`."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, mapped + extra))

    return limit


@pytest.mark.slow  # the real CLI
def test_a_model_too_big_to_train_is_refused_before_it_is_built(tmp_path, child_mapped):
    # 4 GB to spare: its 1.9 GB of weights fit, training them with Adam (12.5 GB) does not.
    result = run_cli(
        "mnistlab.cli.train",
        "model.hidden=600000",
        *SMALL_DIGITS,
        "device.threads=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
        preexec_fn=limited(child_mapped, 4 * 2**30),
    )
    line = one_line(result)
    assert line.startswith(
        "training the model (MNISTClassifier, model.hidden=600000) with "
        "dataset.loader.batch_size=64 (parameters 1.9 GB, gradients 1.9 GB, optimizer state "
        "3.8 GB, activations "
    )
    assert "of CPU memory, but " in line and line.endswith(": use a smaller model or batch size")


# A user's model that reads a value in its forward pass: the meta device cannot run it, so no
# estimate refuses it before training.
WIDE = """
import math

import torch
from torch import nn


class Wide(nn.Module):
    def __init__(self, input_shape, num_classes, hidden, dropout):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("non-finite inputs")
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))
"""


@pytest.mark.slow  # the real CLI
def test_a_step_that_runs_out_of_memory_is_one_line_and_a_failed_run(tmp_path, child_mapped):
    (tmp_path / "wide.py").write_text(WIDE)
    run = tmp_path / "run"
    result = run_cli(
        "mnistlab.cli.train",
        "model._target_=wide.Wide",
        "model.hidden=600000",  # 1.9 GB of weights fit in 4 GB; their gradients and Adam's not
        *SMALL_DIGITS,
        "device.threads=1",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        env=child_env(tmp_path),
        timeout=120,
        preexec_fn=limited(child_mapped, 4 * 2**30),
    )
    line = one_line(result)
    assert line.startswith("training step 1 ran out of CPU memory (") and "can't allocate" in line
    assert line.endswith("use a smaller model or dataset.loader.batch_size, or free some memory")
    assert metrics_of(run)["status"] == "failed"


def test_the_estimate_counts_weights_gradients_optimizer_state_and_activations():
    mlp = compose_config("model=mlp", "model.hidden=1000", "optimizer=adam")
    needs = estimate(mlp.model, (28, 28), 10, mlp.optimizer, (64, 1024))
    weights = (784 * 1000 + 1000 + 1000 * 10 + 10) * 4
    assert (needs.parameters, needs.gradients, needs.optimizer) == (weights, weights, 2 * weights)
    # Evaluation batches of 1024: the flattened input and the hidden layer, in float32.
    assert needs.activations == 2 * 1024 * 1000 * 4
    sgd = compose_config("optimizer=sgd", "optimizer.momentum=0")
    assert estimate(mlp.model, (28, 28), 10, sgd.optimizer, (64, 1024)).optimizer == 0
    cnn = compose_config("model=cnn", "model.shift=2")  # runs on the meta device too
    assert estimate(cnn.model, (28, 28), 10, cnn.optimizer, (64, 1024)).total > 0


def zero_stream(path: Path, header: bytes, body_bytes: int) -> None:
    """A gzip file: `header`, then `body_bytes` zeros, packed chunk by chunk (a few hundred kB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = bytes(1 << 20)
    with path.open("wb") as file:
        file.write(packer.compress(header))
        for first in range(0, body_bytes, len(chunk)):
            file.write(packer.compress(chunk[: body_bytes - first]))
        file.write(packer.flush())


def test_a_gzip_file_is_read_no_further_than_its_header_declares(tmp_path):
    path = tmp_path / "images.gz"
    header = idx_bytes(np.zeros((10, 28, 28)))[:16]
    zero_stream(path, header, 200 * 2**20)  # 200 MB where the header says 7,840 bytes
    tracemalloc.start()
    try:
        more = r"holds more than the 7856 bytes its header \(10, 28, 28\) says"
        with pytest.raises(SettingError, match=more) as refusal:
            read_idx(path, IMAGES_MAGIC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(refusal.value).startswith(str(path)) and "\n" not in str(refusal.value)
    assert peak < 10 * 2**20  # not the 200 MB a full unpacking holds


def test_a_header_larger_than_its_gzip_file_can_unpack_to_is_refused(tmp_path):
    path = tmp_path / "labels.gz"
    header = LABELS_MAGIC.to_bytes(4, "big") + (2**32 - 1).to_bytes(4, "big")  # 4.3 GB of labels
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(SettingError, match=r"declares \(4294967295,\) \(4\.3 GB\), more than"):
        read_idx(path, LABELS_MAGIC)


@pytest.mark.slow  # the real CLI
def test_a_dataset_file_too_big_for_memory_is_refused_before_it_is_unpacked(tmp_path, child_mapped):
    # A 400 KB gzip file that truly holds 400 MB of images: 2.4 GB to load, 1.2 GB to spare.
    data = tmp_path / "data"
    write_idx_dataset(data, n_train=120, n_test=20, size=(28, 28))
    count = 400_000_000 // 784
    header = idx_bytes(np.zeros((count, 28, 28), dtype=np.uint8)[:0])[:4]
    header += count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    zero_stream(data / f"{FILES[0]}.gz", header, count * 784)
    write_idx(data / FILES[1], idx_bytes(np.zeros(count)), gz=True)
    result = run_cli(
        "mnistlab.cli.train",
        *IDX_RUN,
        f"dataset.source.root={data}",
        "loop.epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
        preexec_fn=limited(child_mapped, int(1.2 * 2**30)),
    )
    line = one_line(result)
    assert line.startswith(
        f"loading {data / FILES[0]}.gz (its header says ({count}, 28, 28): 400.0 MB) needs about "
        "2.4 GB of CPU memory, but "
    )
    assert line.endswith("are available: use a smaller dataset, or free some memory")


@pytest.mark.slow  # the real CLI
def test_a_checkpoint_that_unpacks_beyond_memory_is_refused_before_it_is_read(
    tmp_path, finished_run, child_mapped
):
    # Its first weights' record replaced by 1.5 GB of zeros, deflated to a few MB: torch.load
    # unpacks such records too.
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished_run), str(run)], check=True)
    path = run / checkpoint.FILENAME
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(path) as saved, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
        for record in saved.infolist():
            if record.filename.endswith("/data/0"):
                with out.open(record.filename, "w", force_zip64=True) as big:
                    for _ in range(96):
                        big.write(bytes(1 << 24))
            else:
                out.writestr(record.filename, saved.read(record.filename))
    packed.replace(path)
    result = run_cli(
        "mnistlab.cli.train",
        f"loop.resume={run}",
        "loop.epochs=2",
        cwd=tmp_path,
        timeout=120,
        preexec_fn=limited(child_mapped, 2**30),
    )
    line = one_line(result)
    assert line.startswith(f"loop.resume: loading {path} needs about 1.6 GB of CPU memory, but ")
    assert line.endswith("are available: free some memory, or resume it on a machine with more")


# --- YAML in a checkpoint -----------------------------------------------------------------------

# Ten lines, about 1 KB: each list holds nine of the one before, 9**9 strings in all.
ALIAS_BOMB = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 9) + "]\n" for n in range(1, 10)
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run of the random dataset; tests copy it before changing it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    run_training(compose_config(*TINY_RUN), run)
    return run


def changed_copy(run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run folder whose checkpoint `change(state)` has altered."""
    copy_ = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(run), str(copy_)], check=True)
    state = copy.deepcopy(checkpoint.load(copy_ / checkpoint.FILENAME))
    change(state)
    torch.save(state, copy_ / checkpoint.FILENAME)
    return copy_


@pytest.mark.slow  # the real CLI
def test_a_yaml_alias_bomb_in_a_checkpoints_config_is_refused_at_once(tmp_path, finished_run):
    def bomb(state: dict) -> None:
        state["config"] += ALIAS_BOMB

    run = changed_copy(finished_run, tmp_path, bomb)
    result = run_cli(
        "mnistlab.cli.train", f"loop.resume={run}", "loop.epochs=2", cwd=tmp_path, timeout=60
    )
    assert one_line(result) == (
        f"loop.resume: {run / checkpoint.FILENAME}: its config: it uses YAML anchors or aliases "
        "(&name, *name), which we never write; refused for safety, nothing was run"
    )


@pytest.mark.parametrize(
    ("added", "message"),
    [
        # libyaml's own limit on brackets, or ours on depth (mnistlab.files.load_yaml)
        ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "increasing flow level|nests more than 64"),
        ("long: " + "x" * 1_000_001 + "\n", "holds a config of 1,"),
    ],
    ids=["5000 nested brackets", "1 MB"],
)
def test_a_config_too_deep_or_too_long_is_refused_in_one_line(
    tmp_path, finished_run, added, message
):
    run = changed_copy(
        finished_run, tmp_path, lambda state: state.update(config=state["config"] + added)
    )
    with pytest.raises(SettingError, match=message) as refusal:
        resume_in_process(run, "loop.epochs=2")
    assert str(refusal.value).startswith(f"loop.resume: {run / checkpoint.FILENAME}")
    assert "\n" not in str(refusal.value)


# --- checkpoints that are not ours ------------------------------------------------------------


def extra_group(state: dict) -> None:
    groups = state["optimizer"]["param_groups"]
    groups.append(dict(groups[0]))


FOREIGN = [
    ("no epoch", lambda s: s["progress"].pop("epoch"), "its progress has no epoch"),
    ("no RNG", lambda s: s.pop("rng"), "its RNG states are None, not a dict"),
    (
        "torch RNG of 100 bytes",
        lambda s: s["rng"].update(torch=torch.zeros(100, dtype=torch.uint8)),
        "its torch RNG state holds 100 torch.uint8 values, not 5056 bytes",
    ),
    (
        "numpy RNG of 5",
        lambda s: s["rng"]["numpy"].__setitem__(1, torch.zeros(5, dtype=torch.int64)),
        "its numpy RNG state is not numpy's MT19937 state",
    ),
    (
        "Python RNG of 3",
        lambda s: s["rng"]["python"].__setitem__(1, [1, 2, 3]),
        "its Python RNG state has 3 numbers, not 625",
    ),
    ("model a tensor", lambda s: s.update(model=torch.zeros(3)), "its model is a Tensor"),
    ("progress a tensor", lambda s: s.update(progress=torch.zeros(3)), "its progress is a Tensor"),
    (
        "a sum of 3 numbers",
        lambda s: s["progress"].update(epoch_loss=torch.zeros(3)),
        "its progress.epoch_loss is a Tensor",
    ),
    ("data a tensor", lambda s: s.update(data=torch.zeros(2)), "its data is a Tensor, not a dict"),
    (
        "an unknown weight",
        lambda s: s["model"].update({"extra.weight": torch.zeros(2)}),
        "the model weights it holds cannot be loaded into the run its config describes (Error(s) "
        "in loading state_dict for MNISTClassifier: Unexpected key(s) in state_dict: "
        '"extra.weight".)',
    ),
    (
        "a weight of another shape",
        lambda s: s["model"].update({"fc1.weight": torch.zeros(2, 2)}),
        "size mismatch for fc1.weight",
    ),
    (
        "two parameter groups",
        extra_group,
        "the optimizer state it holds cannot be loaded into the run its config describes",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), FOREIGN, ids=[f[0] for f in FOREIGN])
def test_a_checkpoint_that_is_not_ours_is_named_in_one_line(
    tmp_path, finished_run, name, change, message
):
    run = changed_copy(finished_run, tmp_path, change)
    before = outputs_of(run)
    with pytest.raises(SettingError) as refusal:
        resume_in_process(run, "loop.epochs=2")
    text = str(refusal.value)
    assert text.startswith(f"loop.resume: {run / checkpoint.FILENAME}") and message in text
    assert text.endswith("Resume only checkpoints mnistlab-train wrote, or start a new run")
    assert "\n" not in text
    assert outputs_of(run) == before


@pytest.mark.slow  # the real CLI
def test_a_foreign_checkpoint_through_the_cli_is_one_line(tmp_path, finished_run):
    run = changed_copy(finished_run, tmp_path, lambda state: state["progress"].pop("epoch"))
    result = run_cli("mnistlab.cli.train", f"loop.resume={run}", cwd=tmp_path, timeout=120)
    assert one_line(result) == (
        f"loop.resume: {run / checkpoint.FILENAME} is not a checkpoint mnistlab can resume: its "
        "progress has no epoch. Resume only checkpoints mnistlab-train wrote, or start a new run"
    )


@pytest.mark.slow  # the real CLI
def test_a_finished_run_asked_for_an_objective_it_lacks_says_so_in_one_line(tmp_path, finished_run):
    result = run_cli(
        "mnistlab.cli.train", f"loop.resume={finished_run}", "objective=test_loss", cwd=tmp_path
    )
    assert one_line(result) == (
        f"objective=test_loss: {finished_run} finished without a test_loss (its metrics.json has "
        "train_loss, train_accuracy, val_loss, val_accuracy): choose one of those, or leave "
        "objective as saved"
    )
    assert metrics_of(finished_run)["status"] == "completed"


# --- dataset folders and IDX files --------------------------------------------------------------


@pytest.mark.slow  # the real CLI
@pytest.mark.parametrize("dataset", ["idx", "mnist"])
def test_a_dataset_root_that_is_a_file_is_one_line(tmp_path, dataset):
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n")
    result = run_cli(
        "mnistlab.cli.train",
        f"dataset={dataset}",
        f"dataset.source.root={file}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert one_line(result) == (
        f"dataset.source.root={file} is a file, not the folder of the dataset's files: point "
        "dataset.source.root at a folder that has them"
    )
    assert file.read_text() == "keep me\n"


@pytest.mark.slow  # the real CLI
def test_idx_images_of_no_pixels_are_one_line_naming_the_file(tmp_path):
    data = tmp_path / "data"
    write_idx_dataset(data, n_train=120, n_test=20)
    write_idx(data / FILES[0], idx_bytes(np.zeros((120, 0, 0))), gz=True)
    result = run_cli(
        "mnistlab.cli.train",
        *IDX_RUN,
        f"dataset.source.root={data}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert one_line(result) == (
        f"{data / FILES[0]}.gz holds images of 0x0 pixels: an image needs at least one: replace "
        "it with a good copy"
    )


def rewrite(root: Path, name: str, array: np.ndarray) -> None:
    write_idx(root / name, idx_bytes(array), gz=True)


DAMAGED = [
    ("no items", {0: np.zeros((0, 12, 10)), 1: np.zeros(0)}, "holds no images"),
    ("counts differ", {1: np.zeros(119)}, "holds 120 images but"),
    ("images of 12x0", {2: np.zeros((20, 12, 0))}, "holds images of 12x0 pixels"),
]


@pytest.mark.parametrize(("name", "files", "message"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_idx_files_that_hold_nothing_to_learn_are_named(tmp_path, name, files, message):
    write_idx_dataset(tmp_path, n_train=120, n_test=20)
    for index, array in files.items():
        rewrite(tmp_path, FILES[index], array)
    with pytest.raises(SettingError, match=message) as refusal:
        idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=20))
    assert str(tmp_path) in str(refusal.value) and "\n" not in str(refusal.value)


def test_mnist_labels_beyond_9_are_named(tmp_path):
    write_idx_dataset(tmp_path, n_train=120, n_test=20)
    rewrite(tmp_path, FILES[3], np.full(20, 12))
    source = dataset_source("mnist", root=str(tmp_path), download=False, checksums=False)
    with pytest.raises(SettingError) as refusal:
        mnist(**source | {"num_val_samples": 20})
    assert str(refusal.value) == (
        f"{tmp_path / FILES[3]}.gz holds the label 12, but this dataset's labels are 0 to 9: "
        "delete it and set dataset.source.download=true to download it again"
    )
    # The idx dataset takes its classes from the files (EMNIST's letters are labelled 1-26).
    assert idx(**dataset_source("idx", root=str(tmp_path), num_val_samples=20)).num_classes == 13
