"""mnistlab's SLURM launcher (conf/hydra/launcher/slurm.yaml); the logic is in mnistlab.sweep.slurm.

Hydra instantiates launchers only from the `hydra_plugins` package, hence this module.
"""

from typing import Any

from hydra.types import TaskFunction

from mnistlab.sweep import slurm

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # without the launchers extra there is nothing to extend (and no warning)
    SubmititSlurmLauncher = None

if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        """Hydra's submitit SLURM launcher, whose requeued jobs resume from their checkpoint."""

        def __call__(self, sweep_overrides: list[str], *args: Any) -> Any:
            """Run the job as one task of its SLURM job; tasks other than 0 write no files."""
            return super().__call__([*sweep_overrides, *slurm.task_overrides()], *args)

        def setup(self, *, task_function: TaskFunction, **kwargs: Any) -> None:
            super().setup(task_function=slurm.PreemptibleTask(task_function), **kwargs)

        def checkpoint(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, *args):
            """Called by submitit on SIGUSR2: the same job again, resuming where it stopped."""
            import submitit

            overrides = slurm.requeued_overrides(sweep_overrides, job_num)
            return submitit.helpers.DelayedSubmission(self, overrides, job_dir_key, job_num, *args)
