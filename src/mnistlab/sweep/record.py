"""What defines a sweep, recorded in its folder, so that a re-run there continues that sweep only.

When a sweep starts in a folder that holds no sweep, `sweep.yaml` is written there: the
overrides that define it (the command line's, in the order given, less
mnistlab.config.changeable.RERUN_MAY_DIFFER), a preset's `hydra.sweeper.params`, the sweeper
and its `n_trials`. Re-running into the folder (`hydra.sweep.dir=<it>`) compares the command
with the record before any job starts: the same sweep continues (mnistlab.sweep.rerun), any
other is refused in one line naming what differs. A folder whose jobs hold runs but that has no
record (a sweep of an older mnistlab-train) is refused the same way. `loop.overwrite=true`
replaces whatever the folder holds.

Security: the record is data. It is read with a safe YAML loader and only compared with the
command's own definition; nothing in it is run, instantiated or handed to Hydra.
Kept free of torch: it runs in the sweep's process before any job.
"""

import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from mnistlab import SettingError
from mnistlab.config import changeable
from mnistlab.files import load_yaml, read_inside, write_text
from mnistlab.names import HYDRA_SWEEP_FILE, SWEEP_CONTEXT_FILE, SWEEP_RECORD_FILE
from mnistlab.private import hydra as hydra_private
from mnistlab.run import rundir
from mnistlab.sweep import naming

log = logging.getLogger(__name__)
UNSET = "unset"
BASIC_SWEEPER = hydra_private.BASIC_SWEEPER
# mnistlab's default sweeper (hydra_plugins/mnistlab_sweeper.py): Hydra's basic sweeper,
# composing less, and replacing a folder (loop.overwrite=true) only once Hydra's check of the
# grid has passed (`overwrite`), so that a typo in the grid leaves the old sweep as it was.
OUR_SWEEPER = "hydra_plugins.mnistlab_sweeper.BasicOnceSweeper"
SAME_SWEEPER = {OUR_SWEEPER: BASIC_SWEEPER}  # sweepers that sweep alike, known by one name


def sweeper_of(config: DictConfig) -> str:
    """The sweeper `config` sweeps with (`hydra.sweeper._target_`), by its one name."""
    sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_"))
    return SAME_SWEEPER.get(sweeper, sweeper)


def may_differ(key: str) -> bool:
    """Whether a re-run of a sweep may give the setting `key` another value."""
    return changeable.matches(key, changeable.RERUN_MAY_DIFFER)


def definition(config: DictConfig) -> dict[str, Any]:
    """What defines the sweep `config` starts: the record's contents, less the command."""
    overrides, params = config.hydra.overrides.task, naming.preset_params(config)
    return {
        "sweeper": sweeper_of(config),
        "n_trials": OmegaConf.select(config, "hydra.sweeper.n_trials"),
        "overrides": defining(overrides),
        "params": defining(params),
        # The order of the sweeps numbers the jobs (the sweeper takes the preset's first).
        "swept": list(defining([*params, *overrides], swept=True)),
    }


def defining(overrides: Any, swept: bool = False) -> dict[str, str]:
    """{key: value text} of the overrides that define a sweep (`swept`: its sweeps only)."""
    found = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if may_differ(key) or (swept and not override.is_sweep_override()):
            continue
        try:  # a choice or range as its values, so `0.1, 0.01` and `0.1,0.01` are the same
            if override.is_sweep_override():
                value = ",".join(override.sweep_string_iterator())
            else:
                value = override.get_value_element_as_str()
        except HydraException:  # interval(), glob(): the text as given
            value = override.input_line.partition("=")[2].strip()
        found[key] = value
    return found


def differences(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """What differs between two definitions, as `key: <saved> there, <given> here`."""
    found = []
    for name, key in (("sweeper", "hydra.sweeper"), ("n_trials", "hydra.sweeper.n_trials")):
        if saved.get(name) != given[name]:
            found.append(f"{key}: {saved.get(name)} there, {given[name]} here")
    for name, prefix in (("overrides", ""), ("params", "hydra.sweeper.params.")):
        old, new = saved.get(name) or {}, given[name]
        for key in dict.fromkeys([*old, *new]):
            if old.get(key) != new.get(key):
                there, here = old.get(key, UNSET), new.get(key, UNSET)
                found.append(f"{prefix}{key}: {there} there, {here} here")
    old, new = saved.get("swept") or [], given["swept"]
    if not found and old != new:  # the same sweeps in another order: other job numbers
        found.append(f"the order of the swept keys: {', '.join(old)} there, {', '.join(new)} here")
    return found


def read(path: Path) -> dict[str, Any]:
    """A sweep's record, as plain data; SettingError where it cannot be one."""
    try:
        record = load_yaml(read_inside(path.parent, path.name))
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: Refused, bad bytes
        reason = (str(error).splitlines() or [type(error).__name__])[0]  # one line
        why = f"its {SWEEP_RECORD_FILE} cannot be read: {reason}"
        raise SettingError(refusal(path.parent, why)) from None
    if not has_record_shape(record):
        raise SettingError(refusal(path.parent, f"its {SWEEP_RECORD_FILE} is not a sweep's record"))
    return record


def has_record_shape(record: Any) -> bool:
    """Whether `record` is what `write` writes: texts for each override, param and swept key."""
    if not isinstance(record, dict):
        return False
    tables = [record.get("overrides"), record.get("params")]
    swept = record.get("swept") or []
    return (
        all(isinstance(table, dict) and texts([*table, *table.values()]) for table in tables)
        and isinstance(swept, list)
        and texts(swept)
    )


def texts(items: list[Any]) -> bool:
    """Whether every item is a str (what a record holds, never nested data)."""
    return all(isinstance(item, str) for item in items)


def write(path: Path, given: dict[str, Any]) -> None:
    """Record the sweep's definition, with the command that started it (for people to read)."""
    header = (
        "# What defines this sweep: mnistlab-train continues it only for a command that gives\n"
        "# the same (read as data, only compared). `command` is how it was started.\n"
    )
    record = {"command": ["mnistlab-train", *sys.argv[1:]], **given}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, header + yaml.safe_dump(record, sort_keys=False))


