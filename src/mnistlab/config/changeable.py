"""The one list of settings that a resumed run, or a sweep re-run into its folder, may change.

A sweep re-run may give only settings that change no job's results (`RERUN_MAY_DIFFER`); a
resume may also change the recipe from here on (`RESUME_MAY_CHANGE`): none of them changes
what the checkpoint's weights and state are. Patterns as fnmatch reads them.
"""

from fnmatch import fnmatchcase

# Where the data lives and how it is read: a resumed run or a re-run sweep may change these.
WHERE_DATA_LIVES = (
    "dataset.source.root",
    "dataset.source.mirrors",
    "dataset.source.download",
    "dataset.source.download_deadline_s",
    "dataset.source.checksums",
    "dataset.source.md5",
    "dataset.source.md5.*",
    "dataset.loader.num_workers",
)

# Where and how a run computes and what it logs: never what it learns.
HARMLESS = (
    "sweep.retry_failed",
    "sweep.name",
    "loop.overwrite",
    "loop.log_every_n_batches",
    "loop.checkpoint_every_n_steps",
    "device",
    "device.*",
    *WHERE_DATA_LIVES,
)
# A sweep's jobs take these from the command that re-runs it; Hydra's own settings
# (hydra.sweep.dir, hydra/launcher, hydra.launcher.*) are not task overrides at all.
RERUN_MAY_DIFFER = HARMLESS
RESUME_MAY_CHANGE = (
    *HARMLESS,
    "objective",
    "loop.epochs",
    "loop.grad_clip_norm",
    "loop.nan_policy",
    "loop.early_stopping.*",
    "loop.target.*",
    "loop.eval_every_n_steps",
    "loop.test_on",
    "loop.compile",
    "sweep.*",  # how a sweep treats the job: retrying, pruning
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.alpha",
    "optimizer.momentum",
    "optimizer.dampening",
    "optimizer.nesterov",
)


def matches(key: str, patterns: tuple[str, ...]) -> bool:
    """Whether the setting `key` (a `+`/`~` prefix ignored) is one of `patterns`."""
    return any(fnmatchcase(key.lstrip("+~"), pattern) for pattern in patterns)
