"""Run and job folder names that say what differs: `3_adam+lr:0.01+seed:1`.

TensorBoard shows folder names as run names, in a narrow column, so a sweep job is named by the
keys the sweep varies, in the order the user gave them, with short keys and values; keys set
to one value for the whole sweep are left out. A single run is `<time>_<its overrides>`.
Names hold no `/` (a path value would nest folders), and no `=` or `,`, which Hydra's
override grammar reads specially: a folder stays a valid `loop.resume=<folder>` argument.
"""

import re
from collections.abc import Iterable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

HIDDEN = ("experiment", "loop.resume")  # what picks the run, not what it trains with
MAX_LENGTH = 120  # well under the file systems' 255 bytes
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """(key, value text) of each `key=value` override, in the given order, hidden keys left out."""
    pairs = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if key and key not in HIDDEN and not key.startswith("hydra"):
            pairs.append((key, value))
    return pairs


def short_value(value: str) -> str:
    """A value as a path-safe word: the last part of a path, lists as 16-32."""
    value = value.rstrip("/").rsplit("/", 1)[-1].replace("+", "")  # 1e+30 -> 1e30, same number
    sign = "-" if re.match(r"-[\d.]", value) else ""  # lr:-1 must not read as lr:1
    return sign + UNSAFE.sub("-", value).strip("-") or "-"


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's last part (optimizer.lr -> lr), the whole key where two would clash."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: end if last.count(end) == 1 else key for key, end in zip(keys, last, strict=True)}


def name(pairs: list[tuple[str, str]]) -> str:
    """`key:value+key:value`, shortened, cut at MAX_LENGTH."""
    keys = short_keys([key for key, _ in pairs])
    text = "+".join(word(keys[key], short_value(value), "." in key) for key, value in pairs)
    return text[:MAX_LENGTH]


def word(key: str, value: str, setting: bool) -> str:
    """`lr:0.01`; a config group's choice is its name alone (`sgd`, not `optimizer:sgd`)."""
    return f"{key}:{value}" if setting else value


def job_name(swept: Sequence[str], overrides: Any) -> str:
    """A sweep job's folder name after its number: the `swept` keys, in the user's order."""
    pairs = parse(overrides)
    # Unknown (no sweep context to read) or nothing swept: every override.
    values = dict(pairs)
    if any(key in values for key in swept):
        pairs = [(key, values[key]) for key in swept if key in values]
    return name(pairs) or "default"


def run_name(overrides: Any) -> str:
    """A single run's folder suffix: `_` and its overrides, or nothing without any."""
    text = name(parse(overrides))
    return f"_{text}" if text else ""


def swept_keys(config: DictConfig) -> list[str]:
    """The keys the sweep `config` starts varies, in the user's order (the jobs' folder names)."""
    overrides = [*config.hydra.overrides.task, *preset_params(config)]
    keys: list[str] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() and key not in keys:
            keys.append(key)
    return keys


def preset_params(config: DictConfig) -> list[str]:
    """Sweeps written in a preset's hydra.sweeper.params, as `key=value` overrides."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    if not isinstance(params, DictConfig):
        return []
    return [f"{key}={value}" for key, value in params.items()]
