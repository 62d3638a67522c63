"""Resuming a run: what a checkpoint's config may call, and what a resuming command may change.

Security. A checkpoint, like every file in a run folder, is data: whoever can write it must
not be able to choose code that runs. `weights_only` loading keeps its pickle from running
code, but the config inside would still pick code once `instantiate` builds it (a
`dataset.source` of `{_target_: builtins.open, file: ..., mode: w}` truncates a file). So,
before anything is imported or built (checks.check imports each `_target_` to read its
signature), the saved config must be:
- plain values: YAML read with a safe loader, no `${...}` interpolation (a resolver is code),
  no `hydra:` section, and of `instantiate`'s special keys only `_target_` (mnistlab never
  writes `_args_`, `_partial_`, `_recursive_` or `_convert_`);
- asking only for what this installation offers: every `_target_` in it, nested ones
  included, must be the `_target_` of some option of the current config groups (read with
  Hydra's own config repository over the command's search path, so `--config-dir` groups
  count), or one the resuming command's own config names. Anything else is refused in one line.
Why an allow list rather than re-composing the run from its saved overrides: those are a file
in the run folder too (`.hydra/overrides.yaml`, absent beside a copied checkpoint), and a
`dataset.source._target_=...` in them would be obeyed by a composition all the same. An allow
list is needed either way, and with it the saved config stays the exact record of the run.

Contract. The saved config is the base. The resuming command's explicit overrides (Hydra's
`overrides.task` less `loop.resume`; from Python, the `overrides` argument) apply on top,
compared leaf by leaf with the saved values. A change to a setting in
`mnistlab.config.changeable.RESUME_MAY_CHANGE` (it does not change what the checkpoint is) is
applied, logged, and recorded in metrics.json's `resumes`; any other change stops the run in
one line naming the key, the saved and the new value. A group choice (`device=cpu`) brings that
option's settings, as on a fresh command line.

Data. Where the data lives may change (`dataset.source.root`: moved files); what it is may not.
The checkpoint records the data's fingerprint (mnistlab.data.splits.fingerprint) and source;
once the data has loaded, a resume on data with another fingerprint is refused in one line
naming both (`check_data`). A checkpoint from before fingerprints is resumed unchecked.

Limits. Everything in a checkpoint is checked before it is used: the config's YAML is read
without aliases and no deeper or longer than a run's config can be (checkpoint.check_yaml),
each part must have the form mnistlab saves (checkpoint.check_parts), and a part that does not
fit the run is named in one line (checkpoint.restore).
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnistlab import SettingError, names
from mnistlab.config import changeable, checks, shipped
from mnistlab.names import COMPLETED, PRUNED, recorded_metrics
from mnistlab.parts import schedulers
from mnistlab.private import hydra as hydra_private
from mnistlab.private import omegaconf as omegaconf_private
from mnistlab.run import checkpoint

log = logging.getLogger(__name__)

# Where a Python caller's config groups live (mnistlab-train passes Hydra's own search path).
DEFAULT_SOURCES = (f"file://{names.CONF_DIR}", "structured://")
# A schedule over the whole run (schedulers.WHOLE_RUN) is made from these.
SET_BY_SCHEDULE = ("loop.epochs", "optimizer.lr")
# Switching these on from 0 needs optimizer state (a momentum buffer) the checkpoint lacks.
NEEDS_STATE = ("optimizer.momentum",)
INSTANTIATE_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")
FINGERPRINT_SHOWN = 16  # hex digits of a data fingerprint shown in a message


class Absent:
    """A setting the saved or the new config does not have."""

    def __repr__(self) -> str:
        return "unset"

    def __bool__(self) -> bool:
        return False


ABSENT = Absent()


@dataclass(frozen=True)
class Change:
    """One setting the resuming command changes."""

    key: str
    saved: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}={show(self.new)}"


@dataclass
class Resume:
    """A run to continue: its checkpoint, its folder, the config it continues with."""

    state: dict[str, Any]
    folder: Path
    cfg: DictConfig
    changes: list[Change]
    finished: dict[str, Any] | None  # a completed run's metrics, when no epochs are left
    path: Path | None = None  # the checkpoint file, named in messages


def prepare(cfg: DictConfig, overrides: Sequence[str], sources: Sequence[str]) -> Resume:
    """Load the checkpoint `loop.resume` names and apply the allowed overrides to its config."""
    path = checkpoint.find(cfg.loop.resume)
    checkpoint.remove_stale(path.parent)  # temporaries of killed writers
    state = checkpoint.load(path)
    saved = saved_config(state, path)
    refuse_code(saved, f"loop.resume: {path}")
    check_targets(saved, offered_targets(sources, cfg), f"loop.resume: {path}")
    checkpoint.check_parts(state, path)  # after the config: what it may call is said first
    keys = explicit_keys(overrides)
    changes = list({c.key: c for key in keys for c in changes_at(saved, cfg, key)}.values())
    # A changed `_target_` is the change to report: dataset=... first names the dataset.
    for change in sorted(changes, key=lambda change: not change.key.endswith("._target_")):
        check_allowed(change, saved.scheduler._target_)
    for key in keys:
        OmegaConf.update(saved, key, plain(OmegaConf.select(cfg, key)), merge=False)
    check_epochs(saved.loop.epochs, state["progress"]["epoch"])
    # Early stopping or a target ends a run; a pruned run trains on when resumed.
    stopped = state["progress"].get("stop_reason") not in (None, PRUNED)
    done = finished(path.parent, state["progress"]["epoch"], saved.loop.epochs, stopped)
    if done is None:
        applied = ", ".join(map(str, changes)) or "its saved config unchanged"
        log.info("resuming %s with %s", path.parent, applied)
    else:
        check_objective(saved.objective, done, path.parent)
    return Resume(state, path.parent, saved, changes, done, path)


def saved_config(state: dict[str, Any], path: Path) -> DictConfig:
    """A checkpoint's config, with the sections older mnistlab versions did not save yet."""
    saved = checkpoint.config_of(state, path)
    if "scheduler" not in saved:  # saved before schedules existed: it trained without one
        saved.scheduler = schedulers.NONE
    if "sweep" not in saved:  # saved before the sweep settings existed: the shipped ones
        saved.sweep = shipped.option("sweep", "default")
    return saved


