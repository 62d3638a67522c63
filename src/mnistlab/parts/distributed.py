"""Data-parallel training under torchrun: who this process is, and what the ranks agree on.

torchrun starts one process per rank with RANK, WORLD_SIZE and LOCAL_RANK set. Every rank
runs the same Hydra app, so the run folder must not come from each rank's own clock: `cli()`
joins the process group before Hydra starts and rank 0's start time names the folder for all.
Rank 0 alone writes the log file, TensorBoard, checkpoints and metrics.json.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mnistlab import SettingError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks; a single process is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The average of `tensor` over all ranks (itself, for one process)."""
        if self.size == 1:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is True on any rank."""
        if self.size == 1:
            return flag
        tensor = torch.tensor(float(flag), device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


SINGLE = World()


def world() -> World:
    """Read the rank layout torchrun puts in the environment."""
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))),
    )


def adopt_slurm() -> None:
    """In a multi-task SLURM job from Hydra's submitit launcher, set what torchrun would set.

    Every task runs the Hydra job with the launcher's already-resolved config, so they share
    the run folder; they only need RANK, WORLD_SIZE, MASTER_ADDR, ... to meet.
    """
    many_tasks = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if "RANK" in os.environ or not many_tasks or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment  # the submitit launcher brings it

    # Keep every GPU visible: the device is chosen by LOCAL_RANK (mnistlab.parts.device).
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def join() -> datetime.datetime | None:
    """Join the process group (gloo on CPU, nccl for CUDA tensors); rank 0's clock, shared.

    None where this process has joined already (torchrun's ranks join in `mnistlab.cli.train`).
    """
    if dist.is_initialized():
        return None
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    stamp = [datetime.datetime.now()]
    dist.broadcast_object_list(stamp, src=0)
    return stamp[0]


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_devices(device: torch.device, layout: World) -> None:
    """Refuse more CUDA ranks on a node than it has GPUs."""
    if device.type == "cuda" and layout.local_size > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise SettingError(
            f"device=cuda with {layout.local_size} ranks per node but only {gpus} GPU(s): "
            f"use torchrun --nproc_per_node={gpus} or device=cpu"
        )
