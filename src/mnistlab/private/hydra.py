"""Hydra's internals that mnistlab uses (hydra-core 1.3; capped below 1.4 in pyproject.toml)."""

from collections.abc import Sequence
from typing import Any

import hydra._internal.config_repository as config_repository
import hydra._internal.config_search_path_impl as search_path_impl
import hydra._internal.core_plugins.basic_sweeper as basic_sweeper
import hydra._internal.utils as internal_utils
from hydra.core.utils import JobReturn

from mnistlab.private import require

# Class paths as `hydra.launcher._target_` / `hydra.sweeper._target_` name them.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"

# Hydra's basic sweeper: mnistlab's default sweeper extends it.
BasicSweeper = require(basic_sweeper, "BasicSweeper", "hydra-core")
ConfigRepository = require(config_repository, "ConfigRepository", "hydra-core")
ConfigSearchPathImpl = require(search_path_impl, "ConfigSearchPathImpl", "hydra-core")
_locate = require(internal_utils, "_locate", "hydra-core")


def locate(path: str) -> Any:
    """What a dotted path names (hydra.utils.get_object without its error log lines)."""
    return _locate(path)


def split_arguments(overrides: list[Any]) -> list[list[list[str]]]:
    """The basic sweeper's batches of jobs (each a list of overrides) for parsed overrides."""
    return BasicSweeper.split_arguments(overrides, None)


def config_repository_of(sources: Sequence[str]) -> Any:
    """Hydra's config repository over `sources` (`file://...`, `pkg://...`, `structured://`)."""
    search_path = ConfigSearchPathImpl()
    for source in sources:
        search_path.append("mnistlab", source)
    return ConfigRepository(search_path)


def returned(job_return: JobReturn) -> Any:
    """What a job returned or raised (`return_value` would raise a failed job's error)."""
    return require(job_return, "_return_value", "hydra-core")
