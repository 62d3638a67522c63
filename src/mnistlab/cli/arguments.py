"""mnistlab-train's command line before Hydra reads it, and Hydra's errors in one line each.

`prepare(argv)`, the command's first step, refuses what Hydra would accept and then mean
something else by (`loop.overwrite=yes` or `loop.compile=3`: OmegaConf turns "yes", "on" and
any number but 0 into true), crash on (5,000 nested brackets) or drop without a word (`~model`).
It then has Hydra report its own composition errors through `translate`: an unknown key with
the settings its group has, a value of the wrong type, an option that does not exist, a preset
whose plugin is not installed (with the `pip install` that adds it). No torch: --help stays quick.
"""

import contextlib
import importlib.util
from collections.abc import Sequence
from typing import Any

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from mnistlab import SettingError, names
from mnistlab.config import checks, schemas, targets
from mnistlab.private import hydra as hydra_private
from mnistlab.run import fulldisk

GRAMMAR = "https://hydra.cc/docs/1.3/advanced/override_grammar/basic/"
# Config groups that a Hydra plugin adds: the plugin's module, what it is, the extra with it.
PLUGINS = {
    "hydra/sweeper/optuna": ("hydra_optuna_sweeper", "Optuna sweeper", "optuna"),
    "hydra/sweeper/sampler/": ("hydra_optuna_sweeper", "Optuna sweeper", "optuna"),
    "hydra/launcher/joblib": ("hydra_joblib_launcher", "joblib launcher", "launchers"),
    "hydra/launcher/submitit_": ("hydra_submitit_launcher", "submitit launcher", "launchers"),
}
# What a run cannot do without: the config's sections, and the dataset's two parts.
REQUIRED = (*checks.SECTIONS, "dataset.source", "dataset.loader")


def prepare(argv: Sequence[str]) -> None:
    """Refuse a bad override in one line (SystemExit); then have Hydra's errors reported so."""
    command = hydra_private.command_line(argv)
    if command is None:
        return
    try:
        parsed = parse(command.overrides)
        for override in parsed:
            check(override)
    except SettingError as err:
        raise SystemExit(str(err)) from None
    config_name = command.config_name or names.TRAIN_CONFIG
    hydra_private.report_errors(lambda error: translate(error, parsed, config_name))


def parse(overrides: Sequence[str]) -> list[Override]:
    """Hydra's reading of each override; SettingError for one it cannot read."""
    parser, parsed = OverridesParser.create(), []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except RecursionError:  # the parser recurses once per bracket
            raise SettingError(
                f"{line.partition('=')[0]}=...: its value nests brackets {nesting(line)} deep, "
                "more than can be read: give a flatter value"
            ) from None
        except OverrideParseException as err:
            raise SettingError(unreadable(err)) from None
    return parsed


def nesting(text: str) -> int:
    """How deep brackets nest in `text`."""
    depth = deepest = 0
    for char in text:
        depth += (char in "[{(") - (char in "]})")
        deepest = max(deepest, depth)
    return deepest


def unreadable(err: OverrideParseException) -> str:
    """An override Hydra's grammar cannot read, in one line."""
    lines = str(err).splitlines()  # [Error parsing override ...,] the reason, See <the docs>
    reason = next(line for line in lines if not line.startswith(("Error parsing", "See ")))
    return f"{err.override}: {reason} (quote a value with spaces or brackets; see {GRAMMAR})"


def check(override: Override) -> None:
    """Refuse removing what a run needs, and a true/false setting given anything else."""
    key, kind = override.key_or_group, schemas.setting_type(override.key_or_group)
    if override.is_delete() and (key in REQUIRED or kind is not None):
        if key in checks.SECTIONS:
            raise SettingError(f"~{key}: a run needs {key}; {checks.choose(key)}")
        raise SettingError(
            f"~{key}: the settings of {key.split('.')[0]} cannot be removed; give {key} a value "
            "instead"
        )
    if kind is None or override.is_delete() or not targets.fits(True, kind):
        return  # not one of the schemas' true/false settings
    for given, value in values(override):
        if not targets.fits(value, kind) and not written_out(value):
            raise SettingError(f"{given}: must be {targets.describe(kind)}")


def written_out(value: Any) -> bool:
    """A string OmegaConf reads as true or false without doubt: 'true', or an interpolation."""
    return isinstance(value, str) and (value.lower() in ("true", "false") or "${" in value)


def values(override: Override) -> list[tuple[str, Any]]:
    """Each value an override gives (`key=value` as typed, the value): a sweep's in turn, a
    range or an interval as itself."""
    key, value = override.key_or_group, override.value()
    if isinstance(value, ChoiceSweep):
        return [(f"{key}={item}", item) for item in value.list]
    given = (override.input_line or key).lstrip("+")
    return [(given, given if override.is_sweep_override() else value)]


