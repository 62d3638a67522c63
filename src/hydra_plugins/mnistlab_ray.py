"""mnistlab's Ray launcher (conf/hydra/launcher/ray.yaml); the logic is in mnistlab.sweep.ray.

Hydra instantiates launchers only from the `hydra_plugins` package, hence this module. It
loads on every start (Hydra's plugin scan), so Ray itself is imported only once a Ray sweep
connects. Why not Hydra's hydra-ray-launcher: docs/ray.md.
"""

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from mnistlab.sweep import ray as ray_sweep


class RayLauncher(Launcher):
    """Each job of the sweep as one Ray task; Ctrl-C stops them all at a step boundary."""

    def __init__(self, ray: DictConfig) -> None:
        self.ray = ray  # init: ray.init's arguments; remote: ray.remote's options
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None
        self.remote: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Before the sweep starts: check the task options, join the cluster (one line each)."""
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.remote = ray_sweep.remote_task(self.ray.remote)
        ray_sweep.connect(self.ray.init)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.hydra_context is not None and self.config is not None  # set up by Hydra
        assert self.task_function is not None
        return ray_sweep.launch(
            self.hydra_context,
            self.config,
            self.task_function,
            self.remote,
            job_overrides,
            initial_job_idx,
        )
