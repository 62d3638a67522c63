"""Hydra's internals that mnistlab uses (hydra-core 1.3; capped below 1.4 in pyproject.toml).

Each is looked up when it is used, not when this module loads: Hydra's plugin scan executes
its core plugin modules again, and a class captured before the scan would no longer be the one
Hydra's own code refers to (`super()` inside it then fails).
"""

import importlib
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn

from mnistlab.private import require

# Class paths as `hydra.launcher._target_` / `hydra.sweeper._target_` name them.
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def internal(module: str, name: str) -> Any:
    """`hydra._internal.<module>.<name>` as Hydra has it now."""
    return require(importlib.import_module(f"hydra._internal.{module}"), name, "hydra-core")


def basic_sweeper() -> type:
    """Hydra's basic sweeper class (mnistlab's default sweeper extends it)."""
    return internal("core_plugins.basic_sweeper", "BasicSweeper")


def locate(path: str) -> Any:
    """What a dotted path names (hydra.utils.get_object without its error log lines)."""
    return internal("utils", "_locate")(path)


def split_arguments(overrides: list[Any]) -> list[list[list[str]]]:
    """The basic sweeper's batches of jobs (each a list of overrides) for parsed overrides."""
    return basic_sweeper().split_arguments(overrides, None)


def config_repository_of(sources: Sequence[str]) -> Any:
    """Hydra's config repository over `sources` (`file://...`, `pkg://...`, `structured://`)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the config source plugins (file, pkg, structured)
    search_path = internal("config_search_path_impl", "ConfigSearchPathImpl")()
    for source in sources:
        search_path.append("mnistlab", source)
    return internal("config_repository", "ConfigRepository")(search_path)


def returned(job_return: JobReturn) -> Any:
    """What a job returned or raised (`return_value` would raise a failed job's error)."""
    return require(job_return, "_return_value", "hydra-core")