def translate(error: Exception, parsed: list[Override], config_name: str) -> str | None:
    """One line for an error Hydra would report in several, or None to leave it to Hydra."""
    if isinstance(error, SettingError):
        return str(error)
    if isinstance(error, OverrideParseException):
        return unreadable(error)
    if isinstance(error, MissingConfigException):
        return missing_option(error, parsed)
    if isinstance(error, OSError):  # Hydra writing its files (.hydra/, a folder): one line
        return file_error(error)
    if not isinstance(error, ConfigCompositionException):
        return None
    cause, message = error.__cause__, str(error)
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return unknown_key(cause.full_key, parsed, config_name)
    kind = schemas.setting_type(cause.full_key) if isinstance(cause, ValidationError) else None
    if kind is not None:
        given = given_as(cause.full_key, parsed) or cause.full_key
        return f"{given}: must be {targets.describe(kind)}"
    if message.startswith("Ambiguous value for argument"):
        given = message.split("'")[1]
        return (
            f"{given}: several values make a sweep: add -m (mnistlab-train -m {given}); "
            "a list is key=[a,b], a string with a comma is quoted: key='a,b'"
        )
    if message.startswith("Could not append to config"):
        key = message.split("'")[1]
        return f"+{given_as(key, parsed)}: {key} is set already: leave out the +"
    return None


def file_error(error: OSError) -> str:
    """A file Hydra could not write (a full disk, a folder it may not create) in one line."""
    where = f" ({error.filename})" if error.filename else ""
    fix = "free some space and start again" if fulldisk.is_full(error) else "choose another folder"
    return f"mnistlab-train: could not write the run's files{where}: {error.strerror}: {fix}"


def given_as(key: str, parsed: list[Override]) -> str | None:
    """The override that sets `key`, as typed (without a leading + or ++)."""
    for override in parsed:
        if override.key_or_group == key and override.input_line:
            return override.input_line.lstrip("+")
    return None


def missing_option(error: MissingConfigException, parsed: list[Override]) -> str | None:
    """A config option that does not exist, or that comes with a plugin not installed."""
    missing = error.missing_cfg_file or ""
    group, _, option = missing.rpartition("/")
    for prefix, (module, what, extra) in PLUGINS.items():
        if missing.startswith(prefix) and not importlib.util.find_spec(f"hydra_plugins.{module}"):
            asked = "hydra/sweeper" if "sweeper" in prefix else "hydra/launcher"
            asker = given_as(asked, parsed) or given_as("experiment", parsed) or missing
            return (
                f"{asker} needs Hydra's {what} ({missing}), which is not installed: "
                f'pip install "mnistlab[{extra}]" (in a checkout: pip install -e ".[{extra}]")'
            )
    if not error.options or not group:
        return None
    return f"{group}={option} is not an option of {group}: use one of {', '.join(error.options)}"


def unknown_key(key: str, parsed: list[Override], config_name: str) -> str:
    """A key the config does not have, with the settings its group does have."""
    parent, _, name = key.rpartition(".")
    cfg = chosen_config(parsed, config_name)
    if not parent:
        near = [s for s in checks.SECTIONS if cfg is not None and has(cfg, s, key)]
        given = given_as(key, parsed) or key
        hint = f"did you mean {' or '.join(f'{s}.{given}' for s in near)}? " if near else ""
        sections = ", ".join(checks.SECTIONS)
        return f"{key} is not a setting of mnistlab-train: {hint}its sections are: {sections}"
    node = None if cfg is None else OmegaConf.select(cfg, parent)
    if not isinstance(node, DictConfig):
        return f"{key} is not a setting: {parent} has no {name}"
    group = parent.split(".")[0]
    choice = cfg.hydra.runtime.choices.get(group)
    where = parent if choice is None else f"{group}={choice}"
    where = where if parent == group else f"{parent} ({where})"
    settings, takes_any = [str(k) for k in node if not str(k).startswith("_")], False
    if "_target_" in node:
        # Where its class cannot be imported, the YAML's keys are all there is to list.
        with contextlib.suppress(SettingError):
            settings, takes_any = targets.settings_of(targets.load_target(node._target_, parent))
        if name in settings or takes_any:  # a parameter the option's YAML leaves out
            return f"{key} is not in the config of {where}: add it with +{given_as(key, parsed)}"
    return f"{key} is not a setting of {where}; its settings are: {', '.join(settings)}"


def has(cfg: DictConfig, section: str, key: str) -> bool:
    """Whether the config's `section` has a setting `key`."""
    node = OmegaConf.select(cfg, section)
    return isinstance(node, DictConfig) and key in node


def chosen_config(parsed: list[Override], config_name: str) -> DictConfig | None:
    """The config that the command's choices of options alone compose, with Hydra's part (its
    runtime.choices); None where even they do not compose. Hydra's global state is still set
    up after a failed composition, as it was for it (the same search path)."""
    if not GlobalHydra.instance().is_initialized():
        return None
    groups = GlobalHydra.instance().config_loader().list_groups("")  # not hydra/: plugins'
    choices = []
    for override in parsed:
        if override.key_or_group not in groups or override.is_delete():
            continue
        value = override.value()
        first = value.list[0] if isinstance(value, ChoiceSweep) else value
        choices.append(f"{override.get_key_element()}={first}")
    try:
        return compose(config_name=config_name, overrides=choices, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return None
