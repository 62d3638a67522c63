"""A sweep's size, counted before anything is built: a grid above `sweep.max_jobs` is refused.

Hydra's basic sweeper builds every job's overrides, and mnistlab checks every job's config,
before the first job starts: a tenth of a second a job, and a million jobs would never start.
Counting the values of each swept key is instant (a range is counted, not listed).
"""

import math

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, RangeSweep
from omegaconf import DictConfig

from mnistlab import SettingError
from mnistlab.sweep.naming import preset_params

SAY_FROM = 100  # a grid this big is announced: checking its configs takes a while


def counts(overrides: list[Override]) -> dict[str, int]:
    """Each key's number of values (a later override of a key replaces an earlier one)."""
    found = {}
    for override in overrides:
        value = override.value() if override.is_sweep_override() else None
        if isinstance(value, RangeSweep):
            span = (value.stop - value.start) / value.step
            found[override.get_key_element()] = max(0, math.ceil(span))
        elif override.is_discrete_sweep():
            found[override.get_key_element()] = sum(1 for _ in override.sweep_string_iterator())
        else:
            found[override.get_key_element()] = 1
    return found


def check_size(config: DictConfig) -> None:
    """Refuse a basic sweeper's grid of more than sweep.max_jobs jobs; announce a big one."""
    if not str(config.hydra.sweeper._target_).endswith("BasicOnceSweeper"):
        return  # Optuna's trials are counted by its n_trials
    arguments = [*config.hydra.overrides.task, *preset_params(config)]
    parser = OverridesParser.create()
    per_key = counts(parser.parse_overrides(arguments))
    jobs = math.prod(per_key.values())
    limit = config.sweep.max_jobs
    if jobs > limit:
        sizes = " x ".join(f"{count:,} {key}" for key, count in per_key.items() if count > 1)
        raise SettingError(
            f"this sweep has {jobs:,} jobs ({sizes}), more than sweep.max_jobs={limit}: sweep "
            f"fewer values, or allow it with sweep.max_jobs={jobs}"
        )
    if jobs >= SAY_FROM:
        print(f"a sweep of {jobs:,} jobs: each job's config is checked before the first starts")
