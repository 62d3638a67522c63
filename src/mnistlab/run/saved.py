"""A run's saved model, opened for mnistlab-evaluate and mnistlab-predict by resume's rules.

Nothing read from the run folder chooses code. The checkpoint is loaded without running any
(mnistlab.run.checkpoint.load); its config may hold plain values only, and call only the
`_target_`s that the config groups on the search path or the command line offer
(mnistlab.run.resume.refuse_code, check_targets); its parts must have the form mnistlab saves.
The command may change the dataset, the device and the precision, and nothing else: the model
and how it was trained are the run's.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError, names
from mnistlab.run import checkpoint, resume

# What a command's overrides may set (a key, or a key below it).
MAY_CHANGE = ("dataset", "device", "loop.precision")


@dataclass(frozen=True)
class Saved:
    """A run's checkpoint, read and checked, and the config to use its model with."""

    folder: Path
    choice: str  # "best" or "final" (names.CHECKPOINTS)
    path: Path  # the checkpoint file
    state: dict[str, Any]
    cfg: DictConfig  # the run's saved config, with the command's overrides applied
    overrides: tuple[str, ...]  # those overrides, as given
    recorded: dict[str, Any] | None  # the run's metrics.json, where it can be read

    @property
    def source(self) -> str:
        """The setting and the file, as messages name them."""
        return f"checkpoint={self.choice}: {self.path}"


def open_run(
    path: Path,
    choice: str,
    composed: DictConfig,
    overrides: Sequence[str],
    sources: Sequence[str],
) -> Saved:
    """Read and check the checkpoint at `path` (`checkpoint=choice`, in its run's folder);
    apply `overrides` to its config.

    `composed` is the config the command line composes (its `_target_`s are offered too);
    `sources` the config groups' places, as Hydra names them (file://..., pkg://...).
    """
    source = f"checkpoint={choice}: {path}"
    with renamed(source):
        state = checkpoint.load(path)
        cfg = resume.saved_config(state, path)
        resume.refuse_code(cfg, source)
        resume.check_targets(cfg, resume.offered_targets(sources, composed), source)
        checkpoint.check_parts(state, path)
    apply(cfg, composed, overrides)
    found = names.recorded_metrics(path.parent)
    return Saved(path.parent, choice, path, state, cfg, tuple(overrides), found)


@contextmanager
def renamed(source: str) -> Iterator[None]:
    """The checkpoint's own messages, which name loop.resume, naming `source` instead."""
    try:
        yield
    except SettingError as error:
        text, setting = str(error), source.partition(":")[0]
        if not text.startswith("loop.resume: "):
            raise
        raise SettingError(f"{setting}: {text.removeprefix('loop.resume: ')}") from None


def apply(cfg: DictConfig, composed: DictConfig, overrides: Sequence[str]) -> None:
    """Set each overridden key (or group) in `cfg` to its value in `composed`; refuse others."""
    for key in (override.partition("=")[0].lstrip("+") for override in overrides):
        if not any(key == part or key.startswith(f"{part}.") for part in MAY_CHANGE):
            raise SettingError(
                f"{key}: only the data, device and precision can change for a saved model "
                "(dataset=..., dataset.source.*, device.*, loop.precision): the model and how it "
                f"was trained are the run's; drop {key}"
            )
        value = OmegaConf.select(composed, key, default=resume.ABSENT)
        if value is resume.ABSENT:
            raise SettingError(f"{key} is not a setting of this run's config: drop it")
        OmegaConf.update(cfg, key, resume.plain(value), merge=False)
