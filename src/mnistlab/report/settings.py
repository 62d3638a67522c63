"""Every setting of a job (its saved config, flattened), and which of them differ between jobs.

Reports that compare jobs, within a sweep or across sweeps, must show every setting that
differs anywhere (a 3-epoch sweep beside a 2-epoch one), fixed values included, and state the
settings all the jobs share. Read from each job's .hydra/config.yaml as plain YAML (nothing in
a job folder chooses code), flattened to dotted keys with values as text.
"""

import json
from typing import Any


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """`{"loop": {"epochs": 2}}` -> `{"loop.epochs": "2"}`; lists as JSON text."""
    if not isinstance(config, dict):
        return {prefix: as_text(config)} if prefix else {}
    found: dict[str, str] = {}
    for key, value in config.items():
        found |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def as_text(value: Any) -> str:
    """A setting's value as the YAML that saved it spells it: null, true, 0.01, [8, 24]."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list):
        return json.dumps(value, default=str, separators=(", ", ": "))
    return str(value)


def value_of(job: Any, key: str) -> str:
    """A job's value for `key` as its saved config spells it (`1e-3` given, `0.001` shown, so
    sweeps that typed it differently compare equal), else as its command line gave it (a
    config group's choice, `optimizer=sgd`, is no setting of the config)."""
    if key in job.settings:
        return job.settings[key]
    return job.overrides.get(key, "")


def differing(jobs: list[Any], keys: list[str]) -> list[str]:
    """The columns that tell `jobs` apart: `keys` (the overridden ones) whose value is not the
    same in every job, then every other setting that differs, except those inside a config
    group that is a column already (`optimizer=sgd,adam` brings its own betas and momentum)."""
    columns = [key for key in keys if len({value_of(job, key) for job in jobs}) > 1]
    every = dict.fromkeys(key for job in jobs for key in job.settings)
    for key in every:
        inside_column = any(key.startswith(f"{column}.") for column in columns)
        varies = len({job.settings.get(key) for job in jobs}) > 1
        if varies and key not in columns and not inside_column:
            columns.append(key)
    return columns


def common(jobs: list[Any]) -> dict[str, str]:
    """The settings that every readable job has, with one value for all of them."""
    readable = [job for job in jobs if job.settings]
    if not readable:
        return {}
    first = readable[0].settings
    return {
        key: value
        for key, value in first.items()
        if all(job.settings.get(key) == value for job in readable[1:])
    }