def check_objective(objective: str, metrics: dict[str, Any], folder: Path) -> None:
    """A finished run answers with its objective's value: refuse one its metrics do not hold."""
    if objective not in metrics:
        figures = ", ".join(key for key in metrics if key.startswith(("val_", "test_", "train_")))
        raise SettingError(
            f"objective={objective}: {folder} finished without a {objective} (its metrics.json "
            f"has {figures or 'no figures'}): choose one of those, or leave objective as saved"
        )


def check_data(resumed: Resume, now: dict[str, str]) -> None:
    """Refuse to go on with other data than the run was trained on, naming both.

    `now` is what the data is: its fingerprint and source (mnistlab.run.build.data_record).
    A checkpoint saved before fingerprints were recorded is resumed unchecked.
    """
    saved = resumed.state.get("data")
    if saved is None:
        log.info("%s has no data fingerprint (an older mnistlab's): not checked", resumed.path)
        return
    if saved.get("fingerprint") == now["fingerprint"]:
        return
    old = f"{saved.get('source')} (fingerprint {str(saved.get('fingerprint'))[:FINGERPRINT_SHOWN]})"
    new = f"{now['source']} (fingerprint {now['fingerprint'][:FINGERPRINT_SHOWN]})"
    raise SettingError(
        f"loop.resume: {resumed.path} was trained on {old}, but the data is now {new}: it "
        "would go on with other data. Resume with the data it was trained on, or start a new run"
    )


def carry_on(optimizer: torch.optim.Optimizer, changes: list[Change]) -> None:
    """After the checkpoint is restored: apply the changed optimizer settings."""
    for change in changes:
        section, _, name = change.key.partition(".")
        if section == "optimizer":  # loading the checkpoint restored the saved values
            value = tuple(change.new) if isinstance(change.new, list) else change.new
            for group in optimizer.param_groups:
                group[name] = value


def check_targets(saved: DictConfig, offered: set[str], source: str) -> None:
    """Refuse a `_target_` that no config group of this installation offers."""
    for where, target in targets_in(OmegaConf.to_container(saved)):
        if target not in offered:
            raise SettingError(
                f"{source} asks to call {where}={target}, which no config group of this "
                "installation offers: refused for safety, nothing was run. Resume only "
                "checkpoints mnistlab-train wrote; if you trust that target, name it on the "
                "command line, or pass the --config-dir that offers it"
            )


def refuse_code(node: DictConfig | ListConfig, source: str, path: str = "") -> None:
    """Refuse anything in a saved config that could do more than hold a value."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        where = f"{path}[{key}]" if isinstance(node, ListConfig) else f"{path}.{key}".lstrip(".")
        if OmegaConf.is_interpolation(node, key):
            raise SettingError(
                f"{source}: its config has an interpolation at {where}: a checkpoint's config "
                "holds plain values only; refused for safety, nothing was run"
            )
        if key in INSTANTIATE_KEYS or where == "hydra":
            raise SettingError(
                f"{source}: its config sets {where}, which mnistlab never writes into a run's "
                "config; refused for safety, nothing was run"
            )
        child = omegaconf_private.child(node, key)
        if isinstance(child, DictConfig | ListConfig):
            refuse_code(child, source, where)
    if not path:
        missing = [section for section in checks.SECTIONS if section not in node]
        if missing:
            raise SettingError(f"{source}: its config has no {missing[0]}: not an mnistlab run")


def targets_in(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(where, target) for every `_target_` in a plain container, nested ones included."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        where = f"{path}[{key}]" if isinstance(node, list) else f"{path}.{key}".lstrip(".")
        if key == "_target_":
            yield where, value
        yield from targets_in(value, where)


def offered_targets(sources: Sequence[str], cfg: DictConfig) -> set[str]:
    """Every `_target_` of every option in the config groups on `sources`, and of `cfg`."""
    repository = hydra_private.config_repository_of(sources)
    offered = {target for _, target in targets_in(OmegaConf.to_container(cfg))}
    for option in options(repository, ""):
        loaded = repository.load_config(option)
        if loaded is not None:
            node = OmegaConf.to_container(loaded.config)
            if isinstance(node, dict):
                node.pop("hydra", None)  # Hydra's own settings: never part of a run's config
            offered |= {target for _, target in targets_in(node)}
    return {target for target in offered if isinstance(target, str)}


def options(repository: Any, group: str) -> Iterator[str]:
    """Every config under `group` ("model/cnn", "train", ...), Hydra's own groups left out."""
    for name in repository.get_group_options(group, ObjectType.CONFIG):
        yield f"{group}/{name}".lstrip("/")
    for name in repository.get_group_options(group, ObjectType.GROUP):
        subgroup = f"{group}/{name}".lstrip("/")
        if subgroup != "hydra":
            yield from options(repository, subgroup)


