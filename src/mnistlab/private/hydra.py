"""Hydra's internals that mnistlab uses (hydra-core 1.3; capped below 1.4 in pyproject.toml).

Each is looked up when it is used, not when this module loads: Hydra's plugin scan executes
its core plugin modules again, and a class captured before the scan would no longer be the one
Hydra's own code refers to (`super()` inside it then fails).
"""

import argparse
import copy
import importlib
import os
from collections.abc import Callable, Sequence
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


def command_line(argv: Sequence[str]) -> argparse.Namespace | None:
    """A command line as Hydra's own parser reads it (its overrides, config name...); None for
    --version, which that parser would answer itself."""
    if "--version" in argv:
        return None
    parser = internal("utils", "get_args_parser")()
    return parser.parse_known_args(list(argv))[0]


def report_errors(translate: Callable[[Exception], str | None]) -> None:
    """Have Hydra end on an error that `translate` puts in one line with that line (exit 1).

    Hydra catches what composing or running the config raises and prints it itself, with
    OmegaConf's details and a HYDRA_FULL_ERROR hint (`hydra._internal.utils.run_and_report`),
    before any code of ours runs; `_run_hydra` looks the function up by name at each call, so
    a wrapper put in its place sees the error first. HYDRA_FULL_ERROR=1 keeps Hydra's traceback.
    """
    utils = importlib.import_module("hydra._internal.utils")
    hydras = getattr(require(utils, "run_and_report", "hydra-core"), "hydras", None)
    original = hydras or utils.run_and_report  # installed twice: still one wrapper

    def run_and_report(func: Callable[[], Any]) -> Any:
        def translated() -> Any:
            try:
                return func()
            except Exception as error:
                line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else translate(error)
                if line is None:
                    raise
                raise SystemExit(line) from None

        return original(translated)

    run_and_report.hydras = original  # type: ignore[attr-defined]
    utils.run_and_report = run_and_report


class SharedRepository:
    """A config loader's repository whose parsed files every job of a sweep shares.

    For each job it composes, Hydra wraps its repository in a fresh `CachingConfigRepository`,
    which deep-copies it, then reads and parses every config file again: about 0.1 s of the
    0.28 s a job of mnistlab's config took to compose. Here the deep copy returns this same
    object and each file is parsed once a sweep; every load hands out its own deep copy, since
    Hydra may change what it gets. A search path set for a job (`hydra.searchpath`) leaves the
    sharing: that job's copy gets a repository of its own, as Hydra's would.
    """

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate
        self.parsed: dict[str, Any] = {}
        self.merged: dict[tuple, Any] = {}  # by defaults list: what `MergedOnce` merged

    def __deepcopy__(self, memo: dict) -> "SharedRepository":
        return self

    def load_config(self, config_path: str) -> Any:
        if config_path not in self.parsed:
            self.parsed[config_path] = self.delegate.load_config(config_path=config_path)
        return copy.deepcopy(self.parsed[config_path])

    def initialize_sources(self, config_search_path: Any) -> None:
        raise SearchPathSet  # caught where the sharing was set up: see `composed`

    def __getattr__(self, name: str) -> Any:
        delegate = self.__dict__.get("delegate")  # absent while unpickling
        if delegate is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(delegate, name)  # the rest, as the repository has it


class SearchPathSet(Exception):
    """A job's config sets hydra.searchpath: it is composed without the shared repository."""


class MergedOnce:
    """A config loader's `_compose_config_from_defaults_list`, which merges a defaults list's
    files once a sweep.

    Jobs that choose the same config options and differ in values only (`optimizer.lr=...`,
    `loop.seed=...`) have the same defaults list: Hydra merges its files for each, about 0.07 s
    of the 0.13 s a job of mnistlab's config took to compose with `SharedRepository`; a deep copy
    of the merge kept takes 0.012 s. Hydra applies each job's values to its copy afterwards.
    Only while the repository is shared (the files are the ones parsed for the sweep).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __call__(self, defaults: list[Any], repo: Any) -> Any:
        merge = require(type(self.loader), "_compose_config_from_defaults_list", "hydra-core")
        shared = getattr(repo, "delegate", None)  # a CachingConfigRepository around the sweep's
        if not isinstance(shared, SharedRepository):
            return merge(self.loader, defaults=defaults, repo=repo)
        key = tuple((d.config_path, d.parent, d.package, d.is_self) for d in defaults)
        if key not in shared.merged:
            shared.merged[key] = merge(self.loader, defaults=defaults, repo=repo)
        return copy.deepcopy(shared.merged[key])  # each job's own: Hydra changes it


def composed(loader: Any, master_config: Any, overrides: list[str]) -> Any:
    """`loader.load_sweep_config(master_config, overrides)`, with parsed files shared among the
    jobs of the sweep (`SharedRepository`), and each defaults list merged once (`MergedOnce`)."""
    plain = require(loader, "repository", "hydra-core")
    if not isinstance(plain, SharedRepository):
        loader.repository = SharedRepository(plain)
        loader._compose_config_from_defaults_list = MergedOnce(loader)
    try:
        return loader.load_sweep_config(master_config, overrides)
    except SearchPathSet:
        loader.repository = loader.repository.delegate
        return loader.load_sweep_config(master_config, overrides)
