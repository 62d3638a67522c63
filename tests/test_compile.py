"""loop.compile: a torch.compile'd model trains like the eager one, checkpoints and resumes."""

import pytest
import torch

from mnistlab.cli import api
from mnistlab.run import checkpoint

TINY = (
    "dataset=random",
    "dataset.source.num_samples=8",  # two full batches of 4: one shape to compile
    "device.threads=1",
    "loop.log_every_n_batches=1",
)


# Slow: torch.compile builds C++ kernels on first use. This whole test took 17 s of CPU time
# on the 2-core AMD EPYC VM with a cold cache (/tmp/torchinductor_<user>), 7 s with a warm one.
@pytest.mark.slow
def test_a_compiled_model_trains_checkpoints_and_resumes(tmp_path):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    first = api.train([*TINY, "loop.compile=true", "loop.epochs=1"], out_dir=tmp_path / "run")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    saved = checkpoint.load(first.run_dir / "checkpoint.pt")["model"]
    assert saved and not any("_orig_mod" in key for key in saved)  # the eager model's keys
    resumed = api.train(
        [*TINY, "loop.compile=true", "loop.epochs=2", f"loop.resume={first.run_dir}"],
        out_dir=tmp_path / "unused",
    ).metrics
    eager = api.train([*TINY, "loop.epochs=2"], out_dir=tmp_path / "eager").metrics
    assert resumed["steps"] == eager["steps"] == 4
    assert resumed["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-5)
    assert resumed["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-5)