def explicit_keys(overrides: Sequence[str]) -> list[str]:
    """The keys and groups a command sets explicitly, less loop.resume and Hydra's own."""
    keys = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "loop.resume" or key.startswith("hydra"):
            continue
        if override.is_delete() or override.package:
            raise SettingError(
                f"{override.input_line}: a resumed run takes plain settings (key=value or "
                "group=option), not deletions or packages"
            )
        keys.append(key)
    return keys


def changes_at(saved: DictConfig, cfg: DictConfig, key: str) -> Iterator[Change]:
    """Each leaf setting under `key` whose value in `cfg` differs from the saved one."""
    new = OmegaConf.select(cfg, key, default=ABSENT)
    if new is ABSENT:  # e.g. experiment=...: a preset is no single setting of the run
        raise SettingError(
            f"{key}: a resumed run can change single settings only (e.g. loop.epochs=5), and "
            f"{key} is none of them"
        )
    before = leaves(plain(OmegaConf.select(saved, key, default=ABSENT)), key)
    after = leaves(plain(new), key)
    for leaf in dict.fromkeys([*before, *after]):
        if leaf == "loop.resume":  # what this command resumes, not a setting of the run
            continue
        old, value = before.get(leaf, ABSENT), after.get(leaf, ABSENT)
        if old != value:
            yield Change(leaf, old, value)


def check_allowed(change: Change, scheduler: str) -> None:
    """Refuse a change that would make the checkpoint mean something else."""
    saved, new = show(change.saved), show(change.new)
    if change.key in SET_BY_SCHEDULE and scheduler in schedulers.WHOLE_RUN:
        name = scheduler.rsplit(".", 1)[-1]
        raise SettingError(
            f"{change.key} cannot change when resuming a run with scheduler={name} (saved "
            f"{saved}, given {new}): its schedule follows from both. Resume without it, or "
            "start a new run"
        )
    if not changeable.matches(change.key, changeable.RESUME_MAY_CHANGE):
        raise SettingError(
            f"{change.key} cannot change when resuming (saved {saved}, given {new}): the "
            "checkpoint holds a run made with the saved value. Resume without it, or start a "
            "new run"
        )
    if change.key in NEEDS_STATE and not change.saved and change.new:
        raise SettingError(
            f"{change.key} cannot be switched on when resuming (saved {saved}, given {new}): "
            "the checkpoint has no optimizer state for it. Start a new run"
        )


def check_epochs(epochs: int, done: int) -> None:
    if epochs < done:
        raise SettingError(
            f"loop.epochs={epochs} is fewer than the {done} epochs this run has trained: give "
            f"loop.epochs={done} or more"
        )


def finished(folder: Path, done: int, epochs: int, stopped: bool) -> dict[str, Any] | None:
    """A completed run's metrics, saying so in one line; None while there is work left."""
    if done < epochs and not stopped:
        return None
    metrics = recorded_metrics(folder)  # unreadable: finish the run again (test, metrics)
    if metrics is None or metrics.get("status") != COMPLETED:
        return None
    if stopped:
        log.warning("%s stopped already (%s): nothing changed", folder, metrics.get("stop_reason"))
        return metrics
    log.warning(
        "%s finished all its %d epochs already: nothing changed (loop.epochs=<more> trains on)",
        folder,
        done,
    )
    return metrics


def plain(value: Any) -> Any:
    """A config node as plain Python values (interpolations of the command's config resolved)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def leaves(value: Any, prefix: str) -> dict[str, Any]:
    """{"device.name": "cpu", ...}: a nested dict's values by dotted key; a list is one value."""
    if not isinstance(value, dict):
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, child in value.items():
        found |= leaves(child, f"{prefix}.{key}")
    return found


def show(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(show(item) for item in value) + "]"
    return str(value)