def refusal(sweep: Path, reason: str, continuable: bool = False) -> str:
    """The one line that refuses a sweep aimed at `sweep`: why, and the ways on."""
    same = "run the same sweep to continue it, " if continuable else ""
    return (
        f"hydra.sweep.dir={sweep} {reason}: {same}choose another hydra.sweep.dir, or replace "
        "it with loop.overwrite=true"
    )


def holds_jobs(sweep: Path) -> bool:
    """Whether some job folder of `sweep` holds a run (a checkpoint, metrics or events)."""
    return sweep.is_dir() and any(job.is_dir() and rundir.holds_run(job) for job in sweep.iterdir())


def single_run(sweep: Path) -> Path | None:
    """A folder in `sweep` where Hydra recorded a single run (mode RUN, no -m), if there is one."""
    for folder in sweep.iterdir():
        try:
            if load_yaml(read_inside(folder, ".hydra", "hydra.yaml"))["hydra"]["mode"] == "RUN":
                return folder
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
            continue  # not a run's folder, or not one Hydra wrote
    return None


def check(sweep: Path, config: DictConfig) -> None:
    """Before any job: continue the sweep recorded in `sweep`, refuse another, record a new one."""
    given, path = definition(config), sweep / SWEEP_RECORD_FILE
    single = None if path.exists() else single_run(sweep)
    if single is not None:  # loop.overwrite=true would remove it: only a sweep's jobs are
        raise SettingError(
            f"hydra.sweep.dir={sweep} holds runs of mnistlab-train without -m ({single.name}), "
            "not a sweep: choose another hydra.sweep.dir"
        )
    if config.loop.overwrite:
        if OmegaConf.select(config, "hydra.sweeper._target_") == OUR_SWEEPER:
            return  # replaced by `overwrite` once Hydra has checked the grid
        replace(sweep)
    elif path.exists():
        found = differences(read(path), given)
        if not found:
            return  # the same sweep: its record stays as it was written
        if holds_jobs(sweep):
            why = f"holds another sweep ({'; '.join(found)})"
            raise SettingError(refusal(sweep, why, continuable=True))
        # Recorded, then stopped before any job ran (Hydra refused a value of the grid, say):
        # nothing to continue or to lose. The corrected command takes the folder.
        log.warning("%s: its sweep ran no job (%s); recording this one", sweep, "; ".join(found))
        replace(sweep)
    elif holds_jobs(sweep):
        raise SettingError(
            refusal(sweep, f"holds a sweep with no {SWEEP_RECORD_FILE} (an older mnistlab-train's)")
        )
    write(path, given)


def replace(sweep: Path) -> None:
    """loop.overwrite=true: remove the record and what each job wrote, in the sweep folder."""
    if not sweep.is_dir():
        return
    (sweep / SWEEP_RECORD_FILE).unlink(missing_ok=True)
    for job in sweep.iterdir():
        if job.is_symlink():
            continue  # what a link points at lies outside the sweep: never removed from here
        if job.is_dir() and (rundir.holds_run(job) or (job / ".hydra").is_dir()):
            rundir.remove_outputs(job)  # the new sweep may not make it again: no empty row


def overwrite(sweep: Path, config: DictConfig) -> None:
    """loop.overwrite=true, once the grid passed Hydra's check: this sweep takes the folder."""
    replace(sweep)
    write(sweep / SWEEP_RECORD_FILE, definition(config))


def forget(sweep: Path) -> None:
    """Hydra refused the grid before any job ran: remove the records, and the folder if empty."""
    if holds_jobs(sweep):
        return  # an earlier batch's jobs ran: the sweep stays continuable
    for name in (SWEEP_RECORD_FILE, HYDRA_SWEEP_FILE, SWEEP_CONTEXT_FILE):
        (sweep / name).unlink(missing_ok=True)
    if sweep.is_dir() and not any(sweep.iterdir()):
        sweep.rmdir()
